# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi_config, _uwsgi_helpers
from ansible_collections.graceful.wsgi.plugins.module_utils._proc import ProcessInfo

MASTER = 100


@pytest.mark.parametrize('options, count', [
    ([], 0),
    ([('mule', 'tasks.py'), ('mule', None), ('master', None)], 2),
    ([('mules', '3'), ('mule', 'x.py')], 4),
    ([('mules', 'many')], 0),
])
def test_declared_mules(options, count):
    assert _uwsgi_helpers.declared_mules(options) == count


def test_declared_options_keeps_repeats_and_flags_from_every_source():
    files = {'/srv/app.ini': '[uwsgi]\nmule = a.py\nmule = b.py\nlazy-apps\nini = more.ini\n',
             '/srv/more.ini': '[uwsgi]\nhttp = :8080\n'}
    options, unknown = _uwsgi_config.declared_options(
        ['uwsgi', '--ini', 'app.ini', '--mules', '2', '--master', '--spooler=/var/spool/x'],
        {'UWSGI_LAZY_APPS': '1', 'HOME': '/root'}, '/srv', files.get)
    assert not unknown
    assert options == [('lazy-apps', '1'), ('mule', 'a.py'), ('mule', 'b.py'), ('lazy-apps', None), ('http', ':8080'),
                       ('mules', '2'), ('master', None), ('spooler', '/var/spool/x')]
    assert _uwsgi_config.declared_options(['uwsgi', '--yaml', 'app.yml'], {}, '/srv', files.get)[1] is True


class Children:
    def __init__(self, titles):
        self.titles = titles

    def child_pids(self, pid, proc_root=None):
        return sorted(self.titles) if pid == MASTER else []

    def read_process(self, pid, proc_root=None):
        return ProcessInfo(pid, MASTER, 'S', [self.titles[pid]], 'uwsgi') if pid in self.titles else None


@pytest.fixture
def children(monkeypatch):
    def make(titles):
        fake = Children(titles)
        monkeypatch.setattr(_uwsgi_helpers._proc, 'child_pids', fake.child_pids)
        monkeypatch.setattr(_uwsgi_helpers._proc, 'read_process', fake.read_process)
    return make


STATS = {'workers': [{'pid': 101}, {'pid': 102}], 'spoolers': [{'dir': '/var/spool/x', 'pid': 103, 'running': 1}],
         'daemons': [{'pid': 104}]}


def test_find_mules_counts_the_children_that_are_neither_workers_spoolers_nor_daemons(children):
    children({101: 'uwsgi', 102: 'uwsgi', 103: 'uwsgi', 104: 'uwsgi', 105: 'uwsgi', 106: 'uwsgi'})
    assert _uwsgi_helpers.find_mules(MASTER, STATS, [('mules', '2')], False) == [105, 106]
    # Nothing declared and the whole configuration read: those are not mules.
    assert _uwsgi_helpers.find_mules(MASTER, STATS, [], False) == []


def test_find_mules_by_title_whatever_else_runs(children):
    children({101: 'uWSGI worker 1', 105: 'uWSGI mule 1', 106: 'uWSGI http 1'})
    assert _uwsgi_helpers.find_mules(MASTER, STATS, [('http', ':80')], True) == [105]


@pytest.mark.parametrize('options, unknown, why', [
    ([('mule', None), ('fastrouter', ':3030')], False, 'its configuration declares gateways too (fastrouter)'),
    ([], True, 'its configuration cannot be read in full, so whether it declares mules is unknown'),
])
def test_find_mules_refuses_to_guess(children, options, unknown, why):
    children({101: 'uwsgi', 105: 'uwsgi', 106: 'uwsgi'})
    with pytest.raises(_uwsgi_helpers.HelperError) as caught:
        _uwsgi_helpers.find_mules(MASTER, STATS, options, unknown)
    assert str(caught.value) == ('cannot tell which of the children 105, 106 of the uWSGI master 100 are mules: %s; '
                                 'set auto-procname, which titles each mule "uWSGI mule N"' % why)


def test_a_replacement_settles_once_each_old_pid_is_gone_and_as_many_new_ones_stayed_up():
    now = [0.0]
    replacement = _uwsgi_helpers.Replacement([1, 2], lambda: now[0])
    assert not replacement.settled([1, 2])
    assert not replacement.settled([2, 10])            # pid 2 still runs
    assert not replacement.settled([10, 11])           # new, not up long enough
    now[0] = 0.6
    assert not replacement.settled([10, 12])           # 11 ended, 12 just came: a crash loop starts over
    now[0] = 1.2
    assert not replacement.settled([10, 12])
    now[0] = 1.7
    assert replacement.settled([10, 12])


def test_busy_spoolers_and_their_pids():
    assert _uwsgi_helpers.spoolers(STATS) == {'/var/spool/x': 103}
    assert _uwsgi_helpers.busy_spoolers(STATS) == {'/var/spool/x'}
    assert _uwsgi_helpers.spoolers({}) == {} and _uwsgi_helpers.busy_spoolers({}) == set()

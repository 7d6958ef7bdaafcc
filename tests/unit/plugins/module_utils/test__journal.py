# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _journal

NOW = 1795363500  # 2026-11-22T16:05:00Z


def entry(host, step, **extra):
    extra.update(host=host, step=step)
    extra.setdefault('at', '2026-11-22T16:05:00Z')
    extra.setdefault('run', 'RUN-A')
    return extra


def deployed(host, old='v1', new='v2'):
    """The entries of a host that went all the way, as a run before the switch announced its reload wrote them:
    journals such a run left are still reconciled."""
    return [entry(host, 'drain', **{'from': old}), entry(host, 'switch', release=new, **{'from': old}),
            entry(host, 'reload', release=new), entry(host, 'enable', release=new), entry(host, 'done', release=new)]


def rolled(host, old='v1', new='v2'):
    """The entries of a host that went all the way, as the rollout writes them now: the switch announces the reload
    after it, and the enable has no entry of its own."""
    return [entry(host, 'drain', **{'from': old}), entry(host, 'switch', release=new, reload=True, **{'from': old}),
            entry(host, 'done', release=new)]


def announced(host, old='v1', new='v2'):
    """The entries of a host that went all the way, as the rollout writes them now: one entry before the drain
    announces the switch and the reload after it, and the enable has no entry of its own."""
    return [entry(host, 'drain', release=new, reload=True, **{'from': old}), entry(host, 'done', release=new)]


# Every place a run can stop on a host: the entries it left, then what the next run must do there.
STOPPED_AT = [
    ('nothing recorded', [], None),
    ('done', deployed('app1'), None),
    ('killed while draining', deployed('app1')[:1],
     dict(host='app1', drained=True, step='drain', release='v1', fallback='', upgrade_pending=False)),
    ('killed while switching', deployed('app1')[:2],
     dict(host='app1', drained=True, step='switch', release='v2', fallback='v1', upgrade_pending=False)),
    ('killed while reloading', deployed('app1')[:3],
     dict(host='app1', drained=True, step='reload', release='v2', fallback='v1', upgrade_pending=True)),
    ('killed while enabling', deployed('app1')[:4],
     dict(host='app1', drained=True, step='enable', release='v2', fallback='v1', upgrade_pending=False)),
    ('failed and undone', deployed('app1')[:3] + [entry('app1', 'failed', release='v1', drained=False, settled=True)],
     None),
    ('failed and undone, flags as templates render them',
     deployed('app1')[:3] + [entry('app1', 'failed', release='v1', drained='False', settled='True')], None),
    ('failed, undo left it drained', deployed('app1')[:3] + [entry('app1', 'failed', release='v1', drained=True)],
     dict(host='app1', drained=True, step='reload', release='v1', fallback='', upgrade_pending=True)),
    ('unreachable while drained', deployed('app1')[:2] + [entry('app1', 'unreachable', at_step='switch')],
     dict(host='app1', drained=True, step='switch', release='v2', fallback='v1', upgrade_pending=False,
          lost_at='switch')),
    ('reconciled by a later run', deployed('app1')[:2] + [entry('app1', 'reconciled', release='v2', run='RUN-B')],
     None),
    ('switched without a load balancer', [entry('app1', 'switch', release='v2', **{'from': 'v1'})],
     dict(host='app1', drained=False, step='switch', release='v2', fallback='v1', upgrade_pending=False)),
    ('done, the switch announcing the reload', rolled('app1'), None),
    # Killed while switching, reloading, verifying or enabling: the same entries, and the same plan (prove what
    # current points to, settle a gunicorn upgrade that may be pending, enable).
    ('killed after the switch announced its reload', rolled('app1')[:2],
     dict(host='app1', drained=True, step='switch', release='v2', fallback='v1', upgrade_pending=True)),
    ('the reload flag as a template renders it', [entry('app1', 'switch', release='v2', reload='True', **{'from': 'v1'})],
     dict(host='app1', drained=False, step='switch', release='v2', fallback='v1', upgrade_pending=True)),
    ('failed after the switch announced its reload, undo left it drained',
     rolled('app1')[:2] + [entry('app1', 'failed', release='v1', drained=True)],
     dict(host='app1', drained=True, step='switch', release='v1', fallback='', upgrade_pending=True)),
    ('failed, undone by a switch back that announced its reload, then settled',
     rolled('app1')[:2] + [entry('app1', 'switch', release='v1', reload=True, **{'from': 'v2'}),
                           entry('app1', 'failed', release='v1', drained=False, settled=True)], None),
    ('a drain after a switch that announced its reload', rolled('app1')[:2] + [entry('app1', 'drain', **{'from': 'v2'})],
     dict(host='app1', drained=True, step='drain', release='v2', fallback='v1', upgrade_pending=False)),
    ('done, the drain announcing the switch and the reload', announced('app1'), None),
    # Killed anywhere from the drain to the enable: current may point to either release, the next run reads it.
    ('killed after the drain announced the switch and the reload', announced('app1')[:1],
     dict(host='app1', drained=True, step='drain', release='v2', fallback='v1', upgrade_pending=True)),
    ('failed after the drain announced the switch, undo left it drained',
     announced('app1')[:1] + [entry('app1', 'failed', release='v1', drained=True)],
     dict(host='app1', drained=True, step='drain', release='v1', fallback='', upgrade_pending=True)),
    ('failed after the drain announced the switch, undone and settled',
     announced('app1')[:1] + [entry('app1', 'failed', release='v1', drained=False, settled=True)], None),
    ('a reload of the live release, drained', announced('app1', 'v1', 'v1')[:1],
     dict(host='app1', drained=True, step='drain', release='v1', fallback='', upgrade_pending=True)),
    ('a reload without a load balancer', [entry('app1', 'reload', release='v1', reload=True, **{'from': 'v1'})],
     dict(host='app1', drained=False, step='reload', release='v1', fallback='', upgrade_pending=True)),
]


@pytest.mark.parametrize('entries, expected', [case[1:] for case in STOPPED_AT], ids=[case[0] for case in STOPPED_AT])
def test_reconcile_plan_for_every_place_a_run_can_stop(entries, expected):
    plan = _journal.reconcile_plan(entries)
    if expected is None:
        assert plan == []
    else:
        assert len(plan) == 1
        assert dict(plan[0], lost_at=plan[0]['lost_at'] or None) == dict(
            expected, lost_at=expected.get('lost_at'), run=entries[-1]['run'])


def test_plan_keeps_settled_hosts_out_and_the_order_of_the_journal():
    entries = deployed('app1') + deployed('app2')[:2] + deployed('app3')[:1]
    assert [item['host'] for item in _journal.reconcile_plan(entries)] == ['app2', 'app3']


def test_a_later_drain_of_a_reconciled_host_is_pending_again():
    entries = deployed('app1')[:2] + [entry('app1', 'reconciled', release='v2')] + deployed('app1', 'v2', 'v3')[:1]
    assert _journal.reconcile_plan(entries)[0]['release'] == 'v2'
    assert _journal.reconcile_plan(entries)[0]['step'] == 'drain'


def test_summary_names_the_unfinished_step_the_hosts_and_the_age():
    entries = deployed('app1') + deployed('app2')[:3]
    assert _journal.summary(entries, '2026-11-22T15:53:00Z', now=NOW) == (
        'its last journal step, reload of app2 to v2 at 2026-11-22T16:05:00Z, did not finish; it left drained: app2; '
        'it left switched and not proven: app2; the lock is 12 min old')


def test_summary_of_a_run_that_touched_nothing_or_finished_its_steps():
    assert _journal.summary([], '2026-11-22T16:04:30Z', now=NOW) == (
        'its journal is empty (it had not touched a host); the lock is 30 s old')
    assert _journal.summary(deployed('app1'), None) == (
        'its last journal step, done of app1 at 2026-11-22T16:05:00Z, finished; it left no host drained or switched')


@pytest.mark.parametrize('bad, message', [
    ('text', 'journal must be a dict'),
    ({'step': 'drain'}, 'journal.host must name the host'),
    ({'host': 'app1', 'step': 'explode'}, "journal.step must be one of drain, switch, reload, enable, done"),
    ({'host': 'app1', 'step': 'done', 'cause': 'x' * 4000}, 'journal entry for app1 is 40[0-9]{2} bytes, more than 3072'),
])
def test_check_entry_names_the_field(bad, message):
    with pytest.raises(_journal.JournalError, match=message):
        _journal.check_entry(bad)


def test_parse_lines_skips_a_torn_or_foreign_line():
    lines = (_journal.entry_line(entry('app1', 'drain')) + b'{"host": "app1", "st' + b'\n[1, 2]\n'
             + _journal.entry_line(entry('app1', 'done'))).decode()
    assert [item['step'] for item in _journal.parse_lines(lines)] == ['drain', 'done']


@pytest.mark.parametrize('seconds, text', [(0, '0 s'), (119, '119 s'), (120, '2 min'), (7199, '119 min'),
                                           (7200, '2.0 h'), (200000, '2 days'), (-5, '0 s')])
def test_age_text(seconds, text):
    assert _journal.age_text(seconds) == text


def test_summary_names_a_host_drained_with_its_switch_announced():
    text = _journal.summary(announced('app1')[:1])
    assert 'it left drained: app1' in text
    assert 'it left switched and not proven: app1' in text

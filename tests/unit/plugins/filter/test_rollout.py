# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.graceful.wsgi.plugins.filter import rollout
from ansible_collections.graceful.wsgi.plugins.module_utils import _journal, _lock

NOW = 1795363500  # 2026-11-22T16:05:00Z
HOLDER = {'run_id': 'RUN-A', 'action': 'deploy', 'release': 'v5', 'user': 'alice', 'controller': 'ctl1',
          'started': '2026-11-22T15:44:58Z', 'acquired_at': '2026-11-22T15:45:00Z'}
JOURNAL = [{'host': 'app1', 'step': 'drain', 'from': 'v4', 'at': '2026-11-22T15:46:00Z', 'run': 'RUN-A'}]


def test_refusal_names_the_holder_its_unfinished_step_the_drained_host_the_age_and_the_way_out():
    result = {'acquired': False, 'holder': HOLDER, 'journal': JOURNAL, 'msg': 'deploy lock ... is held'}
    assert rollout.lock_refusal(result, 'deploy', 'demo', '/var/lib/graceful-wsgi/demo.lock', 'lb1', now=NOW) == (
        'deploy of demo refused: another run holds the lock /var/lib/graceful-wsgi/demo.lock on lb1: deploy of '
        'release v5 by alice on controller ctl1, started 2026-11-22T15:44:58Z (run RUN-A); its last journal step, '
        'drain of app1 at 2026-11-22T15:46:00Z, did not finish; it left drained: app1; the lock is 20 min old. If '
        'that run died, graceful_break_lock=true takes the lock over and first reconciles what it left (every host it '
        'left drained or switched is proven and enabled, or switched back).')


def test_refusal_without_a_holder_repeats_the_modules_message():
    assert rollout.lock_refusal({'msg': 'path=/x: is a FIFO, not a lock file'}, 'reload', 'demo', '/x', 'lb1') == (
        'reload of demo refused: path=/x: is a FIFO, not a lock file')


def test_lock_record_reads_holder_and_journal():
    text = _lock.encode(HOLDER, JOURNAL).decode()
    record = rollout.lock_record(text, now=NOW)
    assert record['holder'] == HOLDER and record['journal'] == JOURNAL
    assert record['summary'] == _journal.summary(JOURNAL, HOLDER['acquired_at'], NOW)
    assert rollout.lock_record('') == {'holder': {}, 'journal': [], 'summary': ''}
    assert rollout.lock_record('garbage')['holder'] == {'corrupt': 'not JSON'}


def lb_result(name, **states):
    return {'rollout_lb_host': name, 'servers': dict((host, {'state': state}) for host, state in states.items())}


def test_lb_states_one_word_when_every_load_balancer_agrees():
    results = [lb_result('lb1', app1='enabled', app2='drained'), lb_result('lb2', app1='enabled', app2='drained')]
    assert rollout.lb_states(results, ['app1', 'app2', 'app3']) == {
        'app1': 'enabled', 'app2': 'drained', 'app3': 'missing'}


def test_lb_states_each_view_when_they_differ_or_one_is_unread():
    results = [lb_result('lb1', app1='enabled'), {'rollout_lb_host': 'lb2', 'failed': True, 'msg': 'no answer'}]
    assert rollout.lb_states(results, ['app1']) == {'app1': 'enabled@lb1,unknown@lb2'}
    assert rollout.lb_states([], ['app1']) == {'app1': '-'}

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from ansible.errors import AnsibleFilterError

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


# The record of the case where "previous" used to mean two things: v1 converged, v2 and v3 deployed, a bad v4
# deployed and undone (current back on v3).
RECORD_AFTER_UNDO = [
    {'at': '2026-11-20T10:00:00Z', 'release': 'v1', 'from': None, 'reason': 'deploy'},
    {'at': '2026-11-20T10:05:00Z', 'release': 'v2', 'from': 'v1', 'reason': 'deploy'},
    {'at': '2026-11-20T10:10:00Z', 'release': 'v3', 'from': 'v2', 'reason': 'deploy'},
    {'at': '2026-11-20T10:15:00Z', 'release': 'v4', 'from': 'v3', 'reason': 'deploy'},
    {'at': '2026-11-20T10:16:00Z', 'release': 'v3', 'from': 'v4', 'reason': 'undo'},
]


def test_switch_record_reads_each_line_and_skips_blank_ones():
    text = '\n'.join(rollout.json.dumps(entry) for entry in RECORD_AFTER_UNDO[:2]) + '\n\n'
    assert rollout.switch_record(text) == RECORD_AFTER_UNDO[:2]
    assert rollout.switch_record('') == []


def test_switch_record_names_a_line_that_is_not_json():
    with pytest.raises(AnsibleFilterError) as caught:
        rollout.switch_record('{"release": "v1"}\n{"release": \n')
    assert str(caught.value) == 'switches.jsonl line 2 is not JSON'
    with pytest.raises(AnsibleFilterError) as caught:
        rollout.switch_record('["v1"]\n')
    assert str(caught.value) == 'switches.jsonl line 1 is not a JSON object'


def test_previous_after_an_undo_is_what_the_live_release_replaced_when_deployed_not_the_undone_release():
    # The last switch came from v4 (the undo): status used to name v4, while rollback went to v2.
    assert rollout.previous_release(RECORD_AFTER_UNDO, 'v3') == 'v2'
    assert rollout.rollout_target('rollback', '', 'v3', RECORD_AFTER_UNDO) == 'v2'


def test_a_rollback_does_not_change_previous_so_a_second_rollback_goes_further_back():
    after_rollback = RECORD_AFTER_UNDO + [{'release': 'v2', 'from': 'v3', 'reason': 'rollback'}]
    assert rollout.previous_release(after_rollback, 'v2') == 'v1'
    after_second = after_rollback + [{'release': 'v1', 'from': 'v2', 'reason': 'rollback'}]
    assert rollout.previous_release(after_second, 'v1') == ''


def test_a_record_without_reasons_counts_every_switch_as_a_deploy():
    assert rollout.previous_release([{'release': 'v1', 'from': None}, {'release': 'v2', 'from': 'v1'}], 'v2') == 'v1'
    assert rollout.previous_release([], 'v2') == ''


def test_the_target_of_each_action():
    assert rollout.rollout_target('deploy', 'v5', 'v3', RECORD_AFTER_UNDO) == 'v5'
    assert rollout.rollout_target('reload', '', 'v3', RECORD_AFTER_UNDO) == 'v3'
    assert rollout.rollout_target('rollback', '', 'v3', RECORD_AFTER_UNDO, 'v1') == 'v1'
    assert rollout.rollout_target('rollback', '', 'v1', RECORD_AFTER_UNDO[:1]) == ''


@pytest.mark.parametrize('hosts, batch, size, position', [
    (['a1', 'a2', 'a3'], ['a1'], 1, '1/3'),
    (['a1', 'a2', 'a3'], ['a3'], 1, '3/3'),
    (['a1', 'a2', 'a3', 'a4', 'a5'], ['a3', 'a4'], '2', '2/3'),
    (['a1', 'a2', 'a3', 'a4', 'a5'], ['a5'], 2, '3/3'),
])
def test_batch_position(hosts, batch, size, position):
    assert rollout.batch_position(hosts, batch, size) == position


def test_failures_before_counts_hosts_whose_report_failed():
    host_vars = [{'rollout_report': {'result': 'rolled back'}}, {'rollout_report': {'result': 'deployed'}},
                 {'rollout_report': {'result': 'unreachable'}}, {}, {'rollout_report': {'result': 'failed'}}]
    assert rollout.failures_before(host_vars, ['failed', 'rolled back', 'unreachable']) == 3


@pytest.mark.parametrize('failed, percentage, hosts, cause', [
    (0, 0, 3, ''),
    (1, 0, 3, 'stopped after 1 failed host(s) (graceful_max_fail_percentage 0)'),
    (1, 34, 3, ''),
    (2, '34', 3, 'stopped after 2 failed host(s) (graceful_max_fail_percentage 34)'),
    (1, 50, 2, ''),
])
def test_stop_cause_once_failures_exceed_the_percentage(failed, percentage, hosts, cause):
    assert rollout.stop_cause(failed, percentage, hosts) == cause


def test_step_timings_between_marks_and_in_total():
    marks = {'start': '100.0', 'prepare': 125.14, 'drain': 135.4, 'switch': 142.0, 'reload': '156.8'}
    assert rollout.step_timings(marks, 160.06) == {
        'seconds': 60.1, 'timings': {'prepare': 25.1, 'drain': 10.3, 'switch': 6.6, 'reload': 14.8}}
    assert list(rollout.step_timings(marks, 160)['timings']) == ['prepare', 'drain', 'switch', 'reload']
    assert rollout.step_timings({'start': 10}, 10.04) == {'seconds': 0.0, 'timings': {}}


DEPLOYED = {'host': 'app1', 'batch': '1/3', 'result': 'deployed', 'old': 'v1', 'new': 'v2', 'reload_mode': 'chain',
            'reload_seconds': 2.05, 'health': '3/3 in 0.31 s', 'workers': 4, 'undone': '', 'seconds': 30.2,
            'timings': {'prepare': 12.0, 'drain': 3.1}}
ROLLED_BACK = {'host': 'app2', 'batch': '2/3', 'result': 'rolled back', 'old': 'v2', 'new': 'v3', 'step': 'health',
               'cause': 'unhealthy', 'reload_mode': 'chain', 'undone': 'switched back to v2', 'seconds': 40.0,
               'timings': {'prepare': 12.0}}


def test_batch_summary_line():
    assert rollout.batch_summary([DEPLOYED, ROLLED_BACK], '1/2') == (
        'batch 1/2: app1 deployed v1 -> v2 in 30.2 s (prepare 12.0, drain 3.1); '
        'app2 rolled back v2 -> v3 in 40.0 s (prepare 12.0) (failed at health)')
    assert rollout.batch_summary([{'host': 'app3', 'result': 'unreachable', 'old': '', 'new': ''}], '3/3') == (
        'batch 3/3: app3 unreachable - -> - in ? s ()')


def test_host_reports_adds_the_hosts_that_failed_before_their_batch_last():
    host_vars = [{'inventory_hostname': 'app1', 'rollout_report': DEPLOYED}, {'inventory_hostname': 'app2'},
                 {'inventory_hostname': 'app3', 'rollout_report': ROLLED_BACK}]
    assert rollout.host_reports(host_vars) == [DEPLOYED, ROLLED_BACK, {
        'host': 'app2', 'result': 'not reached', 'old': '', 'new': '', 'batch': '-',
        'cause': 'the host failed before its batch (see above)'}]


def test_report_table_has_the_timings_or_the_failure_in_its_last_column():
    not_reached = {'host': 'app3', 'batch': '3/3', 'result': 'not reached', 'old': 'v1', 'new': '',
                   'cause': 'stopped after 1 failed host(s) (graceful_max_fail_percentage 0)'}
    assert rollout.report_table([DEPLOYED, ROLLED_BACK, not_reached]) == [
        'host           batch result      release                      reload   seconds health        '
        'step timings / cause',
        '-' * 100,
        'app1           1/3   deployed    v1 -> v2                     chain    2.05    3/3 in 0.31 s prepare 12.0, '
        'drain 3.1',
        'app2           2/3   rolled back v2 -> v3                     chain    -       -             health: '
        'unhealthy | undone: switched back to v2',
        'app3           3/3   not reached v1 -> -                      -        -       -             stopped after '
        '1 failed host(s) (graceful_max_fail_percentage 0)',
    ]


def test_status_table_marks_a_host_without_status_unreachable_and_ends_with_the_lock():
    status = {'host': 'app1', 'release': 'v3', 'previous': 'v2', 'switched': '2026-11-20T10:16:00Z',
              'service': 'active', 'master': 120, 'workers': 4}
    lines = rollout.status_table([status], ['app1', 'app2'], {'app1': 'enabled', 'app2': 'drained'},
                                 rollout.lock_record(''))
    assert lines == [
        'host             release                  previous                 switched at            service    master   '
        'workers  lb',
        'app1             v3                       v2                       2026-11-20T10:16:00Z   active     120      '
        '4        enabled',
        'app2             unreachable              -                        -                      -          -        '
        '-        drained',
        'lock: free']


def test_lock_line_says_who_holds_the_lock_and_what_its_journal_shows():
    assert rollout.lock_line(HOLDER, 'no journal') == (
        'lock: held by run RUN-A - deploy of v5 by alice on ctl1 since 2026-11-22T15:44:58Z; no journal')
    assert rollout.lock_line({'corrupt': 'not JSON'}, 'the lock file is corrupt (not JSON)') == (
        'lock: held by run ? - ? of ? by ? on ? since ?; the lock file is corrupt (not JSON)')


@pytest.mark.parametrize('switched, rollback, live, drained, undone, failure, expected', [
    # Switched, rolled back and re-enabled.
    (True, True, 'v2', True, ['switched back to v2', 're-enabled in nginx'], '',
     ('rolled back', 'switched back to v2; re-enabled in nginx', {'release': 'v2', 'drained': False, 'settled': True})),
    # Failed before the switch: nothing to undo.
    (False, True, 'v2', False, [], '',
     ('failed', 'nothing to undo: current was not switched and the host was not drained',
      {'release': 'v2', 'drained': False, 'settled': True})),
    (False, True, 'v2', True, ['re-enabled in nginx'], '',
     ('failed', 're-enabled in nginx', {'release': 'v2', 'drained': False, 'settled': True})),
    # graceful_rollback_on_failure false: current stays on the new release.
    (True, False, 'v2', True, [], '',
     ('failed', 'nothing undone (graceful_rollback_on_failure is false): current stays on v3, drained',
      {'release': 'v3', 'drained': False, 'settled': False})),
    # A new host has no release to go back to.
    (True, True, '', False, [], '',
     ('failed', 'current stays on v3', {'release': 'v3', 'drained': False, 'settled': False})),
    # The undo failed: the host stays drained on the new release, unsettled.
    (True, True, 'v2', True, ['switched back to v2'], "undo failed at 'Verify': unhealthy; the host stays drained",
     ('failed', "undo failed at 'Verify': unhealthy; the host stays drained; switched back to v2",
      {'release': 'v3', 'drained': True, 'settled': False})),
])
def test_undo_outcome(switched, rollback, live, drained, undone, failure, expected):
    outcome = rollout.undo_outcome(switched, rollback, live, 'v3', drained, undone, failure)
    assert (outcome['result'], outcome['undone'], outcome['journal']) == expected
    assert rollout.rolls_back(switched, rollback, live) == (switched and rollback and live != '')


def test_reconcile_what():
    assert rollout.reconcile_what({}) == ''
    assert rollout.reconcile_what({'host': 'app3', 'drained': True, 'step': 'switch', 'lost_at': 'reload',
                                   'run': 'RUN-A'}) == 'left drained at switch (unreachable at reload) by run RUN-A'
    assert rollout.reconcile_what({'host': 'app3', 'drained': False, 'step': '', 'lost_at': '', 'run': 'RUN-B'}) == (
        'left in service at the end by run RUN-B')


def test_reconciled_lines():
    assert rollout.reconciled_lines([{'host': 'app3', 'result': 'reconciled', 'left': 'left drained at switch by run R',
                                      'done': 'healthy 3/3; enabled in nginx'}]) == [
        'app3: reconciled: left drained at switch by run R: healthy 3/3; enabled in nginx']


def test_failure_message_names_each_host_its_step_cause_and_undo_and_the_lock():
    assert rollout.failure_message([ROLLED_BACK], 'deploy', 'demo', 'v3') == (
        'deploy of demo release v3 failed. app2: rolled back at health: unhealthy Undone: switched back to v2.')
    unreachable = {'host': 'app3', 'result': 'unreachable', 'cause': 'no route', 'undone': ''}
    assert rollout.failure_message([unreachable], 'rollback', 'demo', '', 'the lock could not be released') == (
        'rollback of demo failed. app3: unreachable: no route the lock could not be released')


def test_report_and_status_name_the_commit_a_host_serves():
    report = dict(DEPLOYED, commit='0123456789abcdef0123456789abcdef01234567')
    assert rollout.report_table([report])[2].endswith('commit 0123456789ab; prepare 12.0, drain 3.1')
    status = {'host': 'app1', 'release': 'v3', 'commit': '0123456789abcdef', 'previous': 'v2', 'switched': '-',
              'service': 'active', 'master': 120, 'workers': 4}
    assert rollout.status_table([status], ['app1'], {}, rollout.lock_record(''))[1].startswith(
        'app1             v3 @0123456              v2')


def test_a_deploy_without_hashes_says_so_in_its_report():
    assert rollout.run_notices({'action': 'deploy', 'hashed': False, 'requirements': 'requirements.txt'}) == [
        'requirements.txt carries no hashes: the wheelhouse was built without --require-hashes, trusting the package '
        'index for every wheel (pip-compile --generate-hashes writes them)']


@pytest.mark.parametrize('run', [{'action': 'deploy', 'hashed': True}, {'action': 'rollback', 'hashed': False},
                                 {'action': 'reload'}, {}, None])
def test_a_hashed_deploy_a_rollback_and_a_reload_have_no_notice(run):
    assert rollout.run_notices(run) == []


@pytest.mark.parametrize('step, result, expected', [
    ('health', {'failed': True, 'health': {'passed': False, 'consecutive': 0}}, 'health'),
    ('health', {'failed': True, 'health': {'passed': True, 'consecutive': 3}}, 'proof'),
    ('health', {'failed': True, 'msg': 'unreachable'}, 'health'),
    ('health', None, 'health'),
    ('reload', {'failed': True, 'health': {'passed': True}}, 'reload'),
    ('switch', 'not a dict', 'switch'),
], ids=['gate failed', 'proof failed after the gate', 'no result of the gate', 'no result', 'another step',
        'a result that is no mapping'])
def test_failed_step_names_the_proof_when_its_gate_passed(step, result, expected):
    assert rollout.failed_step(step, result) == expected

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import deploy_lock
from ansible_collections.graceful.wsgi.plugins.module_utils import _lock
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

ALICE = {'controller': 'ctl1', 'user': 'alice', 'pid': 123, 'started': '2026-11-22T16:04:58Z', 'release': 'v2',
         'playbook': 'deploy'}
BOB = {'controller': 'ctl2', 'user': 'bob', 'release': 'v3', 'playbook': 'deploy'}


@pytest.fixture
def lock_path(tmp_path, monkeypatch):
    monkeypatch.setattr(_lock, 'utc_now', lambda: '2026-11-22T16:05:00Z')
    monkeypatch.setattr(_lock, 'EMPTY_GRACE_SECONDS', 0.05)
    return tmp_path / 'deploy.lock'


def run(path, run_id, check=False, diff=False, **args):
    args.update(path=str(path), run_id=run_id, _ansible_check_mode=check, _ansible_diff=diff)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            deploy_lock.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def content_of(path):
    return json.loads(path.read_text())


def take(path, run_id, holder):
    result, failed = run(path, run_id, holder=holder)
    assert not failed and result['changed'], result
    return result


def test_acquire_writes_the_holder_with_run_id_and_time(lock_path):
    result, failed = run(lock_path, 'RUN-A', holder=ALICE)
    expected = dict(ALICE, run_id='RUN-A', acquired_at='2026-11-22T16:05:00Z')
    assert not failed and result['changed'] and result['acquired']
    assert result['holder'] == expected and content_of(lock_path) == expected
    assert 'broken_holder' not in result
    assert result['msg'] == 'deploy lock %s taken by run RUN-A' % lock_path


def test_acquire_again_by_the_same_run_changes_nothing(lock_path, monkeypatch):
    take(lock_path, 'RUN-A', ALICE)
    before = lock_path.read_bytes()
    monkeypatch.setattr(_lock, 'utc_now', lambda: '2026-11-22T17:00:00Z')
    result, failed = run(lock_path, 'RUN-A', holder=dict(ALICE, release='v9'))
    assert not failed and not result['changed'] and result['acquired']
    assert result['holder']['acquired_at'] == '2026-11-22T16:05:00Z'
    assert lock_path.read_bytes() == before


def test_another_run_is_refused_with_the_holder(lock_path):
    take(lock_path, 'RUN-A', ALICE)
    before = lock_path.read_bytes()
    result, failed = run(lock_path, 'RUN-B', holder=BOB)
    assert failed and not result['changed'] and not result['acquired']
    assert result['msg'].startswith(
        'deploy lock %s is held by run RUN-A: user alice on controller ctl1 since 2026-11-22T16:05:00Z (release v2, '
        'playbook deploy, pid 123): its journal is empty (it had not touched a host); the lock is ' % lock_path)
    assert result['msg'].endswith(
        ' old. Wait for that run to end; if it died, set break_lock=true to take the lock and reconcile what its '
        'journal shows.')
    assert result['holder'] == content_of(lock_path)
    assert lock_path.read_bytes() == before


def test_two_runs_on_the_same_path_only_one_acquires(lock_path):
    first, first_failed = run(lock_path, 'RUN-A', holder=ALICE)
    second, second_failed = run(lock_path, 'RUN-B', holder=BOB)
    assert (first_failed, second_failed) == (False, True)
    assert second['holder']['run_id'] == 'RUN-A' and content_of(lock_path)['run_id'] == 'RUN-A'


def test_lost_race_after_the_read_is_refused(lock_path, monkeypatch):
    """Another run creates the lock between this run's read and its O_EXCL create."""
    real_read = _lock.read_lock
    reads = []

    def read_then_lose(path, **kwargs):
        found = real_read(path, **kwargs)
        if not reads:
            lock_path.write_bytes(_lock.encode(_lock.lock_content('RUN-B', BOB, 'T')))
        reads.append(found)
        return found

    monkeypatch.setattr(_lock, 'read_lock', read_then_lose)
    result, failed = run(lock_path, 'RUN-A', holder=ALICE)
    assert failed and not result['acquired'] and result['holder']['run_id'] == 'RUN-B'
    assert 'is held by run RUN-B: user bob on controller ctl2' in result['msg']
    assert content_of(lock_path)['run_id'] == 'RUN-B'


def test_break_lock_takes_over_and_returns_the_broken_holder(lock_path):
    take(lock_path, 'RUN-A', ALICE)
    old = content_of(lock_path)
    result, failed = run(lock_path, 'RUN-B', holder=BOB, break_lock=True)
    assert not failed and result['changed'] and result['acquired']
    assert result['broken_holder'] == old
    assert result['holder']['run_id'] == 'RUN-B' and content_of(lock_path) == result['holder']
    assert result['msg'].startswith('deploy lock %s taken by run RUN-B, breaking the lock of run RUN-A: user alice'
                                    % lock_path)
    assert os.listdir(str(lock_path.parent)) == ['deploy.lock']


def test_break_lock_on_a_free_or_own_lock_breaks_nothing(lock_path):
    result, failed = run(lock_path, 'RUN-A', break_lock=True)
    assert not failed and result['changed'] and 'broken_holder' not in result
    result, failed = run(lock_path, 'RUN-A', break_lock=True)
    assert not failed and not result['changed'] and 'broken_holder' not in result


def test_corrupt_lock_is_refused_naming_the_path_then_breakable(lock_path):
    lock_path.write_text('{"run_id": "RUN-A", "user"')
    result, failed = run(lock_path, 'RUN-B')
    assert failed and not result['acquired']
    assert result['msg'].startswith('deploy lock %s is corrupt (not JSON: ' % lock_path)
    assert 'set break_lock=true to replace it' in result['msg']
    assert result['holder'] == {'corrupt': '{"run_id": "RUN-A", "user"'}
    result, failed = run(lock_path, 'RUN-B', break_lock=True)
    assert not failed and result['changed'] and result['acquired']
    assert result['broken_holder'] == {'corrupt': '{"run_id": "RUN-A", "user"'}
    assert 'breaking a corrupt lock file' in result['msg']
    assert content_of(lock_path)['run_id'] == 'RUN-B'


def test_release_by_the_holder(lock_path):
    taken = take(lock_path, 'RUN-A', ALICE)
    result, failed = run(lock_path, 'RUN-A', state='absent')
    assert not failed and result['changed'] and not result['acquired']
    assert result['holder'] == taken['holder'] and 'broken_holder' not in result
    assert result['msg'] == 'deploy lock %s removed (released by run RUN-A)' % lock_path
    assert not lock_path.exists()


def test_release_without_a_lock_changes_nothing(lock_path):
    result, failed = run(lock_path, 'RUN-A', state='absent')
    assert not failed and not result['changed'] and 'holder' not in result
    assert result['msg'] == 'no deploy lock at %s' % lock_path


def test_release_of_another_runs_lock_is_refused(lock_path):
    take(lock_path, 'RUN-A', ALICE)
    result, failed = run(lock_path, 'RUN-B', state='absent')
    assert failed and not result['changed']
    assert result['msg'].startswith('deploy lock %s is held by run RUN-A: user alice' % lock_path)
    assert 'set break_lock=true to remove it' in result['msg']
    assert result['holder']['run_id'] == 'RUN-A' and lock_path.exists()


def test_release_with_break_lock_removes_another_runs_lock(lock_path):
    taken = take(lock_path, 'RUN-A', ALICE)
    result, failed = run(lock_path, 'RUN-B', state='absent', break_lock=True)
    assert not failed and result['changed'] and not result['acquired']
    assert result['broken_holder'] == taken['holder']
    assert result['msg'].startswith('deploy lock %s removed, breaking the lock of run RUN-A' % lock_path)
    assert not lock_path.exists()


def test_release_with_break_lock_removes_a_corrupt_lock(lock_path):
    lock_path.write_text('')
    result, failed = run(lock_path, 'RUN-B', state='absent', break_lock=True)
    assert not failed and result['changed'] and result['broken_holder'] == {'corrupt': ''}
    assert not lock_path.exists()


@pytest.mark.parametrize('state, break_lock, holder_run, changed, acquired', [
    ('present', False, None, True, True),
    ('present', False, 'RUN-A', False, True),
    ('present', True, 'RUN-B', True, True),
    ('absent', False, None, False, False),
    ('absent', False, 'RUN-A', True, False),
    ('absent', True, 'RUN-B', True, False),
])
def test_check_mode_predicts_and_touches_nothing(lock_path, state, break_lock, holder_run, changed, acquired):
    if holder_run:
        lock_path.write_bytes(_lock.encode(_lock.lock_content(holder_run, BOB, 'T0')))
    before = lock_path.read_bytes() if holder_run else None
    result, failed = run(lock_path, 'RUN-A', check=True, state=state, break_lock=break_lock, holder=ALICE)
    assert not failed
    assert (result['changed'], result['acquired']) == (changed, acquired)
    assert ('broken_holder' in result) == (holder_run == 'RUN-B')
    if changed:
        assert result['msg'].startswith('would ')
    assert (lock_path.read_bytes() if lock_path.exists() else None) == before
    assert os.listdir(str(lock_path.parent)) == (['deploy.lock'] if holder_run else [])


def test_check_mode_still_refuses_another_runs_lock(lock_path):
    take(lock_path, 'RUN-B', BOB)
    result, failed = run(lock_path, 'RUN-A', check=True)
    assert failed and 'is held by run RUN-B' in result['msg']


def test_diff_shows_the_lock_file(lock_path):
    result, failed = run(lock_path, 'RUN-A', diff=True, holder=ALICE)
    assert result['diff']['before'] == '' and json.loads(result['diff']['after'])['run_id'] == 'RUN-A'
    assert result['diff']['before_header'] == str(lock_path)
    result, failed = run(lock_path, 'RUN-A', diff=True, holder=ALICE)
    assert 'diff' not in result
    result, failed = run(lock_path, 'RUN-A', diff=True, check=True, state='absent')
    assert json.loads(result['diff']['before'])['run_id'] == 'RUN-A' and result['diff']['after'] == ''
    result, failed = run(lock_path, 'RUN-A', state='absent')
    assert 'diff' not in result


def test_missing_directory_fails_naming_path(tmp_path):
    path = tmp_path / 'nope' / 'deploy.lock'
    result, failed = run(path, 'RUN-A')
    assert failed and result['msg'] == 'path=%s: directory %s does not exist' % (path, path.parent)


def test_path_that_is_a_directory_fails(tmp_path):
    result, failed = run(tmp_path, 'RUN-A')
    assert failed and result['msg'] == 'path=%s: is a directory, not a lock file' % tmp_path


@pytest.mark.parametrize('run_id', ['', '   '])
def test_empty_run_id_is_refused(lock_path, run_id):
    result, failed = run(lock_path, run_id)
    assert failed and result['msg'].startswith('run_id must not be empty')
    assert not lock_path.exists()


def test_bad_state_is_refused_by_the_argument_spec(lock_path):
    result, failed = run(lock_path, 'RUN-A', state='held')
    assert failed and 'state' in result['msg'] and 'present, absent' in result['msg']


def test_missing_run_id_is_refused_by_the_argument_spec(lock_path):
    with set_module_args(dict(path=str(lock_path))):
        with pytest.raises(AnsibleFailJson) as caught:
            deploy_lock.main()
    assert 'run_id' in caught.value.args[0]['msg']


# ---------------------------------------------------------------- the run journal

def record(path, run_id, check=False, **entry):
    return run(path, run_id, check=check, journal=entry)


def test_journal_entries_follow_the_holder_and_are_returned(lock_path):
    take(lock_path, 'RUN-A', ALICE)
    result, failed = record(lock_path, 'RUN-A', host='app1', step='drain', **{'from': 'v1'})
    assert not failed and result['changed'] and result['entry'] == {
        'host': 'app1', 'step': 'drain', 'from': 'v1', 'at': '2026-11-22T16:05:00Z', 'run': 'RUN-A'}
    assert result['msg'] == 'recorded drain of app1 in the journal of run RUN-A'
    record(lock_path, 'RUN-A', host='app1', step='switch', release='v2', **{'from': 'v1'})
    lock = _lock.read_lock(str(lock_path))
    assert lock.content == dict(ALICE, run_id='RUN-A', acquired_at='2026-11-22T16:05:00Z')
    assert [entry['step'] for entry in lock.journal] == ['drain', 'switch']
    kept, failed = run(lock_path, 'RUN-A', holder=ALICE)
    assert not failed and [entry['step'] for entry in kept['journal']] == ['drain', 'switch']


def test_journal_of_a_lock_this_run_does_not_hold_records_nothing(lock_path):
    result, failed = record(lock_path, 'RUN-A', host='app1', step='drain')
    assert failed and result['msg'] == 'path=%s: no lock, so run RUN-A cannot record drain of app1 in its journal' % lock_path
    assert not lock_path.exists()
    take(lock_path, 'RUN-B', BOB)
    before = lock_path.read_bytes()
    result, failed = record(lock_path, 'RUN-A', host='app1', step='drain')
    assert failed and 'not recording drain of app1: the lock is held by run RUN-B' in result['msg']
    assert lock_path.read_bytes() == before


def test_journal_entry_is_checked_and_check_mode_writes_nothing(lock_path):
    take(lock_path, 'RUN-A', ALICE)
    before = lock_path.read_bytes()
    result, failed = record(lock_path, 'RUN-A', host='app1', step='explode')
    assert failed and result['msg'].startswith('journal.step must be one of drain, switch')
    result, failed = record(lock_path, 'RUN-A', check=True, host='app1', step='drain')
    assert not failed and result['changed'] and result['msg'].startswith('would record drain of app1')
    assert lock_path.read_bytes() == before
    result, failed = run(lock_path, 'RUN-A', state='absent', journal={'host': 'app1', 'step': 'drain'})
    assert failed and result['msg'] == 'journal is only recorded with state=present (the run holds the lock)'


def test_journal_and_break_lock_are_mutually_exclusive(lock_path):
    result, failed = run(lock_path, 'RUN-A', break_lock=True, journal={'host': 'app1', 'step': 'drain'})
    assert failed and 'mutually exclusive' in result['msg'] and 'journal' in result['msg']


def test_a_journal_lock_file_that_is_a_fifo_fails_at_once(lock_path):
    os.mkfifo(str(lock_path))
    result, failed = record(lock_path, 'RUN-A', host='app1', step='drain')
    assert failed and result['msg'] == 'path=%s: is a FIFO, not a lock file' % lock_path


def test_release_keeps_unsettled_hosts_for_the_next_run_which_inherits_them(lock_path):
    take(lock_path, 'RUN-A', ALICE)
    for host, step in (('app1', 'drain'), ('app1', 'done'), ('app2', 'drain'), ('app2', 'switch')):
        record(lock_path, 'RUN-A', host=host, step=step, release='v2', **{'from': 'v1'})
    result, failed = run(lock_path, 'RUN-A', state='absent')
    assert not failed and result['changed'] and result['pending'] == ['app2']
    pending = _lock.pending_path(str(lock_path))
    assert os.stat(pending).st_mode & 0o777 == 0o600 and not lock_path.exists()

    result = take(lock_path, 'RUN-B', BOB)
    assert [(entry['host'], entry['step']) for entry in result['inherited']] == [('app2', 'drain'), ('app2', 'switch')]
    assert result['reconcile'] == [dict(host='app2', drained=True, step='switch', release='v2', fallback='v1',
                                        upgrade_pending=False, lost_at='', run='RUN-A')]
    assert not os.path.exists(pending)
    # Inherited into RUN-B's journal: if RUN-B dies too, the next run still sees app2.
    assert [entry['run'] for entry in _lock.read_lock(str(lock_path)).journal] == ['RUN-A', 'RUN-A']
    record(lock_path, 'RUN-B', host='app2', step='reconciled', release='v2')
    result, failed = run(lock_path, 'RUN-B', state='absent')
    assert not failed and result['pending'] == [] and not os.path.exists(pending)


def test_break_lock_inherits_the_dead_runs_unsettled_hosts(lock_path):
    take(lock_path, 'RUN-A', ALICE)
    record(lock_path, 'RUN-A', host='app1', step='drain', **{'from': 'v1'})
    record(lock_path, 'RUN-A', host='app1', step='done', release='v2')
    record(lock_path, 'RUN-A', host='app2', step='drain', **{'from': 'v1'})
    refused, failed = run(lock_path, 'RUN-B', holder=BOB)
    assert failed and [entry['host'] for entry in refused['journal']] == ['app1', 'app1', 'app2']
    assert ('its last journal step, drain of app2 at 2026-11-22T16:05:00Z, did not finish; it left drained: app2'
            in refused['msg'])
    result, failed = run(lock_path, 'RUN-B', holder=BOB, break_lock=True)
    assert not failed and result['broken_holder']['run_id'] == 'RUN-A'
    assert [item['host'] for item in result['reconcile']] == ['app2']
    assert result['reconcile'][0]['release'] == 'v1' and result['reconcile'][0]['drained']

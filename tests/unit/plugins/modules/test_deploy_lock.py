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
    assert result['msg'] == (
        'deploy lock %s is held by run RUN-A: user alice on controller ctl1 since 2026-11-22T16:05:00Z (release v2, '
        'playbook deploy, pid 123). Wait for that run to end; if it died, set break_lock=true to take the lock.'
        % lock_path)
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

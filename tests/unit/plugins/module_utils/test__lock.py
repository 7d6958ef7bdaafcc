# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import stat
import threading
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _lock

HOLDER = {'controller': 'ctl1', 'user': 'alice', 'pid': 123, 'release': 'v2', 'playbook': 'deploy'}


def write_lock(path, run_id, **extra):
    content = _lock.lock_content(run_id, dict(HOLDER, **extra), '2026-11-22T16:05:00Z')
    path.write_bytes(_lock.encode(content))
    return content


def test_utc_now_is_iso_8601_utc():
    assert _lock.utc_now(lambda: 1795364700.7) == '2026-11-22T16:25:00Z'


def test_lock_content_keeps_run_id_and_time_over_holder_keys():
    content = _lock.lock_content('run-1', {'run_id': 'forged', 'acquired_at': 'never', 'user': 'alice'}, 'T')
    assert content == {'run_id': 'run-1', 'acquired_at': 'T', 'user': 'alice'}


def test_read_lock_missing_is_none(tmp_path):
    assert _lock.read_lock(str(tmp_path / 'deploy.lock')) is None


def test_read_lock_parses_holder(tmp_path):
    path = tmp_path / 'deploy.lock'
    content = write_lock(path, 'run-1')
    lock = _lock.read_lock(str(path))
    assert not lock.corrupt and lock.run_id == 'run-1' and lock.holder() == content


@pytest.mark.parametrize('raw, problem', [
    (b'garbage{', 'not JSON'),
    (b'\xff\xfe', 'not JSON'),
    (b'[1, 2]', 'not a JSON object'),
    (b'{"user": "alice"}', 'no run_id'),
    (b'{"run_id": ""}', 'no run_id'),
    (b'{"run_id": 7}', 'no run_id'),
])
def test_read_lock_flags_corrupt_files(tmp_path, raw, problem):
    path = tmp_path / 'deploy.lock'
    path.write_bytes(raw)
    lock = _lock.read_lock(str(path))
    assert lock.corrupt and lock.problem == problem and lock.run_id is None
    assert set(lock.holder()) == {'corrupt'}


def test_read_lock_waits_for_an_empty_file_being_written_then_calls_it_corrupt(tmp_path):
    path = tmp_path / 'deploy.lock'
    path.write_bytes(b'')
    now = [0.0]

    # Written by its creator while the reader waits.
    def sleep_then_write(seconds):
        now[0] += seconds
        write_lock(path, 'run-1')

    assert _lock.read_lock(str(path), clock=lambda: now[0], sleep=sleep_then_write).run_id == 'run-1'
    path.write_bytes(b'')
    now[0] = 0.0
    slept = []
    lock = _lock.read_lock(str(path), clock=lambda: now[0],
                           sleep=lambda seconds: (slept.append(seconds), now.__setitem__(0, now[0] + seconds)))
    assert lock.corrupt and lock.problem == 'empty'
    assert sum(slept) == pytest.approx(_lock.EMPTY_GRACE_SECONDS)


def test_read_lock_permission_denied_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / 'deploy.lock'
    write_lock(path, 'run-1')

    def denied(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')

    with monkeypatch.context() as patched:
        patched.setattr(_lock.os, 'open', denied)
        with pytest.raises(_lock.LockError, match='^path=%s: cannot read the lock: permission denied$' % path):
            _lock.read_lock(str(path))


def test_check_directory(tmp_path):
    _lock.check_directory(str(tmp_path / 'deploy.lock'))
    missing = tmp_path / 'missing' / 'deploy.lock'
    with pytest.raises(_lock.LockError, match='^path=%s: directory %s does not exist$' % (missing, missing.parent)):
        _lock.check_directory(str(missing))
    (tmp_path / 'file').write_text('')
    under_file = tmp_path / 'file' / 'deploy.lock'
    with pytest.raises(_lock.LockError, match='is not a directory'):
        _lock.check_directory(str(under_file))
    with pytest.raises(_lock.LockError, match='^path=%s: is a directory, not a lock file$' % tmp_path):
        _lock.check_directory(str(tmp_path))


def test_describe_quotes_what_the_holder_stored():
    lock = _lock.parse('/x', _lock.encode(_lock.lock_content('RUN', HOLDER, '2026-11-22T16:05:00Z')))
    assert _lock.describe(lock) == ('run RUN: user alice on controller ctl1 since 2026-11-22T16:05:00Z '
                                    '(release v2, playbook deploy, pid 123)')
    bare = _lock.parse('/x', b'{"run_id": "RUN"}')
    assert _lock.describe(bare) == 'run RUN'
    started = _lock.parse('/x', b'{"run_id": "RUN", "started": "T0", "release": "v3"}')
    assert _lock.describe(started) == 'run RUN: since T0 (release v3)'


@pytest.mark.parametrize('state, lock_run, break_lock, action', [
    ('present', None, False, _lock.ACQUIRE),
    ('present', None, True, _lock.ACQUIRE),
    ('present', 'me', False, _lock.KEEP),
    ('present', 'me', True, _lock.KEEP),
    ('present', 'other', True, _lock.BREAK_AND_ACQUIRE),
    ('present', 'corrupt', True, _lock.BREAK_AND_ACQUIRE),
    ('absent', None, False, _lock.NOTHING),
    ('absent', 'me', False, _lock.RELEASE),
    ('absent', 'other', True, _lock.BREAK_AND_RELEASE),
    ('absent', 'corrupt', True, _lock.BREAK_AND_RELEASE),
])
def test_decide(state, lock_run, break_lock, action):
    if lock_run is None:
        lock = None
    elif lock_run == 'corrupt':
        lock = _lock.parse('/l', b'oops')
    else:
        lock = _lock.parse('/l', _lock.encode({'run_id': lock_run}))
    assert _lock.decide('/l', state, 'me', lock, break_lock) == action


# 2026-11-22T16:05:00Z, when HOLDER's run took the lock.
STARTED = 1795363500


def test_decide_refuses_another_runs_lock_with_its_holder():
    lock = _lock.parse('/srv/demo/deploy.lock', _lock.encode(_lock.lock_content('RUNID', HOLDER, '2026-11-22T16:05:00Z')))
    with pytest.raises(_lock.LockHeld) as caught:
        _lock.decide('/srv/demo/deploy.lock', 'present', 'me', lock, False, now=STARTED + 300)
    assert str(caught.value) == (
        'deploy lock /srv/demo/deploy.lock is held by run RUNID: user alice on controller ctl1 since '
        '2026-11-22T16:05:00Z (release v2, playbook deploy, pid 123): its journal is empty (it had not touched a '
        'host); the lock is 5 min old. Wait for that run to end; if it died, set break_lock=true to take the lock '
        'and reconcile what its journal shows.')
    assert caught.value.holder['run_id'] == 'RUNID' and caught.value.holder['user'] == 'alice'
    with pytest.raises(_lock.LockHeld, match='Not releasing a lock this run does not hold'):
        _lock.decide('/srv/demo/deploy.lock', 'absent', 'me', lock, False)


@pytest.mark.parametrize('state, verb', [('present', 'replace'), ('absent', 'remove')])
def test_decide_refuses_a_corrupt_lock(state, verb):
    lock = _lock.parse('/srv/demo/deploy.lock', b'half a lock')
    with pytest.raises(_lock.LockHeld) as caught:
        _lock.decide('/srv/demo/deploy.lock', state, 'me', lock, False)
    assert str(caught.value) == ("deploy lock /srv/demo/deploy.lock is corrupt (not JSON: 'half a lock'). If no "
                                 "deploy is running, set break_lock=true to %s it." % verb)
    assert caught.value.holder == {'corrupt': 'half a lock'}


def test_create_is_exclusive_and_readable_by_others(tmp_path):
    path = str(tmp_path / 'deploy.lock')
    old_umask = os.umask(0o077)
    try:
        assert _lock.create(path, {'run_id': 'a'}) is True
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert _lock.create(path, {'run_id': 'b'}) is False
    assert json.loads(open(path).read()) == {'run_id': 'a'}


def test_create_removes_a_half_written_lock(tmp_path, monkeypatch):
    path = tmp_path / 'deploy.lock'

    def full(fd, data):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'write', full)
    with pytest.raises(_lock.LockError, match='^path=%s: cannot write the lock: No space left on device$' % path):
        _lock.create(str(path), {'run_id': 'a'})
    assert not path.exists()


def test_create_in_a_read_only_directory_names_the_path(tmp_path, monkeypatch):
    def denied(*args):
        raise PermissionError(13, 'Permission denied')

    monkeypatch.setattr(os, 'open', denied)
    with pytest.raises(_lock.LockError, match='cannot create the lock: permission denied'):
        _lock.create(str(tmp_path / 'deploy.lock'), {'run_id': 'a'})


def test_two_concurrent_acquirers_never_both_get_it(tmp_path):
    path = str(tmp_path / 'deploy.lock')
    outcomes = {}
    start = threading.Barrier(8)

    def contend(run_id):
        start.wait()
        try:
            outcomes[run_id] = _lock.acquire(path, run_id, _lock.lock_content(run_id, {}, 'T'))[0]
        except _lock.LockHeld as exc:
            outcomes[run_id] = exc

    threads = [threading.Thread(target=contend, args=('run-%d' % n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run_id for run_id, outcome in outcomes.items() if outcome is True]
    assert len(winners) == 1
    assert _lock.read_lock(path).run_id == winners[0]
    for run_id, outcome in outcomes.items():
        if run_id != winners[0]:
            assert outcome.holder['run_id'] == winners[0]


def test_acquire_sequential_second_run_is_refused_and_same_run_keeps(tmp_path):
    path = str(tmp_path / 'deploy.lock')
    assert _lock.acquire(path, 'a', _lock.lock_content('a', {}, 'T1')) == (True, {'run_id': 'a', 'acquired_at': 'T1'})
    with pytest.raises(_lock.LockHeld, match='held by run a: since T1'):
        _lock.acquire(path, 'b', _lock.lock_content('b', {}, 'T2'))
    # The same run racing itself (two hosts of one play) keeps the first content.
    assert _lock.acquire(path, 'a', _lock.lock_content('a', {}, 'T3')) == (False, {'run_id': 'a', 'acquired_at': 'T1'})


def test_remove_only_removes_the_lock_that_was_read(tmp_path):
    path = tmp_path / 'deploy.lock'
    write_lock(path, 'old')
    seen = _lock.read_lock(str(path))
    write_lock(path, 'new')  # another run broke and took it in between
    assert _lock.remove(seen) is False
    assert _lock.read_lock(str(path)).run_id == 'new'
    assert sorted(os.listdir(str(tmp_path))) == ['deploy.lock']
    assert _lock.remove(_lock.read_lock(str(path))) is True
    assert os.listdir(str(tmp_path)) == []


def test_remove_of_a_vanished_lock(tmp_path):
    path = tmp_path / 'deploy.lock'
    write_lock(path, 'old')
    seen = _lock.read_lock(str(path))
    path.unlink()
    assert _lock.remove(seen) is False


def test_remove_keeps_a_changed_lock_aside_when_it_cannot_be_put_back(tmp_path, monkeypatch):
    path = tmp_path / 'deploy.lock'
    write_lock(path, 'old')
    seen = _lock.read_lock(str(path))
    write_lock(path, 'new')

    def no_link(source, target):
        raise OSError(17, 'File exists')

    monkeypatch.setattr(os, 'link', no_link)
    with pytest.raises(_lock.LockError, match='the lock changed while it was being removed') as caught:
        _lock.remove(seen)
    aside = [name for name in os.listdir(str(tmp_path)) if name.startswith('deploy.lock.removing-')]
    assert len(aside) == 1 and aside[0] in str(caught.value)


def test_release(tmp_path):
    path = tmp_path / 'deploy.lock'
    content = write_lock(path, 'me')
    assert _lock.release(str(path), 'me', _lock.read_lock(str(path))) == (True, content)
    assert not path.exists()
    assert _lock.release(str(path), 'me', None) == (False, None)


def test_release_after_another_run_took_the_lock_names_it(tmp_path):
    path = tmp_path / 'deploy.lock'
    write_lock(path, 'me')
    seen = _lock.read_lock(str(path))
    write_lock(path, 'other')
    with pytest.raises(_lock.LockHeld, match='held by run other'):
        _lock.release(str(path), 'me', seen)
    assert _lock.read_lock(str(path)).run_id == 'other'


def test_flock_is_exclusive_names_the_holder_and_is_free_again_once_released(tmp_path):
    path = str(tmp_path / 'vassals.lock')
    assert _lock.flock_is_held(path) is None
    fd = _lock.flock_acquire(path, {'pid': 4242, 'started_at': 1.5})
    try:
        assert _lock.flock_is_held(path) == {'pid': 4242, 'started_at': 1.5}
        with pytest.raises(_lock.LockHeld) as caught:
            _lock.flock_acquire(path, {'pid': 1})
        assert caught.value.holder == {'pid': 4242, 'started_at': 1.5}
        assert str(caught.value) == '%s is held by another run: pid 4242, started_at 1.5' % path
    finally:
        _lock.flock_release(fd)
    assert _lock.flock_is_held(path) is None
    assert open(path).read() == ''
    _lock.flock_release(_lock.flock_acquire(path, {'pid': 1}))


def test_flock_in_a_missing_directory_names_the_path(tmp_path):
    path = str(tmp_path / 'missing' / 'vassals.lock')
    with pytest.raises(_lock.LockError) as caught:
        _lock.flock_acquire(path, {'pid': 1})
    assert str(caught.value) == 'path=%s: cannot open the lock: No such file or directory' % path


@pytest.mark.timeout(5)
@pytest.mark.parametrize('check', ['acquire', 'is_held'])
def test_a_flock_path_that_is_a_fifo_fails_at_once(tmp_path, check):
    path = str(tmp_path / 'vassals.lock')
    os.mkfifo(path, 0o600)
    started = time.monotonic()
    with pytest.raises(_lock.LockError) as caught:
        if check == 'acquire':
            _lock.flock_acquire(path, {'pid': 1})
        else:
            _lock.flock_is_held(path)
    assert str(caught.value) == 'path=%s: is a FIFO, not a lock file' % path
    assert time.monotonic() - started < 1.0
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


@pytest.mark.parametrize('check', ['acquire', 'is_held'])
def test_a_flock_path_that_is_a_symlink_is_never_followed(tmp_path, check):
    target = tmp_path / 'passwd'
    target.write_text('root:x:0:0:root:/root:/bin/bash\n')
    path = tmp_path / 'vassals.lock'
    path.symlink_to(target)
    with pytest.raises(_lock.LockError) as caught:
        if check == 'acquire':
            _lock.flock_acquire(str(path), {'pid': 1})
        else:
            _lock.flock_is_held(str(path))
    assert str(caught.value) == 'path=%s: is a symlink; the lock is never followed through one' % path
    assert target.read_text() == 'root:x:0:0:root:/root:/bin/bash\n'  # not truncated, nothing written


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another user needs root')
@pytest.mark.parametrize('check', ['acquire', 'is_held'])
def test_a_flock_file_of_another_user_is_refused(tmp_path, check):
    path = tmp_path / 'vassals.lock'
    path.write_text('{"pid": 1}')
    os.chown(str(path), 4321, -1)
    with pytest.raises(_lock.LockError) as caught:
        if check == 'acquire':
            _lock.flock_acquire(str(path), {'pid': 1})
        else:
            _lock.flock_is_held(str(path))
    assert str(caught.value) == ('path=%s: is owned by uid 4321, not by uid 0 that runs the module and creates its '
                                 'lock files; not used as a lock' % path)
    assert path.read_text() == '{"pid": 1}'


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another user needs root')
def test_a_deploy_lock_of_another_user_is_not_trusted(tmp_path):
    path = tmp_path / 'deploy.lock'
    write_lock(path, 'run-1')
    os.chown(str(path), 4321, -1)
    with pytest.raises(_lock.LockError, match='^path=%s: is owned by uid 4321, not by uid 0 ' % path):
        _lock.read_lock(str(path))


def test_a_flock_path_that_is_a_socket_names_it(tmp_path):
    path = str(tmp_path / 'vassals.lock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    try:
        for call in (lambda: _lock.flock_acquire(path, {'pid': 1}), lambda: _lock.flock_is_held(path)):
            with pytest.raises(_lock.LockError) as caught:
                call()
            assert str(caught.value) == 'path=%s: is a socket, not a lock file' % path
    finally:
        server.close()


def test_describe_holder():
    assert _lock.describe_holder({}) == 'holder unknown (it has not written its facts yet)'
    assert _lock.describe_holder({'corrupt': 'xx'}) == "holder unreadable: 'xx'"


# ---------------------------------------------------------------- the private directory of process locks

def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def test_private_directory_is_created_0700_whatever_the_umask(tmp_path):
    old = os.umask(0o777)
    try:
        assert _lock.private_directory(str(tmp_path / 'locks')) == str(tmp_path / 'locks')
    finally:
        os.umask(old)
    assert mode_of(tmp_path / 'locks') == 0o700 and os.lstat(str(tmp_path / 'locks')).st_uid == os.geteuid()
    assert _lock.private_directory(str(tmp_path / 'locks')) == str(tmp_path / 'locks')  # as found: kept


def test_private_directory_in_check_mode_creates_nothing(tmp_path):
    assert _lock.private_directory(str(tmp_path / 'locks'), create=False) is None
    assert not (tmp_path / 'locks').exists()


@pytest.mark.parametrize('planted, problem', [
    ('symlink', 'is a symbolic link, never followed'),
    ('file', 'is a regular file, not a directory'),
    ('wide', 'has mode 0755: other users may enter it (expected 0700)'),
])
def test_a_lock_directory_found_wrong_is_refused_and_left_as_it_is(tmp_path, planted, problem):
    target = tmp_path / 'elsewhere'
    target.mkdir(mode=0o700)
    path = tmp_path / 'locks'
    if planted == 'symlink':
        path.symlink_to(target)
    elif planted == 'file':
        path.write_text('precious')
    else:
        path.mkdir()
        path.chmod(0o755)
    with pytest.raises(_lock.LockError) as caught:
        _lock.private_directory(str(path))
    assert str(caught.value) == 'lock directory %s: %s; not used, and left as it is' % (path, problem)
    assert list(target.iterdir()) == []
    if planted == 'symlink':
        assert os.readlink(str(path)) == str(target)
    elif planted == 'file':
        assert path.read_text() == 'precious'
    else:
        assert mode_of(path) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a directory to another user needs root')
def test_a_lock_directory_of_another_user_is_refused(tmp_path):
    path = tmp_path / 'locks'
    path.mkdir(mode=0o700)
    os.chown(str(path), 4321, 4321)
    with pytest.raises(_lock.LockError) as caught:
        _lock.private_directory(str(path))
    assert str(caught.value) == ('lock directory %s: is owned by uid 4321, not by uid 0 that runs the module; not '
                                 'used, and left as it is' % path)


def test_a_lock_directory_in_a_directory_others_may_write_to_is_refused(tmp_path):
    """In /run/lock or /tmp (1777) anyone could make the directory first, or move it away."""
    shared = tmp_path / 'shared'
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(_lock.LockError) as caught:
        _lock.private_directory(str(shared / 'locks'))
    assert str(caught.value) == ('lock directory %s: its parent %s is owned by uid %d with mode 1777: other users may '
                                 'create or move names in it' % (shared / 'locks', shared, os.geteuid()))
    assert not (shared / 'locks').exists()


def test_a_lock_directory_whose_parent_is_missing_names_it(tmp_path):
    path = tmp_path / 'missing' / 'locks'
    with pytest.raises(_lock.LockError) as caught:
        _lock.private_directory(str(path))
    assert str(caught.value) == ('lock directory %s: its parent %s cannot be used: No such file or directory'
                                 % (path, tmp_path / 'missing'))

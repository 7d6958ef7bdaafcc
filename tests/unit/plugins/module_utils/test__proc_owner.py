# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Reading /proc as a process's owner when root may not (no CAP_SYS_PTRACE): _proc.read_guarded and run_as."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import subprocess
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc

PID = 4321
NOBODY = 65534


LIVE_STATUS = 'Name:\tgunicorn\nState:\tS (sleeping)\nPid:\t%d\nVmSize:\t  27712 kB\nVmRSS:\t  21300 kB\n' % PID
# What /proc/PID/status says once the process released its memory on its way out: no Vm* lines.
EXITING_STATUS = 'Name:\tgunicorn\nState:\tR (running)\nPid:\t%d\nThreads:\t1\n' % PID
ZOMBIE_STATUS = 'Name:\tgunicorn\nState:\tZ (zombie)\nPid:\t%d\n' % PID


def fake_process(root, pid=PID, start=777, status=LIVE_STATUS):
    """A /proc/PID with the stat and status the owner read looks at."""
    base = root / str(pid)
    base.mkdir(parents=True, exist_ok=True)
    fields = ['S', '1'] + ['0'] * 17 + [str(start)] + ['0'] * 10
    (base / 'stat').write_text('%d (gunicorn) %s\n' % (pid, ' '.join(fields)))
    (base / 'status').write_text(status)
    return str(root)


class Owner:
    """Stands in for run_as (no fork): records each call and runs the reader as the owner would."""

    def __init__(self, monkeypatch, owner=(1000, 1001, True), euid=0):
        self.calls = []
        self.as_owner = False
        self.before = None  # called before the reader, as something happening during the read
        monkeypatch.setattr(os, 'geteuid', lambda: euid)
        monkeypatch.setattr(_proc, 'process_owner', lambda pid, proc_root='/proc': owner)
        monkeypatch.setattr(_proc, 'run_as', self.run_as)

    def run_as(self, uid, gid, function, timeout):
        self.calls.append((uid, gid, timeout))
        if self.before:
            self.before()
        self.as_owner = True
        try:
            return function()
        finally:
            self.as_owner = False

    def reader(self, value='/srv/app/releases/v2'):
        def read():
            if not self.as_owner:
                raise OSError(errno.EACCES, 'Permission denied', '/proc/%d/cwd' % PID)
            return value
        return read


def test_a_direct_read_forks_nothing(monkeypatch, tmp_path):
    owner = Owner(monkeypatch)
    assert _proc.read_guarded(PID, 'cwd', lambda: '/srv/app', fake_process(tmp_path)) == '/srv/app'
    assert owner.calls == []


def test_root_that_is_denied_reads_as_the_owner_of_proc_pid(monkeypatch, tmp_path):
    owner = Owner(monkeypatch, owner=(1000, 1001, True))
    value = _proc.read_guarded(PID, 'cwd', owner.reader(), fake_process(tmp_path))
    assert value == '/srv/app/releases/v2'
    assert owner.calls == [(1000, 1001, _proc.OWNER_READ_SECONDS)]


def test_another_user_that_is_denied_gets_the_readers_error(monkeypatch, tmp_path):
    owner = Owner(monkeypatch, euid=1000)
    with pytest.raises(OSError) as caught:
        _proc.read_guarded(PID, 'cwd', owner.reader(), fake_process(tmp_path))
    assert caught.value.errno == errno.EACCES and not isinstance(caught.value, _proc.OwnerReadError)
    assert owner.calls == []


def test_an_error_that_is_no_denial_is_not_retried(monkeypatch, tmp_path):
    owner = Owner(monkeypatch)

    def gone():
        raise OSError(errno.ENOENT, 'No such file or directory')

    with pytest.raises(OSError) as caught:
        _proc.read_guarded(PID, 'fd', gone, fake_process(tmp_path))
    assert caught.value.errno == errno.ENOENT and owner.calls == []


def test_a_process_that_changed_its_user_itself_cannot_be_read_as_its_owner(monkeypatch, tmp_path):
    owner = Owner(monkeypatch, owner=(1000, 1000, False))
    with pytest.raises(_proc.OwnerReadError) as caught:
        _proc.read_guarded(PID, 'cwd and maps', owner.reader(), fake_process(tmp_path))
    assert str(caught.value) == (
        'cannot read cwd and maps of pid %d: root may not without CAP_SYS_PTRACE (Permission denied), and its owner '
        '(uid 1000) may not either: it changed its user itself after it started, so the kernel counts it as not '
        'dumpable. Give the module CAP_SYS_PTRACE, or start the server as its user (systemd User=) instead of '
        'letting it switch users' % PID)
    assert owner.calls == []


def test_a_root_process_cannot_be_read_as_its_owner(monkeypatch, tmp_path):
    owner = Owner(monkeypatch, owner=(0, 0, True))
    with pytest.raises(_proc.OwnerReadError) as caught:
        _proc.read_guarded(PID, 'exe', owner.reader(), fake_process(tmp_path))
    assert str(caught.value).endswith('and it runs as root, so reading it as its owner cannot help: give the module '
                                      'CAP_SYS_PTRACE')


def test_the_owner_denied_too_is_an_error_naming_both(monkeypatch, tmp_path):
    owner = Owner(monkeypatch)

    def never():
        raise OSError(errno.EACCES, 'Permission denied', '/proc/%d/cwd' % PID)

    with pytest.raises(_proc.OwnerReadError) as caught:
        _proc.read_guarded(PID, 'cwd', never, fake_process(tmp_path))
    assert str(caught.value) == ('cannot read cwd of pid %d: root may not without CAP_SYS_PTRACE (Permission denied), '
                                 'and its owner (uid 1000, gid 1001) may not read it either (Permission denied)' % PID)


@pytest.mark.parametrize('status', [EXITING_STATUS, ZOMBIE_STATUS], ids=['memory-released', 'zombie'])
def test_a_process_exiting_while_its_owner_reads_is_gone_not_hidden(monkeypatch, tmp_path, status):
    # A worker replaced during a reload: once its memory is released the kernel shows its fd and environ
    # as root's, and its owner is denied them too.
    owner = Owner(monkeypatch)
    proc_root = fake_process(tmp_path)
    owner.before = lambda: fake_process(tmp_path, status=status)

    def denied_to_all():
        raise OSError(errno.EACCES, 'Permission denied', '/proc/%d/environ' % PID)

    with pytest.raises(OSError) as caught:
        _proc.read_guarded(PID, 'environ and fd', denied_to_all, proc_root)
    assert caught.value.errno == errno.ESRCH and not isinstance(caught.value, _proc.OwnerReadError)
    assert len(owner.calls) == 1


def test_an_exiting_process_that_looks_not_dumpable_is_gone(monkeypatch, tmp_path):
    owner = Owner(monkeypatch, owner=(1000, 1000, False))
    with pytest.raises(OSError) as caught:
        _proc.read_guarded(PID, 'fd', owner.reader(), fake_process(tmp_path, status=EXITING_STATUS))
    assert caught.value.errno == errno.ESRCH and owner.calls == []


def test_a_pid_reused_during_the_read_is_gone_not_read(monkeypatch, tmp_path):
    owner = Owner(monkeypatch)
    proc_root = fake_process(tmp_path, start=777)
    owner.before = lambda: fake_process(tmp_path, start=999)  # the process exited, its PID went to another
    with pytest.raises(OSError) as caught:
        _proc.read_guarded(PID, 'cwd', owner.reader(), proc_root)
    assert caught.value.errno == errno.ESRCH and not isinstance(caught.value, _proc.OwnerReadError)


def test_a_process_gone_before_the_read_is_gone(monkeypatch, tmp_path):
    owner = Owner(monkeypatch)
    with pytest.raises(OSError) as caught:
        _proc.read_guarded(PID, 'cwd', owner.reader(), str(tmp_path))
    assert caught.value.errno == errno.ESRCH and owner.calls == []


def test_a_failed_owner_read_names_pid_what_and_why(monkeypatch, tmp_path):
    owner = Owner(monkeypatch)

    def timeout(uid, gid, function, seconds):
        raise _proc.OwnerReadError('gave no answer within %g s (the reading process was killed)' % seconds)

    monkeypatch.setattr(_proc, 'run_as', timeout)
    with pytest.raises(_proc.OwnerReadError) as caught:
        _proc.read_guarded(PID, 'environ and fd', owner.reader(), fake_process(tmp_path), timeout=2.5)
    assert str(caught.value) == (
        'cannot read environ and fd of pid %d: root may not without CAP_SYS_PTRACE (Permission denied), and reading '
        'it as its owner (uid 1000, gid 1001) gave no answer within 2.5 s (the reading process was killed)' % PID)


def test_read_environ_or_raise(tmp_path, monkeypatch):
    base = tmp_path / str(PID)
    base.mkdir()
    (base / 'environ').write_bytes(b'A=1\0GUNICORN_PID=12\0NOEQUALS\0')
    assert _proc.read_environ_or_raise(PID, str(tmp_path)) == {'A': '1', 'GUNICORN_PID': '12'}
    assert _proc.read_environ_or_raise(PID + 1, str(tmp_path)) is None

    def refuse(path, *args, **kwargs):
        raise OSError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(_proc, 'open', refuse, raising=False)
    with pytest.raises(OSError):
        _proc.read_environ_or_raise(PID, str(tmp_path))


# ---------------------------------------------------------------- the real child

root_only = pytest.mark.skipif(os.geteuid() != 0, reason='taking another identity needs root')


@root_only
def test_run_as_returns_the_value_through_json():
    assert _proc.run_as(NOBODY, NOBODY, lambda: {'a': [1, 'b', None, True]}, 5) == {'a': [1, 'b', None, True]}


@root_only
def test_run_as_raises_the_readers_os_error():
    with pytest.raises(OSError) as caught:
        _proc.run_as(NOBODY, NOBODY, lambda: os.readlink('/nonexistent/link'), 5)
    assert caught.value.errno == errno.ENOENT and caught.value.filename == '/nonexistent/link'


@root_only
def test_run_as_reports_what_json_cannot_carry():
    with pytest.raises(_proc.OwnerReadError) as caught:
        _proc.run_as(NOBODY, NOBODY, lambda: set([1]), 5)
    assert str(caught.value) == 'failed: TypeError: Object of type set is not JSON serializable'


def test_run_as_fails_when_the_identity_cannot_be_taken(monkeypatch):
    def refuse(groups):
        raise OSError(errno.EPERM, 'Operation not permitted')

    monkeypatch.setattr(os, 'setgroups', refuse)  # inherited by the child
    with pytest.raises(_proc.OwnerReadError) as caught:
        _proc.run_as(NOBODY, NOBODY, lambda: 'never read', 5)
    assert str(caught.value) == 'failed: could not take that identity (Operation not permitted)'


@root_only
def test_run_as_kills_and_reaps_a_child_past_its_bound():
    children = _proc.all_child_pids(os.getpid())
    started = time.monotonic()
    with pytest.raises(_proc.OwnerReadError) as caught:
        _proc.run_as(NOBODY, NOBODY, lambda: time.sleep(30), 0.5)
    assert str(caught.value) == 'gave no answer within 0.5 s (the reading process was killed)'
    assert time.monotonic() - started < 3
    assert _proc.all_child_pids(os.getpid()) == children  # nothing left behind, not even a zombie


@root_only
def test_the_child_has_the_owners_identity_and_no_groups_nor_capabilities():
    identity = _proc.run_as(NOBODY, NOBODY, lambda: [os.getresuid(), os.getresgid(), os.getgroups(),
                                                     _proc.read_text('/proc/self/status')], 5)
    assert identity[:3] == [[NOBODY] * 3, [NOBODY] * 3, []]
    status = dict(line.split(':', 1) for line in identity[3].splitlines() if ':' in line)
    assert int(status['CapPrm'], 16) == 0 and int(status['CapEff'], 16) == 0


@root_only
def test_a_process_of_another_user_is_read_as_its_owner(tmp_path):
    tmp_path.chmod(0o755)
    sleeper = subprocess.Popen(['sleep', '30'], cwd=str(tmp_path), user=NOBODY, group=NOBODY, extra_groups=[])
    try:
        deadline = time.monotonic() + 5
        while _proc.process_owner(sleeper.pid) != (NOBODY, NOBODY, True) and time.monotonic() < deadline:
            time.sleep(0.01)  # until it exec'd sleep, and is dumpable again
        cwd, maps = _proc.read_as_owner(sleeper.pid, 'cwd and maps', lambda: [
            _proc.read_link_or_raise(sleeper.pid, 'cwd'), _proc.read_text_or_raise(sleeper.pid, 'maps')])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cwd == str(tmp_path)
    assert any(path.endswith('/sleep') for path in _proc.mapped_paths(maps))


@root_only
def test_process_owner_tells_a_process_that_changed_its_user_itself(tmp_path):
    """A process that switches to another user after exec keeps that user on /proc/PID, not on /proc/PID/fd."""
    script = 'import os, time; os.setgroups([]); os.setresgid(%d, %d, %d); os.setresuid(%d, %d, %d); time.sleep(30)' % (
        (NOBODY,) * 6)
    switched = subprocess.Popen(['python3', '-c', script])
    try:
        deadline = time.monotonic() + 5
        while _proc.process_owner(switched.pid)[0] != NOBODY and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _proc.process_owner(switched.pid) == (NOBODY, NOBODY, False)
        assert _proc.process_owner(os.getpid()) == (0, 0, True)
    finally:
        switched.kill()
        switched.wait()
    assert _proc.process_owner(switched.pid) is None


@root_only
def test_a_zombie_that_nobody_may_read_is_gone_not_hidden():
    """A worker that exited and is not reaped yet: /proc/PID/fd turns root's, so its owner is denied it too."""
    # The parent (nobody) forks a child that exits at once, prints its PID and never reaps it.
    script = 'import os, sys, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(30)\n'
    parent = subprocess.Popen(['python3', '-c', script], user=NOBODY, group=NOBODY, extra_groups=[],
                              stdout=subprocess.PIPE)
    try:
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 5
        while not _proc.is_exiting(zombie) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _proc.is_exiting(zombie) and _proc.process_owner(zombie)[:2] == (NOBODY, NOBODY)
        assert not _proc.is_exiting(parent.pid)
        with pytest.raises(OSError) as caught:
            _proc.read_as_owner(zombie, 'fd', lambda: os.listdir('/proc/%d/fd' % zombie))
        assert caught.value.errno == errno.ESRCH and not isinstance(caught.value, _proc.OwnerReadError)
    finally:
        parent.kill()
        parent.wait()

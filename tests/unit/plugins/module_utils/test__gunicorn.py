# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import tempfile
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _proc


@pytest.mark.parametrize('argv, expected', [
    (['/srv/venv/bin/python3', '/srv/venv/bin/gunicorn', 'app:app'], True),
    (['/srv/venv/bin/gunicorn', '-c', 'conf.py'], True),
    (['python3.11', '-u', '-m', 'gunicorn', 'app:app'], True),
    (['/usr/bin/python3', '-W', 'ignore', '/usr/bin/gunicorn'], True),
    (['gunicorn: master [myapp]'], True),
    (['gunicorn: worker [myapp]'], True),
    (['/srv/venv/bin/python3', '-m', 'pytest', 'tests/test_gunicorn_reload.py'], False),
    (['/srv/venv/bin/python3', '/srv/tools/gunicorn_watch.py'], False),
    (['/usr/bin/python3', '-c', 'import gunicorn'], False),
    (['/usr/bin/sleep', '1000'], False),
    ([], False),
])
def test_is_gunicorn_cmdline(argv, expected):
    assert _gunicorn.is_gunicorn_cmdline(argv) is expected


def test_title_role():
    assert _gunicorn.title_role(['gunicorn: master [app]']) == 'master'
    assert _gunicorn.title_role(['gunicorn: worker [app]']) == 'worker'
    assert _gunicorn.title_role(['/venv/bin/gunicorn', 'app:app']) is None


@pytest.mark.parametrize('argv, expected', [
    (['gunicorn', '-p', '/run/a.pid', 'app:app'], '/run/a.pid'),
    (['gunicorn', '--pid', 'a.pid'], 'a.pid'),
    (['gunicorn', '--pid=/run/b.pid'], '/run/b.pid'),
    (['gunicorn', '-p/run/c.pid'], '/run/c.pid'),
    (['gunicorn', '-c', 'conf.py'], None),
])
def test_cmdline_pidfile(argv, expected):
    assert _gunicorn.cmdline_pidfile(argv) == expected


def test_heartbeat_markers_of_both_gunicorn_generations():
    created = 1795340000.0
    # as created by the master: mode 0600, mtime == ctime (unlink and chown move ctime a little)
    assert not _gunicorn.heartbeat_started(0o100600, created, created + 0.002)
    # gunicorn < 21.2: fchmod(fd, 1) then fchmod(fd, 0)
    assert _gunicorn.heartbeat_started(0o100001, created, created + 1.5)
    assert _gunicorn.heartbeat_started(0o100000, created, created + 3.0)
    # gunicorn >= 21.2: utime(fd, time.monotonic())
    assert _gunicorn.heartbeat_started(0o100600, 4510.5, created + 1.5)


def test_heartbeats_of_a_real_process_follow_each_touch(tmp_path):
    fd, name = tempfile.mkstemp(prefix='wgunicorn-', dir=str(tmp_path))
    os.unlink(name)
    try:
        assert list(_gunicorn.heartbeats(os.getpid()).values()) == [False]
        os.utime(fd, (time.monotonic(), time.monotonic()))
        assert list(_gunicorn.heartbeats(os.getpid()).values()) == [True]
    finally:
        os.close(fd)
    fd, name = tempfile.mkstemp(prefix='wgunicorn-', dir=str(tmp_path))
    os.unlink(name)
    try:
        os.fchmod(fd, 1)
        assert list(_gunicorn.heartbeats(os.getpid()).values()) == [True]
    finally:
        os.close(fd)
    assert _gunicorn.heartbeats(os.getpid()) == {}


def test_descriptors_listed_but_not_readable_are_a_permission_error(monkeypatch):
    """Root without CAP_SYS_PTRACE (a container) lists /proc/PID/fd but may not read the links: that must
    not pass for a master without workers."""
    def refuse(path):
        raise OSError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(os, 'readlink', refuse)
    with pytest.raises(OSError) as caught:
        _gunicorn.heartbeats(os.getpid())
    assert caught.value.errno == errno.EACCES


def test_written_files_lists_logs_but_not_read_only_or_deleted_files(tmp_path):
    log = tmp_path / 'error.log'
    readme = tmp_path / 'readme.txt'
    readme.write_text('x')
    with open(str(log), 'a') as written, open(str(readme)) as read_only:
        doomed = open(str(tmp_path / 'doomed.log'), 'w')
        os.unlink(str(tmp_path / 'doomed.log'))
        try:
            found = _gunicorn.written_files(os.getpid())
        finally:
            doomed.close()
        assert str(log) in found
        assert str(readme) not in found
        assert not any('doomed' in path for path in found)
        assert written and read_only


def test_this_process_is_not_a_gunicorn_master():
    assert _gunicorn.inspect_master(os.getpid()) is None
    assert _proc.start_ticks(os.getpid()) > 0
    assert _gunicorn.age_seconds(_proc.start_ticks(os.getpid())) >= 0


def test_parse_version():
    assert _gunicorn.parse_version('version_info = (27, 0, 1)\n__version__ = ".".join(...)') == '27.0.1'
    assert _gunicorn.parse_version('# -*- coding\nversion_info = (20, 1, 0)\n') == '20.1.0'
    assert _gunicorn.parse_version('nothing here') is None
    assert _gunicorn.parse_version(None) is None


def test_site_dirs_from_a_venv_interpreter_and_from_maps(tmp_path):
    venv = tmp_path / 'venv'
    site = venv / 'lib' / 'python3.11' / 'site-packages'
    site.mkdir(parents=True)
    (venv / 'pyvenv.cfg').write_text('home = /usr/bin\n')
    other = tmp_path / 'other' / 'site-packages'
    (other / 'setproctitle').mkdir(parents=True)
    maps = '7f00-7f01 r-xp 00000000 08:01 123 %s/setproctitle/_setproctitle.so\n' % other
    argv = [str(venv / 'bin' / 'python3'), str(venv / 'bin' / 'gunicorn'), 'app:app']
    assert _gunicorn.site_dirs(argv, maps) == [str(other), str(site)]


def test_site_dirs_follow_the_script_shebang(tmp_path):
    venv = tmp_path / 'venv'
    site = venv / 'lib' / 'python3.11' / 'site-packages'
    site.mkdir(parents=True)
    (venv / 'pyvenv.cfg').write_text('home = /usr/bin\n')
    script = venv / 'bin' / 'gunicorn'
    script.parent.mkdir()
    script.write_text('#!%s\nfrom gunicorn.app.wsgiapp import run\n' % (venv / 'bin' / 'python3'))
    assert _gunicorn.site_dirs([str(script), 'app:app'], '') == [str(site)]


def test_find_version_reads_the_installed_package(tmp_path, monkeypatch):
    site = tmp_path / 'venv' / 'lib' / 'python3.11' / 'site-packages'
    (site / 'gunicorn').mkdir(parents=True)
    (site / 'gunicorn' / '__init__.py').write_text('version_info = (23, 0, 0)\n')
    (tmp_path / 'venv' / 'pyvenv.cfg').write_text('')

    class Info:
        cmdline = [str(tmp_path / 'venv' / 'bin' / 'python3'), str(tmp_path / 'venv' / 'bin' / 'gunicorn')]

    class Master:
        pid = os.getpid()
        info = Info()

    assert _gunicorn.find_version(Master()) == '23.0.0'


LOG_27 = '''[2026-11-22 11:45:30 +0000] [3746] [ERROR] Exception in worker process
Traceback (most recent call last):
  File "/tmp/gexp/app.py", line 3, in <module>
    raise RuntimeError("release 2 is broken")
RuntimeError: release 2 is broken
[2026-11-22 11:45:30 +0000] [3746] [INFO] Worker exiting (pid: 3746)
[2026-11-22 11:45:30 +0000] [3743] [ERROR] Worker (pid:3746) exited with code 3.
'''

LOG_20 = '''[2026-11-22 11:45:30 +0000] [3746] [ERROR] Exception in worker process
ModuleNotFoundError: No module named 'flask'
[2026-11-22 11:45:30 +0000] [3743] [INFO] Worker exiting (pid: 3746)
[2026-11-22 11:45:31 +0000] [3743] [INFO] Shutting down: Master
[2026-11-22 11:45:31 +0000] [3743] [INFO] Reason: Worker failed to boot.
'''


LOG_HALT_CRASH = '''ImportError: release v2-broken is broken
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/gunicorn/arbiter.py", line 224, in run
gunicorn.errors.HaltServer: <HaltServer 'Worker failed to boot.' 3>
'''


def test_summarize_log():
    assert _gunicorn.summarize_log(LOG_HALT_CRASH.splitlines()) == (
        3, 'ImportError: release v2-broken is broken; gunicorn: Worker failed to boot')
    assert _gunicorn.summarize_log(LOG_27.splitlines()) == (3, 'RuntimeError: release 2 is broken; a worker failed to boot')
    assert _gunicorn.summarize_log(LOG_20.splitlines()) == (
        3, "ModuleNotFoundError: No module named 'flask'; gunicorn: Worker failed to boot")
    assert _gunicorn.summarize_log(['Error: No module named myconf']) == (None, 'Error: No module named myconf')
    assert _gunicorn.summarize_log(['[x] [1] [INFO] Booting worker with pid: 5']) == (None, None)


def test_summarize_log_keeps_the_worker_error_over_a_logging_reentrancy_error():
    # gunicorn 20.1 once logged this after the broken worker's traceback (clean-clone CI of dc99f2a).
    lines = LOG_HALT_CRASH.splitlines()[:1] + [
        "RuntimeError: reentrant call inside <_io.BufferedWriter name='/run/app/gunicorn.log'>"] + LOG_HALT_CRASH.splitlines()[1:]
    assert _gunicorn.summarize_log(lines) == (
        3, 'ImportError: release v2-broken is broken; gunicorn: Worker failed to boot')
    # Alone, it is still the only error there is to show.
    assert _gunicorn.summarize_log(lines[1:2])[1] == "RuntimeError: reentrant call inside <_io.BufferedWriter name='/run/app/gunicorn.log'>"


def test_summarize_log_ignores_source_lines_named_like_an_error():
    # gunicorn 20.1 in the clean-clone CI of 6ee1e25: logging's own report of the reentrancy accident printed its
    # call stack, whose source line 'self.handleError(record)' had been taken for the cause.
    lines = LOG_HALT_CRASH.splitlines()[:1] + [
        '--- Logging error ---',
        "RuntimeError: reentrant call inside <_io.BufferedWriter name='/run/app/gunicorn.log'>",
        'Call stack:',
        '  File "/usr/lib/python3.11/logging/__init__.py", line 1118, in emit',
        '    self.handleError(record)',
        "Message: 'Worker exiting (pid: %s)'",
        'Arguments: (8347,)'] + LOG_HALT_CRASH.splitlines()[1:]
    assert _gunicorn.summarize_log(lines) == (
        3, 'ImportError: release v2-broken is broken; gunicorn: Worker failed to boot')
    assert _gunicorn.summarize_log(['self.handleError(record)', 'raise ImportError("x")']) == (None, None)
    assert _gunicorn.summarize_log(['StopIteration', 'KeyboardInterrupt']) == (None, None)
    assert _gunicorn.summarize_log(['SystemExit: 3'])[1] == 'SystemExit: 3'


def test_shows_exit():
    assert _gunicorn.shows_exit(LOG_27.splitlines())
    assert _gunicorn.shows_exit(LOG_20.splitlines())
    assert _gunicorn.shows_exit(LOG_HALT_CRASH.splitlines()[-1:])
    assert not _gunicorn.shows_exit(['[2026-11-22 11:45:30 +0000] [3743] [INFO] Handling signal: usr2'])


def test_log_watch_returns_only_what_was_written_afterwards(tmp_path):
    log = tmp_path / 'gunicorn.log'
    log.write_text('old line\n')
    watch = _gunicorn.LogWatch([str(log), str(tmp_path / 'missing.log')])
    assert watch.new_lines() == []
    with open(str(log), 'a') as handle:
        handle.write('new line\n')
    assert watch.new_lines() == ['new line']
    log.write_text('rotated\n')  # truncated: read from the start
    assert watch.new_lines() == ['rotated']


def test_written_files_carry_the_uid_of_the_process_for_the_log_watch(tmp_path):
    log = tmp_path / 'error.log'
    with open(str(log), 'a'):
        found = _gunicorn.written_files(os.getpid())
    assert str(log) in found and found.owner == os.geteuid()
    assert _gunicorn.LogWatch(found).owner == os.geteuid()
    assert _gunicorn.LogWatch(found, owner=1234).owner == 1234


@pytest.mark.timeout(5)
def test_log_watch_notes_a_fifo_at_once_instead_of_blocking(tmp_path):
    log = tmp_path / 'gunicorn.log'
    log.write_text('old line\n')
    watch = _gunicorn.LogWatch([str(log)])
    log.unlink()
    os.mkfifo(str(log), 0o600)
    started = time.monotonic()
    assert watch.new_lines() == ['[graceful.wsgi] log file %s not read: it is a FIFO, not a regular file' % log]
    assert time.monotonic() - started < 1.0
    assert watch.notes == {str(log): 'log file %s not read: it is a FIFO, not a regular file' % log}


def test_log_watch_never_follows_a_symlink_nor_shows_what_it_points_to(tmp_path):
    secret = tmp_path / 'shadow'
    secret.write_text('root:$y$j9T$secret:19000:0:99999:7:::\n')
    log = tmp_path / 'gunicorn.log'
    log.write_text('')
    watch = _gunicorn.LogWatch([str(log)])
    log.unlink()
    log.symlink_to(secret)
    lines = watch.new_lines()
    assert lines == ['[graceful.wsgi] log file %s not read: it is a symbolic link (not followed), not a regular '
                     'file' % log]
    assert 'secret' not in ' '.join(lines)
    # A note is no cause: it is never taken for gunicorn's own error or exit.
    assert _gunicorn.summarize_log(lines) == (None, None) and not _gunicorn.shows_exit(lines)


def test_log_watch_reads_only_logs_of_the_masters_user_or_root(tmp_path):
    log = tmp_path / 'gunicorn.log'
    log.write_text('')
    watch = _gunicorn.LogWatch([str(log)], owner=os.geteuid() + 1000)
    log.write_text('line of the app\n')
    if os.geteuid() == 0:
        assert watch.new_lines() == ['line of the app']  # root's own file
        os.chown(str(log), os.geteuid() + 1000, -1)
        assert watch.new_lines() == ['line of the app']  # the master's user's
        os.chown(str(log), os.geteuid() + 2000, -1)
        other = os.geteuid() + 2000
    else:
        other = os.geteuid()
        watch = _gunicorn.LogWatch([str(log)], owner=other + 1000)
    lines = watch.new_lines()
    assert lines == ["[graceful.wsgi] log file %s not read: it is owned by uid %d, neither the gunicorn master's "
                     "user (uid %d) nor root" % (log, other, watch.owner)]
    assert 'line of the app' not in ' '.join(lines)


def test_log_watch_notes_a_directory_and_a_socket(tmp_path):
    log = tmp_path / 'gunicorn.log'
    watch = _gunicorn.LogWatch([], owner=os.geteuid())
    watch.add([str(log)])
    log.mkdir()
    assert watch.new_lines() == ['[graceful.wsgi] log file %s not read: it is a directory, not a regular file' % log]
    log.rmdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(log))
    try:
        assert watch.new_lines() == ['[graceful.wsgi] log file %s not read: it is a socket, not a regular file' % log]
    finally:
        server.close()
    os.unlink(str(log))
    assert watch.new_lines() == [] and watch.notes == {}  # gone (rotated away): nothing, no note


def test_read_pidfile_errors_name_the_option_and_path(tmp_path):
    missing = str(tmp_path / 'none.pid')
    with pytest.raises(_gunicorn.GunicornError) as caught:
        _gunicorn.identify_master(missing)
    assert str(caught.value).startswith('pidfile=%s does not exist' % missing)
    with pytest.raises(_gunicorn.GunicornError) as caught:
        _gunicorn.identify_master(str(tmp_path))
    assert str(caught.value) == 'pidfile=%s is a directory' % tmp_path


# ---------------------------------------------------------------- pidfile handover

def test_hand_over_pidfile_replaces_the_file_atomically_with_mode_0644(tmp_path):
    pidfile = tmp_path / 'gunicorn.pid'
    pidfile.write_text('100\n')
    os.chmod(str(pidfile), 0o600)
    before = os.stat(str(pidfile)).st_ino
    _gunicorn.hand_over_pidfile(str(pidfile), 203)
    assert pidfile.read_text() == '203\n'
    status = os.stat(str(pidfile))
    assert status.st_ino != before, 'a new file renamed over the old one, not the old one rewritten'
    assert status.st_mode & 0o777 == 0o644
    assert sorted(os.listdir(str(tmp_path))) == ['gunicorn.pid']


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another owner needs root')
def test_hand_over_pidfile_keeps_owner_and_group(tmp_path):
    pidfile = tmp_path / 'gunicorn.pid'
    pidfile.write_text('100\n')
    os.chown(str(pidfile), 4321, 4322)
    _gunicorn.hand_over_pidfile(str(pidfile), 203)
    status = os.stat(str(pidfile))
    assert (status.st_uid, status.st_gid) == (4321, 4322)


def test_hand_over_pidfile_of_a_missing_file_raises_and_writes_nothing(tmp_path):
    with pytest.raises(OSError):
        _gunicorn.hand_over_pidfile(str(tmp_path / 'gunicorn.pid'), 203)
    assert os.listdir(str(tmp_path)) == []


def test_hand_over_pidfile_leaves_no_temporary_file_when_the_rename_fails(tmp_path, monkeypatch):
    pidfile = tmp_path / 'gunicorn.pid'
    pidfile.write_text('100\n')

    def refuse(source, target):
        raise OSError(13, 'Permission denied')

    monkeypatch.setattr(os, 'rename', refuse)
    with pytest.raises(OSError):
        _gunicorn.hand_over_pidfile(str(pidfile), 203)
    assert pidfile.read_text() == '100\n'
    assert sorted(os.listdir(str(tmp_path))) == ['gunicorn.pid']

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc


def make_proc(root, pid, comm, state, ppid, argv):
    base = root / str(pid)
    base.mkdir()
    (base / 'stat').write_text('%d (%s) %s %d 1 1 0 -1\n' % (pid, comm, state, ppid))
    (base / 'cmdline').write_bytes(b'\0'.join(a.encode() for a in argv) + (b'\0' if argv else b''))


def test_parse_stat_handles_parentheses_and_spaces_in_comm():
    assert _proc.parse_stat('42 (my (odd) name) S 7 42 42 0') == ('my (odd) name', 'S', 7)


def test_read_process_and_children(tmp_path):
    make_proc(tmp_path, 10, 'uwsgi', 'S', 1, ['/venv/bin/uwsgi', '--ini', 'app.ini'])
    make_proc(tmp_path, 11, 'uwsgi', 'S', 10, ['/venv/bin/uwsgi', '--ini', 'app.ini'])
    make_proc(tmp_path, 12, 'uwsgi', 'Z', 10, [])
    make_proc(tmp_path, 13, 'sshd', 'S', 1, ['sshd'])
    (tmp_path / 'self').mkdir()
    info = _proc.read_process(10, str(tmp_path))
    assert (info.pid, info.ppid, info.program) == (10, 1, 'uwsgi')
    assert info.describe() == 'pid 10 (/venv/bin/uwsgi --ini app.ini)'
    assert _proc.read_process(12, str(tmp_path)) is None  # zombies are not alive
    assert _proc.read_process(99, str(tmp_path)) is None
    assert _proc.child_pids(10, str(tmp_path)) == [11]


def test_kernel_thread_is_described_by_comm(tmp_path):
    make_proc(tmp_path, 2, 'kthreadd', 'S', 0, [])
    assert _proc.read_process(2, str(tmp_path)).describe() == 'pid 2 ([kthreadd])'


def test_this_process_is_alive():
    assert _proc.is_alive(os.getpid())
    assert os.getpid() in _proc.child_pids(os.getppid())  # the kernel's children list
    assert _proc.read_link(os.getpid(), 'cwd') == os.getcwd()
    assert 'PATH' in _proc.read_environ(os.getpid())


@pytest.mark.parametrize('content, message', [
    ('', 'it is empty'), ('  \n', 'it is empty'), ('abc', 'does not hold a PID'), ('0', 'does not hold a PID'),
    ('-5', 'does not hold a PID'),
])
def test_read_pidfile_rejects(tmp_path, content, message):
    path = tmp_path / 'app.pid'
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        _proc.read_pidfile(str(path))


def test_read_pidfile(tmp_path):
    path = tmp_path / 'app.pid'
    path.write_text('1234\n')
    assert _proc.read_pidfile(str(path)) == 1234


def test_read_pidfile_never_shows_what_a_file_holds(tmp_path):
    path = tmp_path / 'app.pid'
    path.write_text('root:$y$j9T$secret:19000:0:99999:7:::\n')
    with pytest.raises(ValueError) as caught:
        _proc.read_pidfile(str(path))
    assert str(caught.value) == 'it does not hold a PID (not a positive decimal number; its content is not shown)'


@pytest.mark.timeout(5)
def test_read_pidfile_refuses_a_fifo_at_once(tmp_path):
    path = tmp_path / 'app.pid'
    os.mkfifo(str(path), 0o600)
    started = time.monotonic()
    with pytest.raises(ValueError, match='^it is a FIFO, not a regular file$'):
        _proc.read_pidfile(str(path))
    assert time.monotonic() - started < 1.0


def test_read_pidfile_does_not_follow_a_symlink(tmp_path):
    target = tmp_path / 'elsewhere'
    target.write_text('1234\n')
    path = tmp_path / 'app.pid'
    path.symlink_to(target)
    with pytest.raises(ValueError, match=r'^it is a symbolic link \(not followed\), not a regular file$'):
        _proc.read_pidfile(str(path))


def test_read_pidfile_refuses_a_socket_and_a_directory(tmp_path):
    path = str(tmp_path / 'app.pid')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    try:
        with pytest.raises(ValueError, match='^it is a socket, not a regular file$'):
            _proc.read_pidfile(path)
    finally:
        server.close()
    # A directory keeps the OSError that callers already name ("is a directory").
    with pytest.raises(OSError) as caught:
        _proc.read_pidfile(str(tmp_path))
    assert caught.value.errno == errno.EISDIR


def test_read_pidfile_given_its_option_names_option_and_path(tmp_path):
    missing = str(tmp_path / 'none.pid')
    with pytest.raises(_proc.PidfileError) as caught:
        _proc.read_pidfile(missing, 'pidfile', 'server not running')
    assert str(caught.value) == 'pidfile=%s does not exist (server not running)' % missing
    with pytest.raises(_proc.PidfileError) as caught:
        _proc.read_pidfile(missing, 'pidfile')
    assert str(caught.value) == 'pidfile=%s does not exist' % missing
    with pytest.raises(_proc.PidfileError) as caught:
        _proc.read_pidfile(str(tmp_path), 'upgrade pidfile')
    assert str(caught.value) == 'upgrade pidfile=%s is a directory' % tmp_path
    empty = tmp_path / 'app.pid'
    empty.write_text('')
    with pytest.raises(_proc.PidfileError) as caught:
        _proc.read_pidfile(str(empty), 'pidfile')
    assert str(caught.value) == 'pidfile=%s: it is empty' % empty
    empty.write_text('1234\n')
    assert _proc.read_pidfile(str(empty), 'pidfile') == 1234


def test_read_pidfile_and_owner_gives_the_owner_of_the_file_it_read(tmp_path):
    path = tmp_path / 'app.pid'
    path.write_text('1234\n')
    assert _proc.read_pidfile_and_owner(str(path)) == (1234, os.geteuid())
    assert _proc.read_pidfile_and_owner(str(path), owners=[os.geteuid()]) == (1234, os.geteuid())


def test_read_pidfile_refuses_an_owner_it_was_not_given_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / 'app.pid'
    path.write_text('root:$y$j9T$secret:19000:0:99999:7:::\n')
    others = os.geteuid() + 1000, os.geteuid() + 1001
    read = []
    real_read = os.read
    monkeypatch.setattr(os, 'read', lambda fd, size: read.append(fd) or real_read(fd, size))
    with pytest.raises(ValueError) as caught:
        _proc.read_pidfile(str(path), owners=others)
    assert str(caught.value) == 'it is owned by %s, not by %s or %s; it was not read' % tuple(
        _proc.describe_user(uid) for uid in (os.geteuid(),) + others)
    with pytest.raises(_proc.PidfileError) as caught:
        _proc.read_pidfile(str(path), 'pidfile', owners={others[0]: 'expected_user=app (uid %d)' % others[0]})
    expected = 'pidfile=%s: it is owned by %s, not by expected_user=app (uid %d); it was not read' % (
        path, _proc.describe_user(os.geteuid()), others[0])
    assert str(caught.value) == expected and 'secret' not in str(caught.value)
    assert read == [], 'a pidfile of another owner is never read'


@pytest.mark.timeout(5)
def test_read_pidfile_with_owners_refuses_a_fifo_at_once(tmp_path):
    path = tmp_path / 'app.pid'
    os.mkfifo(str(path), 0o600)
    started = time.monotonic()
    with pytest.raises(ValueError, match='^it is a FIFO, not a regular file$'):
        _proc.read_pidfile(str(path), owners=[0, os.geteuid()])
    assert time.monotonic() - started < 1.0


def test_describe_user():
    assert _proc.describe_user(0) == 'root'
    assert _proc.describe_user(65534) in ('nobody (uid 65534)', 'uid 65534')
    assert _proc.describe_user(4294967294) == 'uid 4294967294'


def test_every_reader_looks_under_PROC_when_given_no_root(tmp_path, monkeypatch):
    make_proc(tmp_path, 10, 'gunicorn', 'S', 1, ['gunicorn'])
    fields = ['S', '1'] + ['0'] * 17 + ['50000'] + ['0'] * 10
    (tmp_path / '10' / 'stat').write_text('10 (gunicorn) %s\n' % ' '.join(fields))
    (tmp_path / '10' / 'cgroup').write_text('0::/system.slice/app.service\n')
    (tmp_path / 'uptime').write_text('1000.50 900.00\n')
    monkeypatch.setattr(_proc, 'PROC', str(tmp_path))
    assert _proc.read_process(10).cmdline == ['gunicorn']
    assert _proc.start_ticks(10) == 50000
    assert _proc.uptime() == 1000.5
    assert _proc.read_cgroup(10) == '0::/system.slice/app.service\n'
    assert _proc.proc_path(10, 'fd', '3') == os.path.join(str(tmp_path), '10', 'fd', '3')
    assert _proc.read_process(os.getpid()) is None  # not in the fake tree


def test_descriptors_of_a_process(tmp_path):
    path = tmp_path / 'app.log'
    with open(str(path), 'a') as handle:
        fd = handle.fileno()
        assert str(fd) in _proc.list_fds(os.getpid())
        assert _proc.fd_target(os.getpid(), fd) == str(path)
        assert _proc.fd_status(os.getpid(), fd).st_ino == os.stat(str(path)).st_ino
        assert _proc.fd_flags(os.getpid(), fd) & 3 == os.O_WRONLY
    assert _proc.parse_fdinfo_flags('pos:\t0\nflags:\t0102001\nmnt_id:\t29\n') == 0o102001
    with pytest.raises(ValueError):
        _proc.parse_fdinfo_flags('pos:\t0\n')


@pytest.mark.timeout(5)
def test_read_text_returns_none_for_a_fifo_at_once(tmp_path):
    path = tmp_path / 'app.ini'
    os.mkfifo(str(path), 0o600)
    started = time.monotonic()
    assert _proc.read_text(str(path)) is None
    assert time.monotonic() - started < 1.0


def test_read_text_returns_none_for_a_socket_a_directory_and_a_device(tmp_path):
    path = str(tmp_path / 'app.ini')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    try:
        assert _proc.read_text(path) is None
    finally:
        server.close()
    assert _proc.read_text(str(tmp_path)) is None
    assert _proc.read_text('/dev/zero') is None
    assert _proc.read_text(str(tmp_path / 'missing')) is None


def test_read_text_follows_a_symlink_to_a_regular_file_but_not_to_a_fifo(tmp_path):
    # A venv's interpreter and a vassal config linked into the Emperor's directory are read through symlinks.
    target = tmp_path / 'uwsgi.ini'
    target.write_text('[uwsgi]\nlazy-apps = true\n')
    link = tmp_path / 'vassal.ini'
    link.symlink_to(target)
    assert _proc.read_text(str(link)) == '[uwsgi]\nlazy-apps = true\n'
    fifo = tmp_path / 'fifo'
    os.mkfifo(str(fifo), 0o600)
    to_fifo = tmp_path / 'to-fifo.ini'
    to_fifo.symlink_to(fifo)
    found = []
    reader = threading.Thread(target=lambda: found.append(_proc.read_text(str(to_fifo))))
    reader.daemon = True
    reader.start()
    reader.join(3)
    assert not reader.is_alive(), 'read_text blocked on a FIFO reached through a symlink'
    assert found == [None]


def test_read_text_keeps_its_limit_and_reads_proc_files(tmp_path):
    path = tmp_path / 'big'
    path.write_text('x' * 100)
    assert _proc.read_text(str(path), 10) == 'x' * 10
    # /proc files are regular files of size 0: they are read all the same.
    assert os.stat('/proc/self/stat').st_size == 0
    assert _proc.read_text('/proc/self/stat').startswith('%d (' % os.getpid())
    assert float(_proc.read_text('/proc/uptime').split()[0]) > 0


def test_parse_start_ticks_counts_fields_after_comm():
    fields = ['S', '1'] + ['0'] * 17 + ['123456'] + ['0'] * 10
    assert _proc.parse_start_ticks('42 (gunicorn: worker [app]) %s\n' % ' '.join(fields)) == 123456


def test_start_time_from_ticks_and_uptime(tmp_path):
    make_proc(tmp_path, 10, 'uwsgi', 'S', 1, ['uwsgi'])
    fields = ['S', '1'] + ['0'] * 17 + ['50000'] + ['0'] * 10
    (tmp_path / '10' / 'stat').write_text('10 (uwsgi) %s\n' % ' '.join(fields))
    (tmp_path / 'uptime').write_text('1000.50 900.00\n')
    boot = _proc.boot_time(str(tmp_path), now=2000000000.5)
    assert boot == 1999999000.0
    assert _proc.start_time(10, str(tmp_path), boot=boot) == pytest.approx(boot + 50000 * _proc.clock_tick())
    assert _proc.start_time(11, str(tmp_path), boot=boot) is None
    assert _proc.boot_time(str(tmp_path / 'nowhere')) is None


def test_start_time_of_a_real_process_is_accurate_to_a_tick():
    before = time.time()
    child = subprocess.Popen(['sleep', '30'])
    try:
        after = time.time()
        started = _proc.start_time(child.pid)
    finally:
        child.kill()
        child.wait()
    # Two ticks: one for the start time's resolution, one for /proc/uptime's.
    slack = 2 * _proc.clock_tick()
    assert before - slack <= started <= after + slack


def test_mapped_paths_keeps_files_only():
    maps = '\n'.join([
        '55d0c000-55d0d000 r--p 00000000 08:01 131 /usr/bin/python3.11',
        '55d0d000-55d0e000 r-xp 00001000 08:01 131 /usr/bin/python3.11',
        '7f00-7f01 r--p 00000000 08:01 77    /srv/app/releases/v1/venv/lib/my ext.so',
        '7f01-7f02 r--p 00000000 08:01 78    /srv/app/releases/v0/lib/gone.so (deleted)',
        '7f02-7f03 rw-p 00000000 00:00 0 ',
        '7f03-7f04 rw-p 00000000 00:00 0     [heap]',
        '7ffd-7ffe r-xp 00000000 00:00 0     [vdso]',
    ]) + '\n'
    assert _proc.mapped_paths(maps) == ['/srv/app/releases/v0/lib/gone.so (deleted)',
                                        '/srv/app/releases/v1/venv/lib/my ext.so', '/usr/bin/python3.11']
    assert _proc.mapped_paths('') == []


def test_all_child_pids_reads_every_thread(tmp_path):
    make_proc(tmp_path, 10, 'gunicorn', 'S', 1, ['gunicorn'])
    for task, children in (('10', '11 12'), ('13', '14')):
        (tmp_path / '10' / 'task' / task).mkdir(parents=True)
        (tmp_path / '10' / 'task' / task / 'children').write_text(children)
    assert _proc.all_child_pids(10, str(tmp_path)) == [11, 12, 14]
    assert _proc.all_child_pids(99, str(tmp_path)) == []


def test_all_child_pids_without_children_lists_scans(tmp_path):
    make_proc(tmp_path, 10, 'gunicorn', 'S', 1, ['gunicorn'])
    make_proc(tmp_path, 11, 'gunicorn', 'S', 10, ['gunicorn'])
    (tmp_path / '10' / 'task' / '10').mkdir(parents=True)
    assert _proc.all_child_pids(10, str(tmp_path)) == [11]


def test_read_or_raise_tells_a_gone_process_from_a_hidden_one(tmp_path, monkeypatch):
    assert _proc.read_link_or_raise(os.getpid(), 'cwd') == os.getcwd()
    assert _proc.read_link_or_raise(99, 'cwd', str(tmp_path)) is None
    assert _proc.read_text_or_raise(99, 'maps', str(tmp_path)) is None
    assert os.path.realpath(sys.executable) in _proc.read_text_or_raise(os.getpid(), 'maps')

    def denied(path):
        raise OSError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(os, 'readlink', denied)
    with pytest.raises(OSError) as caught:
        _proc.read_link_or_raise(1, 'cwd')
    assert caught.value.errno == errno.EACCES

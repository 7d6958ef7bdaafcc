# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import threading
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi
from ansible_collections.graceful.wsgi.plugins.module_utils._proc import ProcessInfo
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline
from ansible_collections.graceful.wsgi.tests.unit.plugins.module_utils.clock import FakeClock


def worker(wid, pid, accepting=1, apps=1, respawn_count=1, status='idle', requests=0):
    return {'id': wid, 'pid': pid, 'accepting': accepting, 'requests': requests, 'status': status,
            'respawn_count': respawn_count, 'last_spawn': 0, 'apps': [{'mountpoint': ''}] * apps}


def doc(*workers, **extra):
    document = {'pid': 100, 'version': '2.0.31', 'workers': list(workers)}
    document.update(extra)
    return document


BEFORE = doc(worker(1, 101), worker(2, 102), worker(3, 103), worker(4, 104))


# ------------------------------------------------------------------ addresses and stats

@pytest.mark.parametrize('value, expected', [
    ('/run/app/stats.sock', ('unix', '/run/app/stats.sock')),
    ('stats.sock', ('unix', 'stats.sock')),
    ('127.0.0.1:9191', ('tcp', '127.0.0.1', 9191)),
    (':9191', ('tcp', '127.0.0.1', 9191)),
    ('localhost:1717', ('tcp', 'localhost', 1717)),
    ('[::1]:9191', ('tcp', '::1', 9191)),
    ('/tmp/odd:9191', ('unix', '/tmp/odd:9191')),
])
def test_parse_stats_address(value, expected):
    assert _uwsgi.parse_stats_address(value) == expected


def serve_once(path, payload):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer():
        conn, _addr = server.accept()
        conn.sendall(payload)
        conn.close()
        server.close()

    thread = threading.Thread(target=answer)
    thread.start()
    return thread


def test_read_stats_from_unix_socket(tmp_path):
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, json.dumps(BEFORE).encode())
    assert _uwsgi.read_stats(('unix', path))['pid'] == 100
    thread.join()


def test_read_stats_rejects_non_stats_json(tmp_path):
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, b'{"hello": 1}')
    with pytest.raises(_uwsgi.UwsgiError, match='without "pid" and "workers"'):
        _uwsgi.read_stats(('unix', path))
    thread.join()


def test_read_json_document_reads_the_trailing_comma_of_a_master_running_two_routers(tmp_path):
    # Verbatim shape of uWSGI 2.0.31's FastRouter stats when the same master also runs an HTTP router.
    payload = (b'{\n\t"pid":9987,\n\t"fastrouter":[\n"127.0.0.1:55017",\n"127.0.0.1:33577",\n\n\t],\n'
               b'\t"subscriptions":[{"key":"demo","nodes":[{"name":"127.0.0.1:52525","death_mark":0}]}]\n}')
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, payload)
    document = _uwsgi.read_json_document(('unix', path), label='fastrouter_stats=%s' % path)
    thread.join()
    assert document['fastrouter'] == ['127.0.0.1:55017', '127.0.0.1:33577']
    assert document['subscriptions'][0]['nodes'][0]['name'] == '127.0.0.1:52525'


def test_read_json_document_still_refuses_what_is_not_json(tmp_path):
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, b'HTTP/1.0 200 OK\r\n\r\nhello')
    with pytest.raises(_uwsgi.UwsgiError, match=r'fastrouter_stats=.*: answered 24 bytes that are not JSON'):
        _uwsgi.read_json_document(('unix', path), label='fastrouter_stats=%s' % path)
    thread.join()


def test_read_stats_names_missing_socket(tmp_path):
    path = str(tmp_path / 'missing.sock')
    with pytest.raises(_uwsgi.UwsgiError, match='stats=%s: no such socket' % path):
        _uwsgi.read_stats(('unix', path))


def test_read_stats_times_out_on_silent_server(tmp_path):
    path = str(tmp_path / 'silent.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        with pytest.raises(_uwsgi.UwsgiError, match=r'no complete answer within 0.2s \(0 bytes arrived;'):
            _uwsgi.read_stats(('unix', path), timeout=0.2)
    finally:
        server.close()


class TricklingSocket:
    """A stats server sending one byte per recv(), each a second after the last, on a fake clock."""

    def __init__(self, clock, payload=b'{"pid": 100, "workers": []}'):
        self.clock = clock
        self.payload = payload
        self.timeouts = []

    def settimeout(self, seconds):
        self.timeouts.append(seconds)

    def recv(self, size):
        if self.timeouts[-1] < 1.0:
            self.clock.sleep(self.timeouts[-1])
            raise socket.timeout('timed out')
        self.clock.sleep(1.0)
        byte, self.payload = self.payload[:1], self.payload[1:]
        return byte


def test_receive_until_closed_bounds_the_whole_read_not_each_recv():
    clock = FakeClock()
    sock = TricklingSocket(clock)
    deadline = Deadline(2.5, clock)
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.receive_until_closed(sock, deadline, 'stats=/run/app/stats.sock')
    assert str(caught.value) == ('stats=/run/app/stats.sock: no complete answer within 2.5s (2 bytes arrived; '
                                 'instance hung or not a uWSGI stats server)')
    assert sock.timeouts == [2.5, 1.5, 0.5]
    assert clock.now == 2.5


def test_receive_until_closed_returns_what_a_server_sends_before_closing():
    clock = FakeClock()
    sock = TricklingSocket(clock, b'{}')
    assert _uwsgi.receive_until_closed(sock, Deadline(10, clock), 'stats=x') == b'{}'
    assert clock.now == 3.0


def test_receive_until_closed_refuses_an_endless_answer():
    clock = FakeClock()
    sock = TricklingSocket(clock, b'x' * 100)
    with pytest.raises(_uwsgi.UwsgiError, match='^stats=x: answered more than 10 bytes without closing'):
        _uwsgi.receive_until_closed(sock, Deadline(1000, clock), 'stats=x', limit=10)


def test_read_stats_fails_in_time_on_a_server_trickling_bytes(tmp_path):
    path = str(tmp_path / 'trickle.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    stop = threading.Event()

    def trickle():
        conn, _addr = server.accept()
        try:
            while not stop.wait(0.02):
                conn.sendall(b' ')
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=trickle)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(_uwsgi.UwsgiError, match=r'no complete answer within 0.3s \([1-9][0-9]* bytes arrived;'):
            _uwsgi.read_stats(('unix', path), timeout=0.3)
        assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        thread.join()
        server.close()


def test_read_stats_refused_tcp():
    probe = socket.socket()
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(_uwsgi.UwsgiError, match='127.0.0.1:%d: connection refused' % port):
        _uwsgi.read_stats(('tcp', '127.0.0.1', port))


def test_summaries():
    assert _uwsgi.workers_summary(BEFORE)[0] == {'id': 1, 'pid': 101, 'accepting': True, 'requests': 0}
    info = _uwsgi.instance_summary(doc(worker(1, 101, apps=0)))
    assert info['master_pid'] == 100
    assert info['workers'][0]['apps_loaded'] == 0


def test_live_workers_skips_empty_and_cheaped_slots():
    document = doc(worker(1, 101), worker(2, 0), worker(3, 103, status='cheap'))
    assert [w['id'] for w in _uwsgi.live_workers(document)] == [1]


# ------------------------------------------------------------------ FIFO and touch file

def test_fifo_without_reader_fails_at_once(tmp_path):
    path = str(tmp_path / 'master.fifo')
    os.mkfifo(path, 0o600)
    with pytest.raises(_uwsgi.UwsgiError, match='master_fifo=%s: no process reads this FIFO' % path):
        _uwsgi.fifo_command(path, 'c')


def test_fifo_command_is_written(tmp_path):
    path = str(tmp_path / 'master.fifo')
    os.mkfifo(path, 0o600)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        _uwsgi.fifo_command(path, 'c')
        assert os.read(reader, 10) == b'c'
    finally:
        os.close(reader)


def test_fifo_path_checks(tmp_path):
    regular = tmp_path / 'regular'
    regular.write_text('x')
    with pytest.raises(_uwsgi.UwsgiError, match='not a FIFO \\(a regular file\\)'):
        _uwsgi.check_fifo(str(regular))
    with pytest.raises(_uwsgi.UwsgiError, match='does not exist'):
        _uwsgi.check_fifo(str(tmp_path / 'nope'))


def test_a_symlink_to_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / 'elsewhere.fifo'
    os.mkfifo(str(fifo), 0o600)
    link = tmp_path / 'master.fifo'
    link.symlink_to(fifo)
    with pytest.raises(_uwsgi.UwsgiError, match=r'^master_fifo=%s: not a FIFO \(a symbolic link\)$' % link):
        _uwsgi.fifo_command(str(link), 'c')


@pytest.mark.parametrize('swap', ['symlink', 'regular'])
def test_a_fifo_swapped_after_its_check_gets_nothing_written(tmp_path, monkeypatch, swap):
    """The instance's user owns the FIFO's directory and may replace the FIFO between the check and the open."""
    target = tmp_path / 'precious'
    target.write_text('untouched')
    path = tmp_path / 'master.fifo'
    os.mkfifo(str(path), 0o600)
    check = _uwsgi.check_fifo

    def check_then_swap(fifo_path):
        check(fifo_path)
        path.unlink()
        if swap == 'symlink':
            path.symlink_to(target)
        else:
            path.write_text('untouched')

    monkeypatch.setattr(_uwsgi, 'check_fifo', check_then_swap)
    expected = '(a symbolic link, not followed)' if swap == 'symlink' else '(a regular file); nothing written'
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.fifo_command(str(path), 'c')
    assert str(caught.value) == 'master_fifo=%s: not a FIFO %s' % (path, expected)
    assert target.read_text() == 'untouched'
    if swap == 'regular':
        assert path.read_text() == 'untouched'


def test_touch_file_checks_and_touches(tmp_path):
    target = tmp_path / 'reload.touch'
    target.write_text('')
    os.utime(str(target), (1, 1))
    _uwsgi.touch(str(target))
    assert target.stat().st_mtime > 1
    with pytest.raises(_uwsgi.UwsgiError, match='touch_file=.*: does not exist'):
        _uwsgi.touch(str(tmp_path / 'missing'))
    with pytest.raises(_uwsgi.UwsgiError, match='not a regular file \\(a directory\\)'):
        _uwsgi.touch(str(tmp_path))


def test_a_touch_file_that_is_a_symlink_is_refused_and_its_target_keeps_its_mtime(tmp_path):
    target = tmp_path / 'shadow'
    target.write_text('')
    os.utime(str(target), (1, 1))
    path = tmp_path / 'reload.touch'
    path.symlink_to(target)
    for call in (_uwsgi.check_touch_file, _uwsgi.touch):
        with pytest.raises(_uwsgi.UwsgiError) as caught:
            call(str(path))
        assert str(caught.value) == 'touch_file=%s: not a regular file (a symbolic link, not followed)' % path
    assert target.stat().st_mtime == 1


@pytest.mark.timeout(5)
def test_a_touch_file_that_is_a_fifo_fails_at_once(tmp_path):
    path = tmp_path / 'reload.touch'
    os.mkfifo(str(path), 0o600)
    started = time.monotonic()
    with pytest.raises(_uwsgi.UwsgiError, match=r'^touch_file=%s: not a regular file \(a FIFO\)$' % path):
        _uwsgi.touch(str(path))
    assert time.monotonic() - started < 1.0


@pytest.mark.timeout(5)
@pytest.mark.parametrize('swap', ['symlink', 'fifo', 'fifo with a reader'])
def test_a_touch_file_swapped_after_its_check_is_not_touched(tmp_path, monkeypatch, swap):
    target = tmp_path / 'shadow'
    target.write_text('')
    os.utime(str(target), (1, 1))
    path = tmp_path / 'reload.touch'
    path.write_text('')
    check = _uwsgi.check_touch_file
    readers = []

    def check_then_swap(touch_path):
        check(touch_path)
        path.unlink()
        if swap == 'symlink':
            path.symlink_to(target)
        else:
            os.mkfifo(str(path), 0o600)
            if swap == 'fifo with a reader':
                readers.append(os.open(str(path), os.O_RDONLY | os.O_NONBLOCK))

    monkeypatch.setattr(_uwsgi, 'check_touch_file', check_then_swap)
    kind = 'a symbolic link, not followed' if swap == 'symlink' else 'a FIFO'
    started = time.monotonic()
    try:
        with pytest.raises(_uwsgi.UwsgiError) as caught:
            _uwsgi.touch(str(path))
    finally:
        for fd in readers:
            os.close(fd)
    assert str(caught.value) == 'touch_file=%s: not a regular file (%s); nothing touched' % (path, kind)
    assert time.monotonic() - started < 1.0
    assert target.stat().st_mtime == 1


# ------------------------------------------------------------------ identity and options

def test_looks_like_uwsgi():
    assert _uwsgi.looks_like_uwsgi(ProcessInfo(1, 0, 'S', ['/venv/bin/uwsgi', '--ini', 'a.ini'], 'uwsgi'))
    assert _uwsgi.looks_like_uwsgi(ProcessInfo(1, 0, 'S', ['uWSGI master'], 'uWSGI master'))
    assert _uwsgi.looks_like_uwsgi(ProcessInfo(1, 0, 'S', ['myapp master'], 'myapp'), exe='/usr/bin/uwsgi-core')
    assert not _uwsgi.looks_like_uwsgi(ProcessInfo(1, 0, 'S', ['/usr/sbin/sshd', '-D'], 'sshd'), exe='/usr/sbin/sshd')


@pytest.mark.parametrize('value, workers, expected', [
    (1, 4, 1), ('2', 4, 2), (9, 4, 4), ('50%', 4, 2), ('25%', 4, 1), ('10%', 4, 1), ('100%', 4, 4), ('75%', 3, 2),
])
def test_resolve_max_unavailable(value, workers, expected):
    assert _uwsgi.resolve_max_unavailable(value, workers) == expected


@pytest.mark.parametrize('value', [0, '-1', 'two', '0%', '150%', '%', '1.5'])
def test_resolve_max_unavailable_rejects(value):
    with pytest.raises(ValueError, match='max_unavailable=%s' % value):
        _uwsgi.resolve_max_unavailable(value, 4)


# ------------------------------------------------------------------ the proof

def test_tracker_done_only_when_every_worker_is_new_and_accepting():
    tracker = _uwsgi.ReloadTracker(BEFORE)
    midway = doc(worker(1, 201, respawn_count=2), worker(2, 202, accepting=0, apps=0, respawn_count=2),
                 worker(3, 103), worker(4, 104))
    assert tracker.observe(midway, draining={2}) == ('waiting', None)
    assert tracker.pending == [2, 3, 4]
    assert tracker.min_accepting == 3
    done = doc(*(worker(i, 200 + i, respawn_count=2) for i in range(1, 5)))
    assert tracker.observe(done) == ('done', None)


def test_tracker_counts_draining_workers_as_unavailable():
    tracker = _uwsgi.ReloadTracker(BEFORE)
    tracker.observe(BEFORE, draining={1, 2})
    assert tracker.min_accepting == 2


def test_tracker_flags_new_worker_without_app():
    tracker = _uwsgi.ReloadTracker(BEFORE)
    broken = doc(worker(1, 201, accepting=1, apps=0, respawn_count=2), worker(2, 102), worker(3, 103), worker(4, 104))
    verdict, message = tracker.observe(broken)
    assert verdict == 'broken'
    assert 'worker 1 (pid 201) respawned without an application (respawn_count 2)' in message


def test_tracker_ignores_loading_worker_and_empty_slot():
    tracker = _uwsgi.ReloadTracker(BEFORE)
    # Between death and respawn the slot shows pid 0 with stale flags; while loading, accepting is 0.
    assert tracker.observe(doc(worker(1, 0, accepting=1, apps=0), worker(2, 102), worker(3, 103), worker(4, 104)))[0] == 'waiting'
    assert tracker.observe(doc(worker(1, 201, accepting=0, apps=0, respawn_count=2), worker(2, 102), worker(3, 103), worker(4, 104)))[0] == 'waiting'


def test_tracker_flags_crash_loop():
    tracker = _uwsgi.ReloadTracker(BEFORE)
    looping = doc(worker(1, 0, accepting=0, apps=0, respawn_count=5), worker(2, 102), worker(3, 103), worker(4, 104))
    verdict, message = tracker.observe(looping)
    assert verdict == 'broken'
    assert 'worker 1 keeps respawning: respawn_count 5' in message


def test_tracker_rebases_respawn_counts_after_master_reexec():
    before = doc(*(worker(i, 100 + i, respawn_count=7) for i in range(1, 5)))
    tracker = _uwsgi.ReloadTracker(before)
    after = doc(*(worker(i, 300 + i, respawn_count=1) for i in range(1, 5)))
    assert tracker.observe(after) == ('done', None)


def test_tracker_describes_what_is_missing():
    tracker = _uwsgi.ReloadTracker(BEFORE)
    snapshot = doc(worker(1, 201, accepting=0, apps=0, respawn_count=2), worker(2, 0), worker(3, 103, status='busy'),
                   worker(4, 204, respawn_count=2))
    tracker.observe(snapshot)
    text = tracker.describe_pending(snapshot)
    assert 'worker 1 has new pid 201, not accepting yet' in text
    assert 'worker 2 is not running' in text
    assert 'worker 3 still runs the old pid 103 (status busy)' in text
    assert 'worker 4' not in text

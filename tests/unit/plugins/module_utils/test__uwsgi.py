# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import pwd
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
# The stats server of the socket tests is this process: an answer naming another master is not trusted.
SERVED = doc(worker(1, 101), pid=os.getpid())
# Whose control files these tests trust besides root's: the user running them, who creates them.
SERVICE = _uwsgi.ServiceUser(os.geteuid(), 'the user running the tests')


def foreign_owner(path):
    """Make ``path`` belong to neither root nor the returned ServiceUser: a third user, as another user's file
    in the instance's directory would. As root the file is given away; otherwise the service is someone else."""
    if os.geteuid() == 0:
        os.chown(str(path), 4321, 4321, follow_symlinks=False)
        return _uwsgi.ServiceUser(4322, 'the test instance')
    return _uwsgi.ServiceUser(os.geteuid() + 1, 'the test instance')


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
        try:
            conn.sendall(payload)
        except OSError:
            pass  # the client refused the server before reading its answer
        conn.close()
        server.close()

    thread = threading.Thread(target=answer)
    thread.start()
    return thread


def test_read_stats_from_unix_socket(tmp_path):
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, json.dumps(SERVED).encode())
    assert _uwsgi.read_stats(('unix', path))['pid'] == os.getpid()
    thread.join()


def test_read_stats_refuses_an_answer_naming_another_master_than_its_server(tmp_path):
    """Anyone may serve a socket answering with the pid of a uWSGI master of root's: that pid is not taken."""
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, json.dumps(doc(worker(1, 101), pid=1)).encode())
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.read_stats(('unix', path))
    thread.join()
    assert str(caught.value) == (
        'stats=%s: served by pid %d of %s, but its answer names master pid 1: not the stats server of a uWSGI '
        'master (in another PID namespace, or an impostor); not trusted'
        % (path, os.getpid(), _uwsgi.describe_uid(os.geteuid())))


def test_read_json_document_of_an_emperor_or_router_needs_no_master_pid(tmp_path):
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, b'{"pid": 1, "vassals": []}')
    assert _uwsgi.read_json_document(('unix', path), label='emperor_stats=%s' % path) == {'pid': 1, 'vassals': []}
    thread.join()


def listening(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(0.2)
    return server


def assert_never_connected(server):
    with pytest.raises(socket.timeout):
        server.accept()[0].close()


def test_a_symlink_in_place_of_the_stats_socket_is_refused_without_connecting(tmp_path):
    """connect() follows a symlink: the app user could lead root to any server's socket through one."""
    server = listening(tmp_path / 'real.sock')
    link = tmp_path / 'stats.sock'
    link.symlink_to(tmp_path / 'real.sock')
    try:
        for read in (_uwsgi.read_stats, _uwsgi.read_json_document):
            with pytest.raises(_uwsgi.UwsgiError) as caught:
                read(('unix', str(link)))
            assert str(caught.value) == 'stats=%s: a symbolic link, not followed (name the socket itself)' % link
        assert_never_connected(server)
    finally:
        server.close()


def test_a_hard_link_of_a_socket_is_refused_without_connecting(tmp_path):
    server = listening(tmp_path / 'elsewhere.sock')
    link = tmp_path / 'stats.sock'
    os.link(str(tmp_path / 'elsewhere.sock'), str(link))
    try:
        with pytest.raises(_uwsgi.UwsgiError, match=r'^stats=%s: has 2 hard links \(a socket uWSGI binds has one '
                                                    r'name; this one also has another elsewhere\); not trusted$' % link):
            _uwsgi.read_stats(('unix', str(link)))
        assert_never_connected(server)
    finally:
        server.close()


def test_a_regular_file_as_the_stats_socket_is_named(tmp_path):
    path = tmp_path / 'stats.sock'
    path.write_text('{"pid": 1, "workers": []}')
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.read_stats(('unix', str(path)))
    assert str(caught.value) == 'stats=%s: connection refused: not a socket (a regular file)' % path


def test_a_server_of_another_user_than_the_socket_file_is_not_read(tmp_path, monkeypatch):
    """What the path showed before the connect was swapped for another user's socket (root's, say) in between:
    the kernel's word on who serves the connection is checked against the owner of the file checked."""
    path = str(tmp_path / 's.sock')
    thread = serve_once(path, json.dumps(SERVED).encode())
    server_uid = os.geteuid() + 1
    real = _uwsgi.peer_credentials

    def another_users(sock):
        peer = real(sock)
        assert peer.pid == os.getpid() and peer.uid == os.geteuid()  # the kernel's word, before the substitution
        return _uwsgi.Peer(peer.pid, server_uid, peer.gid)

    monkeypatch.setattr(_uwsgi, 'peer_credentials', another_users)
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.read_stats(('unix', path))
    thread.join()
    owner, server = _uwsgi.describe_uid(os.geteuid()), _uwsgi.describe_uid(server_uid)
    assert str(caught.value) == (
        'stats=%s: the socket file is owned by %s, but the server reached through it is pid %d of %s: not the '
        'server that made it; not trusted' % (path, owner, os.getpid(), server))


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
    with pytest.raises(_uwsgi.UwsgiError, match='stats=%s: Not a directory' % (tmp_path / 'f' / 's.sock')):
        (tmp_path / 'f').write_text('')
        _uwsgi.read_stats(('unix', str(tmp_path / 'f' / 's.sock')))


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
    with pytest.raises(_uwsgi.NotReady, match='master_fifo=%s: no process reads this FIFO' % path):
        _uwsgi.fifo_command(path, 'c', SERVICE)
    with pytest.raises(_uwsgi.NotReady, match='master_fifo=%s: does not exist' % (tmp_path / 'gone')):
        _uwsgi.fifo_command(str(tmp_path / 'gone'), 'c', SERVICE)


def test_fifo_command_is_written(tmp_path):
    path = str(tmp_path / 'master.fifo')
    os.mkfifo(path, 0o600)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        _uwsgi.fifo_command(path, 'c', SERVICE)
        assert os.read(reader, 10) == b'c'
    finally:
        os.close(reader)


def test_fifo_path_checks(tmp_path):
    regular = tmp_path / 'regular'
    regular.write_text('x')
    with pytest.raises(_uwsgi.UwsgiError, match='not a FIFO \\(a regular file\\)'):
        _uwsgi.check_fifo(str(regular), SERVICE)
    with pytest.raises(_uwsgi.UwsgiError, match='does not exist'):
        _uwsgi.check_fifo(str(tmp_path / 'nope'), SERVICE)


def test_a_symlink_to_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / 'elsewhere.fifo'
    os.mkfifo(str(fifo), 0o600)
    link = tmp_path / 'master.fifo'
    link.symlink_to(fifo)
    with pytest.raises(_uwsgi.UwsgiError, match=r'^master_fifo=%s: not a FIFO \(a symbolic link\)$' % link) as caught:
        _uwsgi.fifo_command(str(link), 'c', SERVICE)
    assert not isinstance(caught.value, _uwsgi.NotReady), 'a refusal is final: retrying gives an attacker more tries'


@pytest.mark.parametrize('swap', ['symlink', 'regular'])
def test_a_fifo_swapped_after_its_check_gets_nothing_written(tmp_path, monkeypatch, swap):
    """The instance's user owns the FIFO's directory and may replace the FIFO between the check and the open."""
    target = tmp_path / 'precious'
    target.write_text('untouched')
    path = tmp_path / 'master.fifo'
    os.mkfifo(str(path), 0o600)
    check = _uwsgi.check_fifo

    def check_then_swap(fifo_path, service):
        check(fifo_path, service)
        path.unlink()
        if swap == 'symlink':
            path.symlink_to(target)
        else:
            path.write_text('untouched')

    monkeypatch.setattr(_uwsgi, 'check_fifo', check_then_swap)
    expected = '(a symbolic link, not followed)' if swap == 'symlink' else '(a regular file); nothing written'
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.fifo_command(str(path), 'c', SERVICE)
    assert str(caught.value) == 'master_fifo=%s: not a FIFO %s' % (path, expected)
    assert target.read_text() == 'untouched'
    if swap == 'regular':
        assert path.read_text() == 'untouched'


def test_touch_file_checks_and_touches(tmp_path):
    target = tmp_path / 'reload.touch'
    target.write_text('')
    os.utime(str(target), (1, 1))
    _uwsgi.touch(str(target), SERVICE)
    assert target.stat().st_mtime > 1
    with pytest.raises(_uwsgi.UwsgiError, match='touch_file=.*: does not exist'):
        _uwsgi.touch(str(tmp_path / 'missing'), SERVICE)
    with pytest.raises(_uwsgi.UwsgiError, match='not a regular file \\(a directory\\)'):
        _uwsgi.touch(str(tmp_path), SERVICE)


def test_a_touch_file_that_is_a_symlink_is_refused_and_its_target_keeps_its_mtime(tmp_path):
    target = tmp_path / 'shadow'
    target.write_text('')
    os.utime(str(target), (1, 1))
    path = tmp_path / 'reload.touch'
    path.symlink_to(target)
    for call in (_uwsgi.check_touch_file, _uwsgi.touch):
        with pytest.raises(_uwsgi.UwsgiError) as caught:
            call(str(path), SERVICE)
        assert str(caught.value) == 'touch_file=%s: not a regular file (a symbolic link, not followed)' % path
    assert target.stat().st_mtime == 1


@pytest.mark.timeout(5)
def test_a_touch_file_that_is_a_fifo_fails_at_once(tmp_path):
    path = tmp_path / 'reload.touch'
    os.mkfifo(str(path), 0o600)
    started = time.monotonic()
    with pytest.raises(_uwsgi.UwsgiError, match=r'^touch_file=%s: not a regular file \(a FIFO\)$' % path):
        _uwsgi.touch(str(path), SERVICE)
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

    def check_then_swap(touch_path, service):
        check(touch_path, service)
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
            _uwsgi.touch(str(path), SERVICE)
    finally:
        for fd in readers:
            os.close(fd)
    assert str(caught.value) == 'touch_file=%s: not a regular file (%s); nothing touched' % (path, kind)
    assert time.monotonic() - started < 1.0
    assert target.stat().st_mtime == 1


def stat_of(uid, nlink=1):
    return os.stat_result((0o10600, 1, 1, nlink, uid, uid, 0, 0, 0, 0))


def test_ownership_problem_trusts_root_and_the_service_user_only():
    service = _uwsgi.ServiceUser(4322, 'the user of the uWSGI master, pid 7')
    assert _uwsgi.ownership_problem(stat_of(0), service) is None
    assert _uwsgi.ownership_problem(stat_of(4322), service) is None
    assert _uwsgi.ownership_problem(stat_of(4321), service) == (
        'owned by uid 4321, neither root nor uid 4322 (the user of the uWSGI master, pid 7)')
    run_by_root = _uwsgi.ServiceUser(0, 'the user of the uWSGI master, pid 7')
    assert _uwsgi.ownership_problem(stat_of(4321), run_by_root) == (
        'owned by uid 4321, not by root (the user of the uWSGI master, pid 7)')
    assert _uwsgi.ownership_problem(stat_of(0, nlink=2), service) == (
        'has 2 hard links (a control file has one name; this one also has another elsewhere)')


def test_describe_uid_names_the_user_when_there_is_one():
    assert _uwsgi.describe_uid(0) == 'root'
    named = pwd.getpwall()[-1]
    if named.pw_uid != 0:
        assert _uwsgi.describe_uid(named.pw_uid) == '%s (uid %d)' % (named.pw_name, named.pw_uid)
    unnamed = max(entry.pw_uid for entry in pwd.getpwall()) + 1
    assert _uwsgi.describe_uid(unnamed) == 'uid %d' % unnamed


@pytest.fixture
def fifo_with_reader(tmp_path):
    """A FIFO someone reads: without the checks, root's write would reach it."""
    path = tmp_path / 'master.fifo'
    os.mkfifo(str(path), 0o600)
    reader = os.open(str(path), os.O_RDONLY | os.O_NONBLOCK)
    yield path, reader
    os.close(reader)


def unread(reader):
    try:
        return os.read(reader, 10)
    except BlockingIOError:
        return b''


def test_a_fifo_of_another_user_gets_nothing_written(fifo_with_reader):
    path, reader = fifo_with_reader
    service = foreign_owner(path)
    owner = _uwsgi.describe_uid(os.lstat(str(path)).st_uid)
    for call in (lambda: _uwsgi.check_fifo(str(path), service), lambda: _uwsgi.fifo_command(str(path), 'c', service)):
        with pytest.raises(_uwsgi.UwsgiError) as caught:
            call()
        assert str(caught.value) == 'master_fifo=%s: owned by %s, neither root nor %s' % (path, owner, service.describe())
        assert not isinstance(caught.value, _uwsgi.NotReady)
    assert unread(reader) == b''


def test_a_fifo_of_another_user_put_in_place_after_the_check_gets_nothing_written(fifo_with_reader, monkeypatch):
    """Whatever passed the check by path, the descriptor opened is checked again: its owner too."""
    path, reader = fifo_with_reader
    service = foreign_owner(path)
    monkeypatch.setattr(_uwsgi, 'check_fifo', lambda fifo_path, checked_service: None)  # passed on what was there
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.fifo_command(str(path), 'c', service)
    assert str(caught.value) == 'master_fifo=%s: owned by %s, neither root nor %s; nothing written' % (
        path, _uwsgi.describe_uid(os.lstat(str(path)).st_uid), service.describe())
    assert unread(reader) == b''


def test_a_hard_linked_fifo_swapped_in_after_the_check_gets_nothing_written(tmp_path, fifo_with_reader, monkeypatch):
    """A hard link is how a FIFO of someone else's (one root's daemon reads, say) would get into the directory."""
    path, reader = fifo_with_reader
    theirs = tmp_path / 'theirs.fifo'
    os.mkfifo(str(theirs), 0o600)
    os.link(str(theirs), str(tmp_path / 'their-other-name.fifo'))
    their_reader = os.open(str(theirs), os.O_RDONLY | os.O_NONBLOCK)
    check = _uwsgi.check_fifo

    def check_then_swap(fifo_path, service):
        check(fifo_path, service)
        os.rename(str(theirs), str(path))

    monkeypatch.setattr(_uwsgi, 'check_fifo', check_then_swap)
    try:
        with pytest.raises(_uwsgi.UwsgiError) as caught:
            _uwsgi.fifo_command(str(path), 'c', SERVICE)
        assert str(caught.value) == ('master_fifo=%s: has 2 hard links (a control file has one name; this one also '
                                     'has another elsewhere); nothing written' % path)
        assert unread(their_reader) == b'' and unread(reader) == b''
    finally:
        os.close(their_reader)


def test_a_touch_file_of_another_user_or_with_two_names_is_not_touched(tmp_path, monkeypatch):
    path = tmp_path / 'reload.touch'
    path.write_text('')
    os.utime(str(path), (1, 1))
    service = foreign_owner(path)
    message = 'touch_file=%s: owned by %s, neither root nor %s' % (
        path, _uwsgi.describe_uid(os.lstat(str(path)).st_uid), service.describe())
    for call in (_uwsgi.check_touch_file, _uwsgi.touch):
        with pytest.raises(_uwsgi.UwsgiError) as caught:
            call(str(path), service)
        assert str(caught.value) == message
    # Put in place after the check: refused on the descriptor.
    monkeypatch.setattr(_uwsgi, 'check_touch_file', lambda touch_path, checked_service: None)
    with pytest.raises(_uwsgi.UwsgiError) as caught:
        _uwsgi.touch(str(path), service)
    assert str(caught.value) == message + '; nothing touched'
    monkeypatch.undo()
    linked = tmp_path / 'linked.touch'
    linked.write_text('')
    os.utime(str(linked), (1, 1))
    os.link(str(linked), str(tmp_path / 'shadow'))
    with pytest.raises(_uwsgi.UwsgiError, match=r'^touch_file=%s: has 2 hard links' % linked):
        _uwsgi.touch(str(linked), SERVICE)
    assert os.stat(str(path)).st_mtime == 1 and os.stat(str(linked)).st_mtime == 1


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

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import socket
import tempfile
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _haproxy
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules import fake_haproxy
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.fake_haproxy import FakeHaproxy, server


@pytest.fixture
def socket_dir(monkeypatch):
    """A short directory for sockets (a unix socket path has at most 107 bytes; tmp_path can be longer)."""
    monkeypatch.setattr(_haproxy, 'TRUSTED_UID', os.geteuid())
    directory = tempfile.mkdtemp(prefix='lbs-')
    yield directory
    shutil.rmtree(directory)


def captured(path):
    with open(path) as handle:
        return handle.read()


SHOP = {'shop': [server('app1'), server('app2', '10.0.0.12', admin=1, op_state=0, status='MAINT'),
                 server('app3', '10.0.0.13', admin=8, status='DRAIN', sessions=2)],
        'other': [server('app1', '10.0.1.11')]}


# ---------------------------------------------------------------- parsing HAProxy 2.6.12's own answer

def test_the_captured_answer_of_haproxy_2_6_maps_each_server():
    answers = _haproxy.split_answers(captured(fake_haproxy.CAPTURED_ANSWER))
    states = _haproxy.parse_servers_state(answers[0], 'shop')
    stats = _haproxy.parse_stat(answers[1], 'shop')
    assert sorted(states) == sorted(stats) == ['app1', 'app2', 'app3', 'app4', 'app5', 'app6']
    reports = dict((name, _haproxy.server_report(states[name], stats[name])) for name in states)

    assert reports['app1'] == dict(state='enabled', detail='ready (status UP, 0 open sessions)', admin='READY',
                                   status='UP', weight=1, sessions=0, address='127.0.0.1:18791')
    # community.general.haproxy state=disabled drain=true: drain, then "disable server".
    assert reports['app2']['state'] == 'drained' and reports['app2']['admin'] == 'MAINT'
    assert reports['app2']['detail'] == ('in maintenance: disabled through the admin socket (status MAINT, '
                                         '0 open sessions)')
    assert (reports['app3']['state'], reports['app3']['admin'], reports['app3']['status']) == (
        'drained', 'DRAIN', 'DRAIN')
    assert reports['app3']['detail'].startswith('draining: set to drain through the admin socket')
    assert (reports['app4']['state'], reports['app4']['admin'], reports['app4']['weight']) == ('drained', 'READY', 0)
    assert reports['app4']['detail'] == 'weight 0: no new sessions (status UP, 0 open sessions)'
    # Enabled, but its health check fails: HAProxy's status says DOWN.
    assert (reports['app5']['state'], reports['app5']['status']) == ('enabled', 'DOWN')
    assert reports['app5']['detail'].endswith('its health check fails, so HAProxy sends it nothing until it passes')
    assert reports['app6']['detail'].startswith('in maintenance: disabled in the configuration')
    assert reports['app6']['state'] == 'drained'


def test_the_captured_answer_for_an_unknown_backend_fails_naming_it():
    answers = _haproxy.split_answers(captured(fake_haproxy.CAPTURED_NO_BACKEND))
    with pytest.raises(_haproxy.HaproxyError) as caught:
        _haproxy.parse_servers_state(answers[0], 'nosuch')
    assert str(caught.value) == 'backend=nosuch: HAProxy has no such backend'


@pytest.mark.parametrize('flags, expected', [
    (0, 'READY'), (0x01, 'MAINT'), (0x02, 'MAINT'), (0x05, 'MAINT'), (0x08, 'DRAIN'), (0x09, 'MAINT'),
    (0x10, 'DRAIN'), (0x20, 'MAINT'),
    # "disabled" in the configuration stays set once the server is enabled; the FQDN flag is no state at all.
    (0x04, 'READY'), (0x40, 'READY'), (0x44, 'READY'),
])
def test_admin_state_reads_the_bit_field_as_haproxy_does(flags, expected):
    assert _haproxy.admin_state(flags) == expected


def test_a_server_without_a_stat_line_is_described_by_its_operational_state():
    row = dict(srv_name='app1', srv_addr='10.0.0.11', srv_port='8000', srv_op_state='2', srv_admin_state='0',
               srv_uweight='1')
    assert _haproxy.server_report(row) == dict(state='enabled', detail='ready (status running)', admin='READY',
                                               status=None, weight=1, sessions=None, address='10.0.0.11:8000')


def test_split_answers_cuts_at_empty_lines():
    assert _haproxy.split_answers('1\n# be_id x\n\n# pxname,svname\na,b\n\n') == [
        ['1', '# be_id x'], ['# pxname,svname', 'a,b']]
    assert _haproxy.split_answers('') == []


def test_an_answer_that_is_not_the_servers_state_is_quoted_briefly():
    with pytest.raises(_haproxy.HaproxyError) as caught:
        _haproxy.parse_servers_state(['Unknown command, but maybe one of the following ones is a better match:',
                                      '  show fd'], 'shop')
    assert str(caught.value) == ("backend=shop: unexpected answer to \"show servers state shop\": 'Unknown command, "
                                 "but maybe one of the following ones is a better match:'")
    with pytest.raises(_haproxy.HaproxyError, match='unexpected answer to "show stat"'):
        _haproxy.parse_stat(['Permission denied'], 'shop')


def test_a_short_state_line_is_refused():
    with pytest.raises(_haproxy.HaproxyError, match='has 3 fields, the header 25'):
        _haproxy.parse_servers_state(['1', fake_haproxy.STATE_HEADER, '3 shop 1'], 'shop')


# ---------------------------------------------------------------- the exchange on a real unix socket

def test_read_backend_asks_once_and_reports_only_that_backend(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, SHOP) as fake:
        reports = _haproxy.read_backend(path, 'shop', 2)
    assert fake.commands == ['show servers state shop;show stat'] and fake.connections == 1
    assert sorted(reports) == ['app1', 'app2', 'app3']
    assert reports['app1']['address'] == '10.0.0.11:8000' and reports['app1']['state'] == 'enabled'
    assert (reports['app2']['state'], reports['app2']['status']) == ('drained', 'MAINT')
    assert (reports['app3']['state'], reports['app3']['sessions']) == ('drained', 2)
    assert reports['app3']['detail'] == ('draining: set to drain through the admin socket (status DRAIN, '
                                         '2 open sessions)')


def test_read_backend_of_an_unknown_backend_fails(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, SHOP):
        with pytest.raises(_haproxy.HaproxyError) as caught:
            _haproxy.read_backend(path, 'nosuch', 2)
    assert str(caught.value) == 'backend=nosuch: HAProxy has no such backend'


def test_read_backend_of_the_captured_answer(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, canned=fake_haproxy.CAPTURED_ANSWER):
        reports = _haproxy.read_backend(path, 'shop', 2)
    assert dict((name, report['state']) for name, report in reports.items()) == {
        'app1': 'enabled', 'app2': 'drained', 'app3': 'drained', 'app4': 'drained', 'app5': 'enabled',
        'app6': 'drained'}


def elapsed_failure(path, timeout=0.5):
    started = time.monotonic()
    with pytest.raises(_haproxy.HaproxyError) as caught:
        _haproxy.exchange(path, 'show stat', timeout)
    return str(caught.value), time.monotonic() - started


def test_a_socket_that_never_answers_fails_at_the_deadline(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, SHOP, mode='hang'):
        message, elapsed = elapsed_failure(path)
    assert message == ("socket=%s: no complete answer within 0.5s (0 bytes arrived; HAProxy hung, or not HAProxy's "
                       "admin socket)" % path)
    assert 0.45 <= elapsed < 1.5


def test_an_answer_trickling_a_byte_at_a_time_fails_at_the_deadline_not_per_read(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    # Each byte arrives well within the timeout; only a deadline on the whole read stops it.
    with FakeHaproxy(path, SHOP, mode='trickle', trickle_interval=0.02):
        message, elapsed = elapsed_failure(path)
    assert message.startswith('socket=%s: no complete answer within 0.5s (' % path)
    assert int(message.split('(')[1].split()[0]) > 5  # bytes did arrive
    assert 0.45 <= elapsed < 1.5


def test_a_connect_that_blocks_counts_against_the_same_deadline(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, SHOP, mode='backlog'):
        # Fill the listener's queue: the next connect blocks until the listener accepts, which it never does.
        fillers = []
        try:
            while True:
                filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                filler.setblocking(False)
                fillers.append(filler)
                filler.connect(path)
        except (BlockingIOError, socket.error):
            pass
        try:
            message, elapsed = elapsed_failure(path)
        finally:
            for filler in fillers:
                filler.close()
    assert message == ('socket=%s: HAProxy did not accept the connection within 0.5s (its listen queue is full: '
                       'HAProxy hung or overloaded)' % path)
    assert 0.45 <= elapsed < 1.5


def test_an_endless_answer_is_cut_off(socket_dir, monkeypatch):
    monkeypatch.setattr(_haproxy, 'MAX_ANSWER_BYTES', 100000)
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, SHOP, mode='flood'):
        message, elapsed = elapsed_failure(path, timeout=5)
    assert message == ("socket=%s: answered more than 100000 bytes without closing (not HAProxy's admin socket?)"
                       % path)
    assert elapsed < 2


def test_a_socket_that_closes_without_a_word(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, SHOP, mode='close'):
        with pytest.raises(_haproxy.HaproxyError) as caught:
            _haproxy.read_backend(path, 'shop', 2)
    assert str(caught.value) == "socket=%s: closed without answering (not HAProxy's admin socket?)" % path


def test_no_socket(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    message, elapsed = elapsed_failure(path)
    assert message == ('socket=%s: no such socket (is HAProxy running, with this "stats socket" in its global '
                       'section?)' % path)
    assert elapsed < 0.1


def test_a_socket_nobody_listens_on_is_refused(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(path)
    left.close()  # the file stays, as after HAProxy died
    message, elapsed = elapsed_failure(path)
    assert message == 'socket=%s: connection refused (HAProxy not running, or restarting)' % path
    assert elapsed < 0.1


def test_a_symlink_to_the_socket_is_not_followed(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    link = os.path.join(socket_dir, 'link.sock')
    os.symlink(path, link)
    with FakeHaproxy(path, SHOP) as fake:
        message, _elapsed = elapsed_failure(link)
    assert message == 'socket=%s: is a symbolic link; the admin socket is never reached through one' % link
    assert fake.connections == 0


def test_a_regular_file_is_not_a_socket(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    with open(path, 'w') as handle:
        handle.write('secret\n')
    message, _elapsed = elapsed_failure(path)
    assert message == 'socket=%s: is a regular file, not a socket' % path


def test_a_fifo_is_not_a_socket_and_does_not_block(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    os.mkfifo(path)
    message, elapsed = elapsed_failure(path)
    assert message == 'socket=%s: is a FIFO, not a socket' % path
    assert elapsed < 0.1


@pytest.mark.skipif(os.geteuid() != 0, reason='giving the socket to another user needs root')
def test_a_socket_another_user_owns_is_not_trusted(socket_dir, monkeypatch):
    monkeypatch.setattr(_haproxy, 'TRUSTED_UID', 0)
    path = os.path.join(socket_dir, 'admin.sock')
    with FakeHaproxy(path, SHOP) as fake:
        os.lchown(path, 65534, 65534)
        message, _elapsed = elapsed_failure(path)
    assert message == "socket=%s: is owned by uid 65534, not root; not trusted as HAProxy's admin socket" % path
    assert fake.connections == 0


def test_without_o_path_the_socket_is_checked_with_lstat(socket_dir, monkeypatch):
    monkeypatch.delattr(os, 'O_PATH')
    path = os.path.join(socket_dir, 'admin.sock')
    link = os.path.join(socket_dir, 'link.sock')
    os.symlink(path, link)
    with FakeHaproxy(path, SHOP) as fake:
        assert _haproxy.open_socket_path(path) == (None, path)
        reports = _haproxy.read_backend(path, 'shop', 2)
        message, _elapsed = elapsed_failure(link)
    assert sorted(reports) == ['app1', 'app2', 'app3'] and fake.connections == 1
    assert message == 'socket=%s: is a symbolic link; the admin socket is never reached through one' % link


def test_the_checked_descriptor_is_closed(socket_dir):
    path = os.path.join(socket_dir, 'admin.sock')
    before = len(os.listdir('/proc/self/fd'))
    with FakeHaproxy(path, SHOP):
        for _attempt in range(5):
            _haproxy.read_backend(path, 'shop', 2)
        with pytest.raises(_haproxy.HaproxyError):
            _haproxy.read_backend(path, 'nosuch', 2)
    assert len(os.listdir('/proc/self/fd')) <= before

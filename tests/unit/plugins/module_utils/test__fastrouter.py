# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import stat

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _fastrouter


def test_subscription_packet_is_what_a_vassal_sends():
    packet = _fastrouter.subscription_packet('shop', '127.0.0.1:3031', _fastrouter.UNSUBSCRIBE)
    body = (b'\x03\x00key\x04\x00shop' b'\x07\x00address\x0e\x00127.0.0.1:3031'
            b'\x09\x00modifier1\x01\x000' b'\x09\x00modifier2\x01\x000')
    assert packet == bytes([224, len(body), 0, 1]) + body


def test_send_packet_sends_one_datagram_to_each_server_and_names_the_ones_it_cannot_reach(tmp_path):
    path = str(tmp_path / 'subscription.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        packet = _fastrouter.subscription_packet('shop', '/run/shop/shop-1.sock', _fastrouter.UNSUBSCRIBE)
        missing = str(tmp_path / 'missing.sock')
        assert _fastrouter.send_packet(packet, [path, missing], 1.0) == ['%s: No such file or directory' % missing]
        assert server.recv(4096) == packet
    finally:
        server.close()


def bound_datagram_socket(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    return server


def assert_nothing_received(server):
    try:
        data = server.recv(4096)
    except BlockingIOError:
        return
    raise AssertionError('a datagram arrived: %r' % data)


def test_a_symlink_in_place_of_the_subscription_socket_is_not_followed(tmp_path):
    """Protected: the socket a symlink in the FastRouter's directory points to (syslog's, systemd's) gets nothing
    from root. Left: the target untouched, the error naming the server."""
    elsewhere = bound_datagram_socket(tmp_path / 'elsewhere.sock')
    (tmp_path / 'run').mkdir(mode=0o750)
    link = tmp_path / 'run' / 'subscription.sock'
    link.symlink_to(tmp_path / 'elsewhere.sock')
    try:
        packet = _fastrouter.subscription_packet('shop', '127.0.0.1:3031', _fastrouter.UNSUBSCRIBE)
        assert _fastrouter.send_packet(packet, [str(link)], 1.0) == [
            '%s: not a socket (a symbolic link, not followed); nothing sent' % link]
        assert_nothing_received(elsewhere)
    finally:
        elsewhere.close()


@pytest.mark.timeout(10)
def test_a_fifo_in_place_of_the_subscription_socket_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / 'subscription.sock'
    os.mkfifo(str(fifo))
    packet = _fastrouter.subscription_packet('shop', '127.0.0.1:3031', _fastrouter.UNSUBSCRIBE)
    assert _fastrouter.send_packet(packet, [str(fifo)], 1.0) == ['%s: not a socket (a FIFO); nothing sent' % fifo]


def test_a_socket_in_a_directory_others_may_write_to_is_refused(tmp_path):
    shared = tmp_path / 'shared'
    shared.mkdir()
    shared.chmod(0o770)
    server = bound_datagram_socket(shared / 'subscription.sock')
    try:
        packet = _fastrouter.subscription_packet('shop', '127.0.0.1:3031', _fastrouter.UNSUBSCRIBE)
        errors = _fastrouter.send_packet(packet, [str(shared / 'subscription.sock')], 1.0)
        assert errors == ['%s: its directory (mode 0770) is writable by others than its owner (uid %d), who could '
                          'have put any socket there; nothing sent' % (shared / 'subscription.sock', os.getuid())]
        assert_nothing_received(server)
    finally:
        server.close()


def status(mode, uid):
    return os.stat_result((mode, 1, 1, 1, uid, uid, 0, 0, 0, 0))


@pytest.mark.parametrize('file_status, directory_status, expected', [
    (status(stat.S_IFSOCK | 0o750, 1000), status(stat.S_IFDIR | 0o750, 1000), None),
    (status(stat.S_IFSOCK | 0o755, 0), status(stat.S_IFDIR | 0o700, 0), None),
    # /dev/log hard-linked into the app's runtime directory: root's socket in the app's directory.
    (status(stat.S_IFSOCK | 0o666, 0), status(stat.S_IFDIR | 0o750, 1000),
     "a socket of uid 0 in the directory of uid 1000: not that user's own socket (a hard link to another one?); "
     "nothing sent"),
    (status(stat.S_IFSOCK | 0o750, 1000), status(stat.S_IFDIR | 0o1777, 0),
     'its directory (mode 1777) is writable by others than its owner (uid 0), who could have put any socket '
     'there; nothing sent'),
    (status(stat.S_IFLNK | 0o777, 1000), status(stat.S_IFDIR | 0o750, 1000),
     'not a socket (a symbolic link, not followed); nothing sent'),
    (status(stat.S_IFREG | 0o640, 1000), status(stat.S_IFDIR | 0o750, 1000),
     'not a socket (a regular file); nothing sent'),
])
def test_subscription_socket_problem(file_status, directory_status, expected):
    assert _fastrouter.subscription_socket_problem(file_status, directory_status) == expected

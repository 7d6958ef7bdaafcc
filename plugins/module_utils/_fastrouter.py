# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""uWSGI FastRouter subscriptions: the nodes its stats list, and the packet its subscription server reads.

Private to the collection: the interface may change without notice.
Facts relied on (uWSGI 2.0, core/subscription.c, plugins/corerouter), checked against 2.0.21 and 2.0.31:

* the FastRouter's stats list ``subscriptions[].nodes[]`` with ``name`` (the address the vassal
  subscribed with), ``death_mark`` (1 once unsubscribed), ``ref`` (its sessions) and ``last_check``;
  an unsubscribed node is dropped once its last session ends;
* a subscription is one datagram to the subscription server: a uwsgi packet with modifier1 224 and
  modifier2 the command (0 subscribe, 1 unsubscribe), whose vars carry ``key`` and ``address``;
* the subscription server (``fastrouter-subscription-server``) is a UDP socket when its address holds a ``:``,
  else a unix datagram socket bound at that path (any file there is unlinked first, the path is cut at 102
  bytes, the mode is the umask's: uWSGI sets none). Without ``subscriptions-sign-check`` the server takes every
  packet it reads: the socket's permissions are then its only guard.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import stat
import struct

from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi


# ---------------------------------------------------------------- stats

def fastrouter_nodes(document):
    """Every subscribed node by the address it subscribed with (a live one wins over a dead one)."""
    nodes = {}
    for subscription in document.get('subscriptions') or []:
        for node in (subscription or {}).get('nodes') or []:
            if not isinstance(node, dict) or 'name' not in node:
                continue
            node = dict(node, key=subscription.get('key'))
            name = str(node['name'])
            if name not in nodes or not node_live(nodes[name]):
                nodes[name] = node
    return nodes


def node_live(node):
    return node is not None and not node.get('death_mark')


# ---------------------------------------------------------------- the subscription server

SUBSCRIPTION_MODIFIER1 = 224
SUBSCRIBE = 0
UNSUBSCRIBE = 1


def _uwsgi_var(name, value):
    name, value = name.encode('utf-8'), str(value).encode('utf-8')
    return struct.pack('<H', len(name)) + name + struct.pack('<H', len(value)) + value


def subscription_packet(key, address, command):
    """A subscription packet as a vassal sends it (uwsgi packet, modifier1 224, modifier2 the command)."""
    body = _uwsgi_var('key', key) + _uwsgi_var('address', address) + _uwsgi_var('modifier1', 0) + \
        _uwsgi_var('modifier2', 0)
    return struct.pack('<BHB', SUBSCRIPTION_MODIFIER1, len(body), command) + body


def send_packet(packet, servers, timeout):
    """Send ``packet`` to each subscription server (a unix socket path or ``host:port``), each send bounded by
    ``timeout`` seconds; returns the errors, one per server it could not be sent to (nothing is sent to a unix
    socket that fails the checks of ``open_subscription_socket``)."""
    errors = []
    for server in servers:
        address = _uwsgi.parse_stats_address(server)
        fd = None
        try:
            if address[0] == 'unix':
                fd, family, target = open_subscription_socket(address[1])
            else:
                family, target = _uwsgi.socket_target(address)
            _send_datagram(packet, family, target, timeout)
        except SubscriptionServerError as exc:
            errors.append('%s: %s' % (server, exc))
        except socket.timeout:
            errors.append('%s: no room to send within %.1fs (the subscription server reads nothing)'
                          % (server, timeout))
        except (IOError, OSError) as exc:
            errors.append('%s: %s' % (server, exc.strerror or exc))
        finally:
            if fd is not None:
                os.close(fd)
    return errors


def _send_datagram(packet, family, target, timeout):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    # A unix datagram blocks its sender while the receiver's queue is full (a router that reads nothing).
    sock.settimeout(timeout)
    try:
        sock.sendto(packet, target)
    finally:
        sock.close()


class SubscriptionServerError(Exception):
    """A unix socket path that is not the subscription server's socket it should be; nothing was sent."""


def open_subscription_socket(path):
    """(fd or None, AF_UNIX, sendto target) for the subscription server's socket ``path``, checked first.

    The socket usually sits in the FastRouter's runtime directory, which its (unprivileged) user owns and may
    fill with anything: a symlink or a hard link to another socket (syslog's, systemd's) would make root send
    there, with root's credentials. So the socket is opened with O_PATH|O_NOFOLLOW relative to its directory,
    and both are checked (``subscription_socket_problem``); the datagram then goes through /proc/self/fd, to the
    very socket checked even if the path is swapped in between. Without O_PATH (not Linux) the path is checked
    with lstat and sent to by name. Raises SubscriptionServerError or OSError.
    """
    directory, name = os.path.split(path)
    directory = directory or '.'
    o_path = getattr(os, 'O_PATH', None)
    if o_path is None or not os.path.isdir('/proc/self/fd'):
        problem = subscription_socket_problem(os.lstat(path), os.stat(directory))
        if problem:
            raise SubscriptionServerError(problem)
        return None, socket.AF_UNIX, path
    dir_fd = os.open(directory, o_path | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(name, o_path | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            problem = subscription_socket_problem(os.fstat(fd), os.fstat(dir_fd))
            if problem:
                raise SubscriptionServerError(problem)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(dir_fd)
    return fd, socket.AF_UNIX, '/proc/self/fd/%d' % fd


def subscription_socket_problem(status, directory_status):
    """Why a file (its lstat) in a directory (its stat) is not to be sent to as a subscription server, or None.

    It must be a socket, owned by its directory's owner, in a directory no one else may write to: only that
    owner then can have put it there (the FastRouter's user, in its runtime directory). Another user's socket in
    it is a hard link (anyone may link a socket they may write to, such as /dev/log) or was put there by root.
    """
    if not stat.S_ISSOCK(status.st_mode):
        return 'not a socket (%s); nothing sent' % _file_kind(status.st_mode)
    if directory_status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return ('its directory (mode %04o) is writable by others than its owner (uid %d), who could have put '
                'any socket there; nothing sent' % (stat.S_IMODE(directory_status.st_mode), directory_status.st_uid))
    if status.st_uid != directory_status.st_uid:
        return ("a socket of uid %d in the directory of uid %d: not that user's own socket (a hard link to "
                "another one?); nothing sent" % (status.st_uid, directory_status.st_uid))
    return None


def _file_kind(mode):
    for test, name in ((stat.S_ISLNK, 'a symbolic link, not followed'), (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISREG, 'a regular file'), (stat.S_ISDIR, 'a directory'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return 'file type %o' % stat.S_IFMT(mode)

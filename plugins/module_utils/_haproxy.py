# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""HAProxy's admin socket: whether the load balancer sends each server of a backend traffic.

Private to the collection: the interface may change without notice.
Facts relied on (HAProxy 2.6, doc/management.txt and include/haproxy/server-t.h; checked against 2.6.12):

* on a stats socket in non-interactive mode HAProxy runs the commands of one line, separated by ``;``, writes
  each one's answer followed by an empty line, and closes the connection;
* ``show servers state <backend>`` answers a version line (``1``), a header line ``# be_id be_name srv_id
  srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight ...`` and one line of space-separated
  fields per server; an unknown backend gets ``Can't find backend.``;
* ``srv_admin_state`` is a bit field: 0x01 forced maintenance (``disable server``, ``set server ... state
  maint``), 0x02 maintenance inherited from a tracked server, 0x04 ``disabled`` in the configuration (it stays
  set once the server is enabled, so it says nothing about now), 0x08 forced drain (``set server ... state
  drain``), 0x10 drain inherited, 0x20 maintenance after a failed address resolution, 0x40 FQDN changed;
* ``srv_uweight`` is the weight set at run time (``set weight``): 0 sends the server no new sessions;
* ``show stat`` answers CSV under a header ``# pxname,svname,...``; a server's ``status`` is what the stats page
  shows (``UP``, ``DOWN``, ``MAINT``, ``DRAIN``, ``NOLB``, ``no check``, ``UP 1/2``, ``MAINT (via b/s)``...),
  ``scur`` its open sessions.

community.general.haproxy state=disabled drain=true sets the drain, waits for the sessions to end, then
``disable server`` (which clears the drain flag: admin state 0x01); state=enabled clears both (admin state 0).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import csv
import errno
import os
import socket
import stat
import time

from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline

# The admin socket is trusted only when root owns it: HAProxy creates it as root before dropping privileges.
TRUSTED_UID = 0

# show stat of a load balancer with thousands of servers is a few megabytes.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

ADMF_FMAINT = 0x01
ADMF_IMAINT = 0x02
ADMF_CMAINT = 0x04
ADMF_FDRAIN = 0x08
ADMF_IDRAIN = 0x10
ADMF_RMAINT = 0x20
ADMF_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT
ADMF_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN

OP_STATES = {0: 'stopped', 1: 'starting', 2: 'running', 3: 'stopping'}

STATE_HEADER = '# be_id '
STAT_HEADER = '# pxname,'
NO_BACKEND = "Can't find backend."


class HaproxyError(Exception):
    """The state cannot be read; the message names the option and the path or backend."""


# ---------------------------------------------------------------- the socket

def _kind(mode):
    for test, name in ((stat.S_ISLNK, 'a symbolic link'), (stat.S_ISREG, 'a regular file'),
                       (stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return 'not a socket'


def check_socket_mode(path, st):
    """HaproxyError unless ``st`` (from lstat or fstat) is a socket that root owns."""
    if stat.S_ISLNK(st.st_mode):
        raise HaproxyError('socket=%s: is a symbolic link; the admin socket is never reached through one' % path)
    if not stat.S_ISSOCK(st.st_mode):
        raise HaproxyError('socket=%s: is %s, not a socket' % (path, _kind(st.st_mode)))
    if st.st_uid != TRUSTED_UID:
        raise HaproxyError('socket=%s: is owned by uid %d, not root; not trusted as HAProxy\'s admin socket'
                           % (path, st.st_uid))


def _describe_socket_error(exc):
    code = getattr(exc, 'errno', None)
    if code == errno.ENOENT:
        return 'no such socket (is HAProxy running, with this "stats socket" in its global section?)'
    if code == errno.ECONNREFUSED:
        return 'connection refused (HAProxy not running, or restarting)'
    if code in (errno.EACCES, errno.EPERM):
        return 'permission denied (run as root)'
    if code == errno.ENOTDIR:
        return 'a component of the path is not a directory'
    if code in (errno.ECONNRESET, errno.EPIPE):
        return 'the connection was closed before the answer (not HAProxy\'s admin socket?)'
    return str(exc)


def open_socket_path(path):
    """(fd or None, connect target) for the socket ``path``, checked without following a symlink.

    On Linux the path is opened with O_PATH|O_NOFOLLOW, the descriptor checked, and the connection made through
    /proc/self/fd: the socket connected to is the one checked, even if the path is swapped in between. Elsewhere
    the path is checked with lstat and connected to by name.
    """
    o_path = getattr(os, 'O_PATH', None)
    if o_path is not None and os.path.isdir('/proc/self/fd'):
        try:
            fd = os.open(path, o_path | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise HaproxyError('socket=%s: %s' % (path, _describe_socket_error(exc)))
        try:
            check_socket_mode(path, os.fstat(fd))
        except Exception:
            os.close(fd)
            raise
        return fd, '/proc/self/fd/%d' % fd
    try:
        check_socket_mode(path, os.lstat(path))
    except OSError as exc:
        raise HaproxyError('socket=%s: %s' % (path, _describe_socket_error(exc)))
    return None, path


def _no_complete_answer(path, timeout, received):
    return ('socket=%s: no complete answer within %gs (%d bytes arrived; HAProxy hung, or not HAProxy\'s admin '
            'socket)' % (path, timeout, received))


def connect(sock, target, deadline, path, sleep=time.sleep):
    """Connect before ``deadline``. A unix socket whose listen queue is full refuses a connect with EAGAIN at once
    (with a timeout set, the socket does not block): it is tried again until the deadline."""
    while True:
        sock.settimeout(max(deadline.remaining(), 0.001))
        try:
            sock.connect(target)
            return
        except (IOError, OSError) as exc:
            if getattr(exc, 'errno', None) not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise
        remaining = deadline.remaining()
        if remaining <= 0:
            raise HaproxyError('socket=%s: HAProxy did not accept the connection within %gs (its listen queue is '
                               'full: HAProxy hung or overloaded)' % (path, deadline.seconds))
        sleep(min(0.02, remaining))


def exchange(path, command, timeout, clock=time.monotonic, sleep=time.sleep):
    """HAProxy's answer to ``command`` (one line) on the admin socket ``path``, as text.

    ``timeout`` bounds the whole exchange: connect, send and every read. A socket timeout alone bounds each
    recv(), and an answer arriving a byte at a time would hold the read for ever.
    """
    deadline = Deadline(timeout, clock)
    fd, target = open_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    received = 0
    chunks = []
    try:
        connect(sock, target, deadline, path, sleep)
        sock.settimeout(max(deadline.remaining(), 0.001))
        sock.sendall(command.encode('utf-8') + b'\n')
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise socket.timeout()
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
            if received > MAX_ANSWER_BYTES:
                raise HaproxyError('socket=%s: answered more than %d bytes without closing (not HAProxy\'s admin '
                                   'socket?)' % (path, MAX_ANSWER_BYTES))
            chunks.append(chunk)
    except socket.timeout:
        raise HaproxyError(_no_complete_answer(path, timeout, received))
    except (IOError, OSError) as exc:
        raise HaproxyError('socket=%s: %s' % (path, _describe_socket_error(exc)))
    finally:
        sock.close()
        if fd is not None:
            os.close(fd)
    return b''.join(chunks).decode('utf-8', 'replace')


# ---------------------------------------------------------------- the answers

def split_answers(text):
    """The answers of the commands of one line: each ends with an empty line."""
    answers = []
    current = []
    for line in text.split('\n'):
        if line.strip():
            current.append(line)
        elif current:
            answers.append(current)
            current = []
    if current:
        answers.append(current)
    return answers


def _first_line(lines):
    line = lines[0] if lines else '(nothing)'
    return line if len(line) <= 120 else line[:117] + '...'


def parse_servers_state(lines, backend):
    """{server name: {column: value}} from the lines of ``show servers state <backend>``.

    HaproxyError for an unknown backend or an answer that is not the servers' state.
    """
    if lines and lines[0].strip() == NO_BACKEND:
        raise HaproxyError('backend=%s: HAProxy has no such backend' % backend)
    header = None
    servers = {}
    for line in lines:
        if line.startswith(STATE_HEADER):
            header = line[2:].split()
            continue
        if header is None:
            if line.strip().isdigit():
                continue  # the format version
            break
        fields = line.split()
        if len(fields) < len(header):
            raise HaproxyError('backend=%s: a line of "show servers state" has %d fields, the header %d'
                               % (backend, len(fields), len(header)))
        row = dict(zip(header, fields))
        if row.get('be_name') == backend:
            servers[row['srv_name']] = row
    if header is None:
        raise HaproxyError('backend=%s: unexpected answer to "show servers state %s": %r'
                           % (backend, backend, _first_line(lines)))
    return servers


def parse_stat(lines, backend):
    """{server name: {column: value}} of the servers of ``backend`` in the CSV of ``show stat``."""
    if not lines or not lines[0].startswith(STAT_HEADER):
        raise HaproxyError('backend=%s: unexpected answer to "show stat": %r' % (backend, _first_line(lines)))
    rows = csv.DictReader([lines[0][2:]] + lines[1:])
    return dict((row['svname'], row) for row in rows
                if row.get('pxname') == backend and row.get('svname') not in ('FRONTEND', 'BACKEND'))


def _int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def admin_state(flags):
    """MAINT, DRAIN or READY for the bit field srv_admin_state (HAProxy's own reading of it)."""
    if flags & ADMF_MAINT:
        return 'MAINT'
    if flags & ADMF_DRAIN:
        return 'DRAIN'
    return 'READY'


def _admin_reason(flags):
    if flags & ADMF_FMAINT:
        if flags & ADMF_CMAINT:
            return 'in maintenance: disabled in the configuration'
        return 'in maintenance: disabled through the admin socket'
    if flags & ADMF_IMAINT:
        return 'in maintenance: inherited from the server it tracks'
    if flags & ADMF_RMAINT:
        return 'in maintenance: its address could not be resolved'
    if flags & ADMF_FDRAIN:
        return 'draining: set to drain through the admin socket'
    return 'draining: inherited from the server it tracks'


def server_report(state_row, stat_row=None):
    """What lb_state returns for one server: state (enabled or drained), detail, admin, status, weight,
    sessions, address."""
    flags = _int(state_row.get('srv_admin_state'), 0)
    weight = _int(state_row.get('srv_uweight'))
    op_state = _int(state_row.get('srv_op_state'))
    status = stat_row.get('status') if stat_row else None
    sessions = _int(stat_row.get('scur')) if stat_row else None
    address = state_row.get('srv_addr')
    if address and state_row.get('srv_port') not in (None, '0', '-'):
        address = '%s:%s' % (address, state_row['srv_port'])
    admin = admin_state(flags)
    seen = 'status %s' % (status or OP_STATES.get(op_state, 'unknown'))
    if sessions is not None:
        seen += ', %d open session%s' % (sessions, '' if sessions == 1 else 's')
    if admin != 'READY':
        state, detail = 'drained', '%s (%s)' % (_admin_reason(flags), seen)
    elif weight == 0:
        state, detail = 'drained', 'weight 0: no new sessions (%s)' % seen
    else:
        state = 'enabled'
        detail = 'ready (%s)' % seen
        if op_state == 0:
            detail += '; its health check fails, so HAProxy sends it nothing until it passes'
    return dict(state=state, detail=detail, admin=admin, status=status, weight=weight, sessions=sessions,
                address=address)


def read_backend(path, backend, timeout, clock=time.monotonic):
    """{server name: server_report} of every server of ``backend``, from one exchange on the admin socket."""
    answers = split_answers(exchange(path, 'show servers state %s;show stat' % backend, timeout, clock))
    if not answers:
        raise HaproxyError('socket=%s: closed without answering (not HAProxy\'s admin socket?)' % path)
    states = parse_servers_state(answers[0], backend)
    stats = parse_stat(answers[1], backend) if len(answers) > 1 else {}
    return dict((name, server_report(row, stats.get(name))) for name, row in states.items())

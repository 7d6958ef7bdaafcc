# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""uWSGI control: stats server, master FIFO, touch files, and the proof that a reload finished.

Private to the collection: the interface may change without notice.
Facts relied on (uWSGI 2.0, core/master_utils.c and core/master.c):

* the stats server sends one JSON document and closes; ``pid`` is the master,
  ``workers[]`` carries ``id``, ``pid``, ``accepting``, ``respawn_count``, ``apps``;
* the master resets ``accepting`` to 0 before forking a worker, and the worker
  sets it to 1 only after loading its apps, so a new PID that accepts with an
  empty ``apps`` list failed to load the application;
* a worker receiving SIGHUP finishes its requests and exits; the master
  respawns it (with lazy-apps the new worker imports the code afresh);
* the master FIFO executes one command per byte; opening it for writing
  without a reader fails with ENXIO instead of blocking when O_NONBLOCK is set;
  the master unlinks and recreates it (mkfifo, so owned by the master's user, one
  link) after every writer closes it;
* the master binds and listens on its stats socket itself, in its main loop (after
  it took its configured user): the peer credentials of a connection to it are the
  master's pid and uid, and the socket file is owned by that uid, with one link.

The control paths usually sit in the instance's runtime directory, which belongs to
the instance's (unprivileged) user: anything found there is checked on what was
opened (the descriptor, or the connected peer) before root acts on it or trusts it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import re
import socket
import stat
import struct
import time

from ansible_collections.graceful.wsgi.plugins.module_utils._proc import describe_user as describe_uid
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline

FIFO_COMMANDS = {
    'chain': 'c',
    'graceful': 'r',
    'workers': 'w',
    'brutal': 'R',
}

TOUCH_OPTIONS = {
    'chain': 'touch-chain-reload',
    'graceful': 'touch-reload',
    'workers': 'touch-workers-reload',
}

# Modes whose reload re-executes the master: the stats server goes away for a moment.
MASTER_REEXEC_MODES = ('graceful', 'brutal')

# A reload respawns each worker once; more than this many further respawns is a crash loop.
RESPAWN_TOLERANCE = 2

# The stats of an instance with a thousand workers are a few megabytes; a server sending more is not uWSGI's.
MAX_ANSWER_BYTES = 64 * 1024 * 1024

_HOST_PORT = re.compile(r'^(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\s]+|):(?P<port>\d{1,5})$')
_TRAILING_COMMA = re.compile(r',\s*([\]}])')


class UwsgiError(Exception):
    """A failure to reach or drive the instance; the message names the option and path."""


class NotReady(UwsgiError):
    """The master FIFO is missing or has no reader for now: the master recreates it after every writer closes it,
    so another try a moment later may succeed. Every other UwsgiError is final."""


class ServiceUser(object):
    """The user whose control files root trusts besides its own, and how the module knows it (for messages).

    A FIFO or touch file of anyone else in the instance's directory was put there by someone who is neither the
    instance nor root: root writes nothing to it and touches nothing through it.
    """

    def __init__(self, uid, source):
        self.uid = uid
        self.source = source

    def allows(self, uid):
        return uid == 0 or uid == self.uid

    def describe(self):
        return '%s (%s)' % (describe_uid(self.uid), self.source)


def ownership_problem(status, service):
    """Why a control file with this (l)stat may not be trusted as the instance's, or None.

    Its owner must be root or the service's user; and it must have no other name: uWSGI creates its FIFO and its
    stats socket afresh, and a hard link is how a file of someone else's would get into the instance's directory.
    """
    if not service.allows(status.st_uid):
        return 'owned by %s, %s %s' % (describe_uid(status.st_uid), 'not by' if service.uid == 0 else 'neither root nor',
                                       service.describe())
    if status.st_nlink != 1:
        return 'has %d hard links (a control file has one name; this one also has another elsewhere)' % status.st_nlink
    return None


# ---------------------------------------------------------------- stats server

def parse_stats_address(value):
    """('tcp', host, port) for ``host:port`` or ``:port``, else ('unix', path)."""
    match = _HOST_PORT.match(value.strip())
    if match and '/' not in value:
        host = match.group('host').strip('[]') or '127.0.0.1'
        return ('tcp', host, int(match.group('port')))
    return ('unix', value)


def stats_label(address, option='stats'):
    """How an error names a stats address: the option and the path or host:port."""
    return '%s=%s' % (option, address[1] if address[0] == 'unix' else '%s:%d' % address[1:])


def socket_target(address):
    """The address family and the connect/sendto target of a parsed address."""
    if address[0] == 'unix':
        return socket.AF_UNIX, address[1]
    return (socket.AF_INET6 if ':' in address[1] else socket.AF_INET), (address[1], address[2])


class Peer(object):
    """Who serves a unix socket, as the kernel says (SO_PEERCRED): what listen() recorded, not what it answers."""

    def __init__(self, pid, uid, gid):
        self.pid = pid
        self.uid = uid
        self.gid = gid

    def describe(self):
        return 'pid %d of %s' % (self.pid, describe_uid(self.uid))


def read_json_document(address, timeout=2.0, label=None, clock=time.monotonic):
    """The one JSON object a uWSGI stats server (instance, Emperor or router) sends before closing.

    ``timeout`` bounds the whole exchange, connect included. A unix socket is checked first and its server after
    the connect (see check_stats_socket and check_peer).
    """
    return fetch_json_document(address, timeout, label, clock)[0]


def fetch_json_document(address, timeout=2.0, label=None, clock=time.monotonic):
    """(document, Peer) as read_json_document reads them; the Peer is None for a TCP address, which carries none."""
    label = label or stats_label(address)
    family, target = socket_target(address)
    status = check_stats_socket(address[1], label) if address[0] == 'unix' else None
    deadline = Deadline(timeout, clock)
    sock = socket.socket(family, socket.SOCK_STREAM)
    peer = None
    try:
        sock.settimeout(timeout)
        sock.connect(target)
        if status is not None:
            peer = peer_credentials(sock)
            check_peer(label, status, peer)
        raw = receive_until_closed(sock, deadline, label)
    except socket.timeout:
        raise UwsgiError(_no_complete_answer(label, timeout, 0))
    except (IOError, OSError) as exc:
        raise UwsgiError('%s: %s' % (label, _describe_socket_error(exc)))
    finally:
        sock.close()
    return _parse_document(raw, label), peer


def check_stats_socket(path, label):
    """The lstat of ``path`` when it is a socket with one link; UwsgiError naming it otherwise.

    connect() follows a symlink: one in the socket's place could lead root to any server's socket, so it is refused
    rather than followed.
    """
    try:
        status = os.lstat(path)
    except (IOError, OSError) as exc:
        raise UwsgiError('%s: %s' % (label, _describe_socket_error(exc)))
    if stat.S_ISLNK(status.st_mode):
        raise UwsgiError('%s: a symbolic link, not followed (name the socket itself)' % label)
    if not stat.S_ISSOCK(status.st_mode):
        # What connect() says of any other file, with what it is.
        raise UwsgiError('%s: connection refused: not a socket (%s)' % (label, _file_kind(status.st_mode)))
    if status.st_nlink != 1:
        raise UwsgiError('%s: has %d hard links (a socket uWSGI binds has one name; this one also has another '
                         'elsewhere); not trusted' % (label, status.st_nlink))
    return status


def peer_credentials(sock):
    """The Peer of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
    return Peer(*struct.unpack('3i', raw))


def check_peer(label, status, peer):
    """Refuse a server that did not make the socket file found at the path (``status``, its lstat).

    The process that binds a socket owns its file and is the one listening, so a server of another user than the
    file's owner was reached through something else put at the path between the check and the connect: the
    answer of root's or another user's server is not taken as the instance's.
    """
    if peer.uid != status.st_uid:
        raise UwsgiError('%s: the socket file is owned by %s, but the server reached through it is %s: not the '
                         'server that made it; not trusted' % (label, describe_uid(status.st_uid), peer.describe()))


def _parse_document(raw, label):
    text = raw.decode('utf-8', 'replace')
    try:
        document = json.loads(text)
    except ValueError:
        # uWSGI 2.0 writes a trailing comma after a list of router sockets when a master runs more than one
        # router (e.g. a FastRouter and an HTTP router): the rest of the document is sound.
        try:
            document = json.loads(_TRAILING_COMMA.sub(r'\1', text))
        except ValueError:
            raise UwsgiError('%s: answered %d bytes that are not JSON (is it a uWSGI stats server?)' % (label, len(raw)))
    if not isinstance(document, dict):
        raise UwsgiError('%s: answered JSON that is not an object (is it a uWSGI stats server?)' % label)
    return document


def receive_until_closed(sock, deadline, label, limit=MAX_ANSWER_BYTES):
    """The bytes a stats server sends before it closes, all of them before ``deadline`` (a _wait.Deadline).

    A socket's timeout bounds each recv() only: a server sending a byte now and then would hold the read for
    ever, so each recv() gets what is left of the deadline.
    """
    chunks = []
    received = 0
    while True:
        remaining = deadline.remaining()
        chunk = None
        if remaining > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                pass
        if chunk is None:
            raise UwsgiError(_no_complete_answer(label, deadline.seconds, received))
        if not chunk:
            return b''.join(chunks)
        received += len(chunk)
        if received > limit:
            raise UwsgiError('%s: answered more than %d bytes without closing (instance broken or not a uWSGI stats '
                             'server)' % (label, limit))
        chunks.append(chunk)


def _no_complete_answer(label, timeout, received):
    return ('%s: no complete answer within %.1fs (%d bytes arrived; instance hung or not a uWSGI stats server)'
            % (label, timeout, received))


def read_stats(address, timeout=2.0):
    """The stats document of one instance, or UwsgiError saying why it cannot be read.

    On a unix socket the master named by the answer (``pid``) must be the process serving it: anyone may run a
    server that answers with the pid of a uWSGI master of root's or of another user's.
    """
    label = stats_label(address)
    document, peer = fetch_json_document(address, timeout, label)
    if not isinstance(document.get('workers'), list) or 'pid' not in document:
        raise UwsgiError('%s: JSON without "pid" and "workers" (is it a uWSGI stats server?)' % label)
    if peer is not None and document.get('pid') != peer.pid:
        raise UwsgiError('%s: served by %s, but its answer names master pid %s: not the stats server of a uWSGI '
                         'master (in another PID namespace, or an impostor); not trusted'
                         % (label, peer.describe(), _shown_pid(document.get('pid'))))
    return document


def _shown_pid(value):
    return str(value) if isinstance(value, int) else 'that is not a number'


def _describe_socket_error(exc):
    code = getattr(exc, 'errno', None)
    if code == errno.ENOENT:
        return 'no such socket (instance not running, or wrong path)'
    if code == errno.ECONNREFUSED:
        return 'connection refused (instance not running, or restarting)'
    if code in (errno.EACCES, errno.EPERM):
        return 'permission denied (run as the instance user, or fix the socket mode)'
    if code == errno.ENOTSOCK:
        return 'not a socket'
    return exc.strerror or str(exc)


def workers_summary(document):
    """The per-worker fields the modules return: id, pid, accepting, requests."""
    return [
        {'id': w.get('id'), 'pid': w.get('pid'), 'accepting': bool(w.get('accepting')), 'requests': w.get('requests', 0)}
        for w in document.get('workers', [])
    ]


def workers_detail(document):
    """Everything an operator wants to see per worker, including its loaded apps."""
    detail = []
    for worker in document.get('workers', []):
        apps = [
            {
                'mountpoint': app.get('mountpoint', ''),
                'chdir': app.get('chdir', ''),
                'requests': app.get('requests', 0),
                'exceptions': app.get('exceptions', 0),
                'startup_time': app.get('startup_time', 0),
            }
            for app in worker.get('apps', [])
        ]
        detail.append({
            'id': worker.get('id'),
            'pid': worker.get('pid'),
            'status': worker.get('status'),
            'accepting': bool(worker.get('accepting')),
            'requests': worker.get('requests', 0),
            'exceptions': worker.get('exceptions', 0),
            'respawn_count': worker.get('respawn_count', 0),
            'last_spawn': worker.get('last_spawn', 0),
            'running_time': worker.get('running_time', 0),
            'rss': worker.get('rss', 0),
            'apps_loaded': len(apps),
            'apps': apps,
        })
    return detail


def instance_summary(document):
    """uwsgi_info's view: master, version, listen queue, sockets and workers."""
    return {
        'master_pid': document.get('pid'),
        'version': document.get('version'),
        'listen_queue': document.get('listen_queue', 0),
        'listen_queue_errors': document.get('listen_queue_errors', 0),
        'load': document.get('load', 0),
        'cwd': document.get('cwd'),
        'uid': document.get('uid'),
        'gid': document.get('gid'),
        'sockets': [
            {'name': s.get('name'), 'proto': s.get('proto'), 'queue': s.get('queue', 0), 'max_queue': s.get('max_queue', 0)}
            for s in document.get('sockets', [])
        ],
        'workers': workers_detail(document),
    }


def live_workers(document):
    """Workers that exist and are not cheaped: the ones a reload must replace."""
    return [w for w in document.get('workers', []) if w.get('pid', 0) > 0 and w.get('status') != 'cheap']


# ---------------------------------------------------------------- controls

def fifo_command(path, command, service):
    """Write one command byte to the master FIFO without ever blocking, and never to anything but a FIFO of root's
    or of ``service`` (a ServiceUser).

    The FIFO's directory belongs to the instance's user, who can put a symlink or another file in its place
    between the check and the open: the open follows no symlink, and what it opened is checked again on the
    descriptor. NotReady when the FIFO is missing or has no reader (the master recreates it after every writer).
    """
    check_fifo(path, service)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ELOOP:
            raise UwsgiError('master_fifo=%s: not a FIFO (a symbolic link, not followed)' % path)
        if exc.errno == errno.ENXIO:
            raise NotReady('master_fifo=%s: no process reads this FIFO (the instance is down)' % path)
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UwsgiError('master_fifo=%s: permission denied (run as the instance user)' % path)
        if exc.errno == errno.ENOENT:
            raise NotReady('master_fifo=%s: does not exist (the master is recreating it, or the instance stopped)' % path)
        raise UwsgiError('master_fifo=%s: %s' % (path, exc.strerror or exc))
    try:
        status = os.fstat(fd)
        if not stat.S_ISFIFO(status.st_mode):
            raise UwsgiError('master_fifo=%s: not a FIFO (%s); nothing written' % (path, _file_kind(status.st_mode)))
        problem = ownership_problem(status, service)
        if problem:
            raise UwsgiError('master_fifo=%s: %s; nothing written' % (path, problem))
        os.write(fd, command.encode('ascii'))
    except (IOError, OSError) as exc:
        raise UwsgiError('master_fifo=%s: write failed: %s' % (path, exc.strerror or exc))
    finally:
        os.close(fd)


def check_fifo(path, service):
    """Raise UwsgiError unless ``path`` is a FIFO (not a symlink to one) of root's or of ``service`` (a ServiceUser),
    with one link, that this user may write to; NotReady when it does not exist."""
    status = _lstat('master_fifo', path, 'is master-fifo set, and the instance running?')
    if not stat.S_ISFIFO(status.st_mode):
        raise UwsgiError('master_fifo=%s: not a FIFO (%s)' % (path, _file_kind(status.st_mode)))
    problem = ownership_problem(status, service)
    if problem:
        raise UwsgiError('master_fifo=%s: %s' % (path, problem))
    if not os.access(path, os.W_OK):
        raise UwsgiError('master_fifo=%s: permission denied (run as the instance user)' % path)


def check_touch_file(path, service):
    """Raise UwsgiError unless ``path`` is an existing regular file (not a symlink to one) of root's or of
    ``service`` (a ServiceUser), with one link, whose mtime we may change: a symlink would move the mtime of
    whatever file it points to, a hard link that of a file with another name elsewhere."""
    status = _lstat('touch_file', path, 'uWSGI watches an existing file; create it when deploying')
    if not stat.S_ISREG(status.st_mode):
        raise UwsgiError('touch_file=%s: not a regular file (%s)' % (path, _touch_kind(status.st_mode)))
    problem = ownership_problem(status, service)
    if problem:
        raise UwsgiError('touch_file=%s: %s' % (path, problem))
    if not os.access(path, os.W_OK):
        raise UwsgiError('touch_file=%s: permission denied' % path)


def touch(path, service):
    """Set the touch file's mtime to now.

    Its directory may belong to the instance's user, who can put a symlink (to a file of root's, whose mtime
    would move) or a FIFO in its place between the check and the touch: the file is opened without following a
    symlink or blocking, checked again on the descriptor (type, owner, links), and its times are set through it.
    """
    check_touch_file(path, service)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (IOError, OSError) as exc:
        # ELOOP: a symlink; ENXIO: a socket, or a FIFO nobody reads; EISDIR: a directory. lstat tells which.
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = None
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR) and mode is not None and not stat.S_ISREG(mode):
            raise UwsgiError('touch_file=%s: not a regular file (%s); nothing touched' % (path, _touch_kind(mode)))
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UwsgiError('touch_file=%s: permission denied' % path)
        raise UwsgiError('touch_file=%s: %s' % (path, exc.strerror or exc))
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise UwsgiError('touch_file=%s: not a regular file (%s); nothing touched'
                             % (path, _touch_kind(status.st_mode)))
        problem = ownership_problem(status, service)
        if problem:
            raise UwsgiError('touch_file=%s: %s; nothing touched' % (path, problem))
        os.utime(fd)
    except (IOError, OSError) as exc:
        raise UwsgiError('touch_file=%s: %s' % (path, exc.strerror or exc))
    finally:
        os.close(fd)


def _touch_kind(mode):
    return 'a symbolic link, not followed' if stat.S_ISLNK(mode) else _file_kind(mode)


def _lstat(option, path, missing_hint):
    """The lstat of a control path; NotReady when it does not exist, UwsgiError naming it for any other failure."""
    try:
        return os.lstat(path)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            raise NotReady('%s=%s: does not exist (%s)' % (option, path, missing_hint))
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UwsgiError('%s=%s: permission denied (a directory on the way is closed to this user)' % (option, path))
        raise UwsgiError('%s=%s: %s' % (option, path, exc.strerror or exc))


def _file_kind(mode):
    for test, name in ((stat.S_ISDIR, 'a directory'), (stat.S_ISREG, 'a regular file'), (stat.S_ISSOCK, 'a socket'),
                       (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
                       (stat.S_ISLNK, 'a symbolic link')):
        if test(mode):
            return name
    return 'mode %o' % mode


def looks_like_uwsgi(info, exe=None):
    """True when a process's program, kernel name, executable or process title says uWSGI."""
    names = [info.program, info.comm, os.path.basename(exe) if exe else '']
    if any(name.lower().startswith('uwsgi') for name in names if name):
        return True
    return bool(info.cmdline) and info.cmdline[0].startswith('uWSGI ')


def resolve_max_unavailable(value, worker_count):
    """Turn ``2`` or ``"50%"`` into a worker count in 1..worker_count; ValueError on nonsense."""
    text = str(value).strip()
    if text.endswith('%'):
        number = text[:-1].strip()
        if not number.isdigit() or not 0 < int(number) <= 100:
            raise ValueError('max_unavailable=%s: a percentage must be between 1%% and 100%%' % value)
        return max(1, (worker_count * int(number)) // 100)
    if not text.isdigit() or int(text) < 1:
        raise ValueError('max_unavailable=%s: must be a positive integer or a percentage like "50%%"' % value)
    return min(int(text), max(1, worker_count))


# ---------------------------------------------------------------- proof of a reload

class ReloadTracker:
    """Follows stats snapshots until every worker present at the start is replaced and accepting.

    Holds only what the snapshots cannot tell again: the PIDs before the reload,
    and the respawn baseline per worker (re-based when a master re-exec resets
    the counters).  ``observe()`` returns the verdict for one snapshot.
    """

    def __init__(self, before):
        self.master_pid = before.get('pid')
        self.targets = sorted(w['id'] for w in live_workers(before))
        self.pending = list(self.targets)
        self.old_pids = set(w['pid'] for w in before.get('workers', []) if w.get('pid', 0) > 0)
        self.old_pid_by_id = dict((w['id'], w.get('pid', 0)) for w in before.get('workers', []))
        self._baseline = dict((w['id'], w.get('respawn_count', 0)) for w in before.get('workers', []))
        self._last_count = dict(self._baseline)
        self.min_accepting = len([w for w in live_workers(before) if _serving(w)])
        self.last = before

    def is_new_and_ready(self, worker):
        """A PID that did not exist before the reload, accepting requests with its apps loaded."""
        pid = worker.get('pid', 0)
        return pid > 0 and pid not in self.old_pids and _serving(worker)

    def observe(self, document, draining=()):
        """Return ('done', None), ('waiting', None) or ('broken', message) for this snapshot.

        ``draining`` names workers known to have been told to stop: uWSGI still
        reports them accepting until they exit, but they take no new requests.
        """
        self.last = document
        serving = 0
        pending = []
        for worker in document.get('workers', []):
            wid = worker.get('id')
            pid = worker.get('pid', 0)
            count = worker.get('respawn_count', 0)
            if count < self._last_count.get(wid, 0):
                # The master re-executed itself: counters restart at 1 for the first spawn.
                self._baseline[wid] = 0
            self._last_count[wid] = count
            extra_respawns = count - self._baseline.get(wid, 0) - 1
            if extra_respawns > RESPAWN_TOLERANCE:
                return ('broken', 'worker %s keeps respawning: respawn_count %d, %d more than one reload needs '
                                  '(crash loop; see the uWSGI log)' % (wid, count, extra_respawns))
            is_new = pid > 0 and pid not in self.old_pids
            if is_new and worker.get('accepting') and not worker.get('apps'):
                return ('broken', 'worker %s (pid %d) respawned without an application (respawn_count %d): '
                                  'the new code failed to load; see the uWSGI log' % (wid, pid, count))
            if self.is_new_and_ready(worker):
                serving += 1
            else:
                if _serving(worker) and wid not in draining:
                    serving += 1
                if wid in self.targets:
                    pending.append(wid)
        self.min_accepting = min(self.min_accepting, serving)
        self.pending = pending
        return ('waiting', None) if pending else ('done', None)

    def describe_pending(self, document):
        by_id = dict((w.get('id'), w) for w in document.get('workers', []))
        states = []
        for wid in self.pending:
            worker = by_id.get(wid, {})
            pid = worker.get('pid', 0)
            if pid and pid == self.old_pid_by_id.get(wid):
                state = 'still runs the old pid %d (status %s)' % (pid, worker.get('status'))
            elif pid <= 0:
                state = 'is not running'
            else:
                state = 'has new pid %d, not accepting yet' % pid
            states.append('worker %s %s' % (wid, state))
        return '; '.join(states)


def _serving(worker):
    return worker.get('pid', 0) > 0 and bool(worker.get('accepting')) and bool(worker.get('apps'))

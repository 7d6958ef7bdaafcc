# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Process identity from /proc, so no signal ever reaches a process we have not recognised.

Private to the collection: the interface may change without notice.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import pwd
import select
import signal
import stat
import time

# Where process information comes from, for every reader of the collection; unit tests point it at a fake tree.
PROC = '/proc'


class ProcessInfo:
    """What /proc says about one process at one moment."""

    def __init__(self, pid, ppid, state, cmdline, comm):
        self.pid = pid
        self.ppid = ppid
        self.state = state
        self.cmdline = cmdline
        self.comm = comm

    @property
    def program(self):
        """Base name of argv[0], or the kernel's comm when argv is gone (zombie, kernel thread)."""
        if self.cmdline:
            return os.path.basename(self.cmdline[0])
        return self.comm

    def describe(self):
        shown = ' '.join(self.cmdline) if self.cmdline else '[%s]' % self.comm
        if len(shown) > 160:
            shown = shown[:157] + '...'
        return 'pid %d (%s)' % (self.pid, shown)


def proc_path(pid, *names, proc_root=None):
    """The path of /proc/PID (``pid`` may be ``self``) or of an entry in it, under ``proc_root`` (PROC by default)."""
    return os.path.join(proc_root or PROC, str(pid), *names)


def parse_stat(text):
    """Return (comm, state, ppid) from the text of /proc/PID/stat.

    comm may contain spaces and parentheses, so split on the last ')'.
    """
    open_paren = text.index('(')
    close_paren = text.rindex(')')
    comm = text[open_paren + 1:close_paren]
    fields = text[close_paren + 2:].split()
    return comm, fields[0], int(fields[1])


def parse_cmdline(raw):
    """Split the NUL-separated bytes of /proc/PID/cmdline into text arguments."""
    if not raw:
        return []
    parts = raw.rstrip(b'\0').split(b'\0')
    return [part.decode('utf-8', 'replace') for part in parts]


def read_process(pid, proc_root=None):
    """ProcessInfo for ``pid``, or None when no such process exists (or it is a zombie)."""
    base = proc_path(pid, proc_root=proc_root)
    try:
        with open(os.path.join(base, 'stat'), 'r') as handle:
            comm, state, ppid = parse_stat(handle.read())
        with open(os.path.join(base, 'cmdline'), 'rb') as handle:
            cmdline = parse_cmdline(handle.read())
    except (IOError, OSError, ValueError, IndexError):
        return None
    if state in ('Z', 'X'):
        return None
    return ProcessInfo(pid, ppid, state, cmdline, comm)


def is_alive(pid, proc_root=None):
    return read_process(pid, proc_root) is not None


def child_pids(pid, proc_root=None):
    """PIDs whose parent is ``pid``: the kernel's children list when it has one, else a scan of every /proc/N/stat."""
    listing = read_text(proc_path(pid, 'task', str(pid), 'children', proc_root=proc_root))
    if listing is not None:
        return sorted(int(word) for word in listing.split())
    found = []
    for name in os.listdir(proc_root or PROC):
        if not name.isdigit():
            continue
        info = read_process(int(name), proc_root)
        if info is not None and info.ppid == pid:
            found.append(info.pid)
    return sorted(found)


class NotRegularFile(Exception):
    """open_unfollowed found a symlink or a socket where a file should be; ``mode`` is what lstat says."""

    def __init__(self, path, mode):
        super(NotRegularFile, self).__init__(path)
        self.mode = mode


def file_kind(mode):
    """What a file of this mode is, in words (a FIFO, a symbolic link (not followed)...); None for another type."""
    for test, name in ((stat.S_ISLNK, 'a symbolic link (not followed)'), (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISSOCK, 'a socket'), (stat.S_ISDIR, 'a directory'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return None


def open_unfollowed(path):
    """A read-only descriptor of ``path``, opened without following a symlink and without blocking on a FIFO.

    NotRegularFile when the open fails because ``path`` is a symlink (ELOOP) or a socket (ENXIO); other OSErrors
    as they come. The caller still checks the descriptor (fstat) for what it may read.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        # ELOOP: the last component is a symlink; ENXIO: a socket. lstat tells which.
        if exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and (stat.S_ISLNK(mode) or stat.S_ISSOCK(mode)):
            raise NotRegularFile(path, mode)
        raise


class PidfileError(Exception):
    """read_pidfile given the option that named the pidfile: no PID from it; the message starts with ``option=path``."""


def read_pidfile(path, option=None, missing=None, owners=None):
    """The PID named by a pidfile; ValueError with the reason when it names none, OSError when it cannot be opened.

    Given ``option`` (the module option that named ``path``), PidfileError for either instead, whose message names
    ``option=path`` and the reason; ``missing`` says, in the message for a pidfile that does not exist, what that
    may mean (the server not running). ``owners``, when given, are the only owners the file may have: uids, or
    {uid: words naming that owner} for the message (see read_pidfile_and_owner).

    The pidfile's directory may belong to the application's user, who can put anything in its place: it is opened
    without following a symlink and without blocking (a FIFO blocks its reader until a writer comes), read only when
    it is a regular file, and what it holds is never shown (it could be another file's content).
    """
    return read_pidfile_and_owner(path, option, missing, owners)[0]


def read_pidfile_and_owner(path, option=None, missing=None, owners=None):
    """(PID, uid of the file's owner) of a pidfile, both from one open descriptor; errors as read_pidfile's.

    With ``owners`` (uids, or {uid: words naming that owner}), a file owned by anyone else is refused before it is
    read: ValueError (PidfileError given ``option``) naming its owner and the owners it may have. A pidfile anyone
    else may write can name any process.
    """
    if option is not None:
        try:
            return read_pidfile_and_owner(path, owners=owners)
        except (IOError, OSError) as exc:
            raise PidfileError('%s=%s %s' % (option, path, _unreadable(exc, missing)))
        except ValueError as exc:
            raise PidfileError('%s=%s: %s' % (option, path, exc))

    def not_regular(mode):
        kind = file_kind(mode)
        if kind:
            return ValueError('it is %s, not a regular file' % kind)
        return ValueError('it is not a regular file (file type %o)' % stat.S_IFMT(mode))

    try:
        fd = open_unfollowed(path)
    except NotRegularFile as exc:
        raise not_regular(exc.mode)
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(status.st_mode):
            raise not_regular(status.st_mode)
        if owners is not None and status.st_uid not in owners:
            raise ValueError('it is owned by %s, not by %s; it was not read'
                             % (describe_user(status.st_uid), _owner_words(owners)))
        content = os.read(fd, 64).strip()
    finally:
        os.close(fd)
    if not content:
        raise ValueError('it is empty')
    if not content.isdigit() or int(content) <= 0:
        raise ValueError('it does not hold a PID (not a positive decimal number; its content is not shown)')
    return int(content), status.st_uid


def _owner_words(owners):
    """'alice (uid 1000) or root' from read_pidfile's ``owners``."""
    if not isinstance(owners, dict):
        owners = dict((uid, describe_user(uid)) for uid in owners)
    # root last: the owner a reader looks for comes first.
    return ' or '.join(owners[uid] for uid in sorted(owners, key=lambda uid: (uid == 0, uid)))


def describe_user(uid):
    """'alice (uid 1000)', 'root', or 'uid 1000' for a uid without a name."""
    if uid == 0:
        return 'root'
    try:
        return '%s (uid %d)' % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return 'uid %d' % uid


def _unreadable(exc, missing):
    """Why a pidfile could not be opened (``exc``), as a phrase after its name."""
    if exc.errno == errno.ENOENT:
        return 'does not exist (%s)' % missing if missing else 'does not exist'
    if exc.errno in (errno.EACCES, errno.EPERM):
        return 'cannot be read: permission denied'
    if exc.errno == errno.EISDIR:
        return 'is a directory'
    return 'cannot be read: %s' % (exc.strerror or exc)


def read_link(pid, name, proc_root=None):
    """Target of /proc/PID/<name> (exe, cwd), or None when hidden from this user or gone."""
    try:
        return os.readlink(proc_path(pid, name, proc_root=proc_root))
    except (IOError, OSError):
        return None


def read_environ(pid, proc_root=None):
    """The process's initial environment as a dict; empty when unreadable."""
    try:
        with open(proc_path(pid, 'environ', proc_root=proc_root), 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return {}
    return parse_environ(raw)


def parse_environ(raw):
    """{name: value} from the NUL-separated bytes of /proc/PID/environ; entries without '=' are skipped."""
    environ = {}
    for entry in raw.split(b'\0'):
        key, sep, value = entry.partition(b'=')
        if sep:
            environ[key.decode('utf-8', 'replace')] = value.decode('utf-8', 'replace')
    return environ


def read_text(path, limit=1024 * 1024):
    """A small text file's content (at most ``limit`` characters), or None when it cannot be read.

    None too when ``path`` is not a regular file: it is opened without blocking (a FIFO planted by the app's user
    would block an ordinary open until a writer comes) and checked on the open descriptor, so a FIFO, socket,
    device or directory is never read. Symlinks are followed: callers read through them on purpose (a venv's
    interpreter, a vassal config linked into the Emperor's directory). /proc files are regular files of size 0
    and read like any other.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (IOError, OSError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        handle = os.fdopen(fd, 'r')
    except (IOError, OSError):
        os.close(fd)
        return None
    try:
        with handle:
            return handle.read(limit)
    except (IOError, OSError, UnicodeDecodeError):
        return None


def all_child_pids(pid, proc_root=None):
    """Children of every thread of ``pid``: a child forked by another thread than the main one is only in that
    thread's children list. Falls back to child_pids when the kernel keeps no such list."""
    try:
        tasks = os.listdir(proc_path(pid, 'task', proc_root=proc_root))
    except (IOError, OSError):
        return []
    found = set()
    listed = False
    for task in tasks:
        listing = read_text(proc_path(pid, 'task', task, 'children', proc_root=proc_root))
        if listing is not None:
            listed = True
            found.update(int(word) for word in listing.split())
    return sorted(found) if listed else child_pids(pid, proc_root)


def list_fds(pid, proc_root=None):
    """The names of the process's descriptors (the entries of /proc/PID/fd); OSError as listing them raises it
    (EACCES, EPERM when hidden from this user; ENOENT when the process is gone)."""
    return os.listdir(proc_path(pid, 'fd', proc_root=proc_root))


def fd_target(pid, fd, proc_root=None):
    """What descriptor ``fd`` of the process refers to (a path, ``socket:[inode]``...); OSError as readlink raises it.

    Root without CAP_SYS_PTRACE may list another user's descriptors but not read them: EACCES.
    """
    return os.readlink(proc_path(pid, 'fd', str(fd), proc_root=proc_root))


def fd_status(pid, fd, proc_root=None):
    """os.stat of the file descriptor ``fd`` of the process refers to; OSError as stat raises it."""
    return os.stat(proc_path(pid, 'fd', str(fd), proc_root=proc_root))


def fd_flags(pid, fd, proc_root=None):
    """The flags descriptor ``fd`` of the process was opened with (the octal ``flags:`` of /proc/PID/fdinfo/FD).

    OSError as opening that file raises it; ValueError when it shows no flags.
    """
    with open(proc_path(pid, 'fdinfo', str(fd), proc_root=proc_root)) as handle:
        return parse_fdinfo_flags(handle.read())


def parse_fdinfo_flags(text):
    """The open flags from the text of /proc/PID/fdinfo/FD; ValueError when it has none."""
    for line in text.splitlines():
        if line.startswith('flags:'):
            return int(line.split()[1], 8)
    raise ValueError('no flags')


def read_cgroup(pid, proc_root=None):
    """The text of /proc/PID/cgroup, or None when it cannot be read."""
    return read_text(proc_path(pid, 'cgroup', proc_root=proc_root))


def read_link_or_raise(pid, name, proc_root=None):
    """Target of /proc/PID/<name>, None when the process is gone; OSError (EACCES, EPERM) when it is hidden.

    Unlike read_link, a process this user may not look at is not mistaken for one that exited.
    """
    try:
        return os.readlink(proc_path(pid, name, proc_root=proc_root))
    except (IOError, OSError) as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise
        return None


def read_text_or_raise(pid, name, proc_root=None):
    """Content of /proc/PID/<name> (maps), None when the process is gone; OSError (EACCES, EPERM) when hidden."""
    try:
        with open(proc_path(pid, name, proc_root=proc_root), 'r') as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise
        return None


def parse_start_ticks(text):
    """Start time of a process in clock ticks since boot: field 22 of the text of /proc/PID/stat."""
    # Fields counted after comm, which may hold spaces: state is field 3, starttime field 22.
    return int(text[text.rindex(')') + 2:].split()[19])


def start_ticks(pid, proc_root=None):
    """The process's start time in clock ticks since boot, or None when it is gone."""
    text = read_text(proc_path(pid, 'stat', proc_root=proc_root))
    if text is None:
        return None
    try:
        return parse_start_ticks(text)
    except (ValueError, IndexError):
        return None


def titled_processes(prefix, proc_root=None):
    """{pid: start ticks} of the processes whose command line, its arguments joined by spaces, starts with ``prefix``.

    For programs that set their process title, as nginx names its workers ``nginx: worker process``. The start time
    tells a process from a later one given the same PID.
    """
    found = {}
    for name in os.listdir(proc_root or PROC):
        if not name.isdigit():
            continue
        info = read_process(int(name), proc_root)
        if info is None or not ' '.join(info.cmdline).startswith(prefix):
            continue
        ticks = start_ticks(info.pid, proc_root)
        if ticks is not None:
            found[info.pid] = ticks
    return found


def still_running(processes, proc_root=None):
    """The PIDs of ``processes`` ({pid: start ticks}) that still run: same PID, same start time, not a zombie."""
    return sorted(pid for pid, ticks in processes.items()
                  if is_alive(pid, proc_root) and start_ticks(pid, proc_root) == ticks)


def parse_uptime(text):
    """Seconds since boot from the text of /proc/uptime."""
    return float(text.split()[0])


def uptime(proc_root=None):
    """Seconds since boot (/proc/uptime), or None when it cannot be read."""
    text = read_text(os.path.join(proc_root or PROC, 'uptime'))
    if not text:
        return None
    return parse_uptime(text)


def boot_time(proc_root=None, now=None):
    """Epoch time of the boot, to 10 ms (now minus /proc/uptime), or None when /proc/uptime cannot be read.

    Not btime of /proc/stat: that is truncated to the second, so a process started just after an
    event could seem to have started up to a second before it.
    """
    seconds = uptime(proc_root)
    if seconds is None:
        return None
    return (time.time() if now is None else now) - seconds


def clock_tick():
    """Seconds per clock tick, the resolution of start times in /proc/PID/stat."""
    return 1.0 / os.sysconf('SC_CLK_TCK')


def start_time(pid, proc_root=None, boot=None):
    """Epoch time at which ``pid`` started (tick resolution), or None when it is gone."""
    ticks = start_ticks(pid, proc_root)
    boot = boot_time(proc_root) if boot is None else boot
    if ticks is None or boot is None:
        return None
    return boot + ticks * clock_tick()


def mapped_paths(maps_text):
    """The distinct files mapped into a process, sorted, from the text of /proc/PID/maps.

    Anonymous mappings and the kernel's pseudo ones ([heap], [stack], [vdso]) are left out; a file
    deleted since it was mapped keeps the kernel's " (deleted)" suffix.
    """
    found = set()
    for line in (maps_text or '').splitlines():
        # address perms offset dev inode pathname; the pathname may itself hold spaces.
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith('/'):
            found.add(fields[5].rstrip('\n'))
    return sorted(found)


# ---------------------------------------------------------------- reading as the process's owner

# How long a child reading /proc as a process's owner may take before it is killed.
OWNER_READ_SECONDS = 5.0
# The most it may send back; the maps of a large application are far smaller.
OWNER_READ_LIMIT = 64 * 1024 * 1024


class OwnerReadError(Exception):
    """/proc denied root a read, and reading it as the process's owner failed too; the message says why."""


def is_denied(exc):
    """Whether an error is /proc hiding a process from this user, not the process being gone."""
    return isinstance(exc, (IOError, OSError)) and exc.errno in (errno.EACCES, errno.EPERM)


def read_environ_or_raise(pid, proc_root=None):
    """The process's initial environment as a dict, None when it is gone; OSError (EACCES, EPERM) when hidden."""
    try:
        with open(proc_path(pid, 'environ', proc_root=proc_root), 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError) as exc:
        if is_denied(exc):
            raise
        return None
    return parse_environ(raw)


def process_owner(pid, proc_root=None):
    """(uid, gid, dumpable) of a process as /proc shows them, or None when it is gone.

    /proc/PID always has the process's effective uid and gid. /proc/PID/fd has them only while the
    process is dumpable, and root's once it is not (it changed its user or group itself after exec):
    then only CAP_SYS_PTRACE passes the kernel's ptrace access check, not its owner.
    """
    base = proc_path(pid, proc_root=proc_root)
    try:
        status = os.stat(base)
        descriptors = os.stat(os.path.join(base, 'fd'))
    except (IOError, OSError):
        return None
    return status.st_uid, status.st_gid, descriptors.st_uid == status.st_uid


def read_guarded(pid, what, reader, proc_root=None, timeout=None):
    """``reader()``; when /proc denies it and this is root, ``reader()`` again as the owner of /proc/PID.

    Root without CAP_SYS_PTRACE (as in a container with Docker's default capabilities) may list another
    user's /proc/PID/fd, but not follow its cwd, exe or fd links: the kernel's ptrace access check wants
    the caller's fsuid and fsgid to be the process's uids and gids, or that capability. The owner passes
    the check, so the read is done again by a child that became the owner (read_as_owner). A read that
    works directly (root with the capability, or the server's own user) forks nothing.

    ``what`` names the read in messages ("cwd and maps"). ``reader`` takes no argument, returns what JSON
    carries (it may be sent back from the child), and raises OSError (EACCES, EPERM) when /proc hides the
    process, as the ``*_or_raise`` readers do.

    Raises the reader's OSError when this user is not root (the caller keeps its own message);
    OwnerReadError when root could not read as the owner either; OSError (ESRCH) when the process
    exited or its PID was reused while it was read as its owner.
    """
    try:
        return reader()
    except (IOError, OSError) as exc:
        if not is_denied(exc) or os.geteuid() != 0:
            raise
        denied = exc
    return read_as_owner(pid, what, reader, proc_root, timeout, denied)


def read_as_owner(pid, what, reader, proc_root=None, timeout=None, denied=None):
    """``reader()`` run by a child that became the owner of /proc/PID; see read_guarded.

    The process's start time is read before and after: a PID that named another process at either
    moment is ESRCH, never that other process's data.
    """
    timeout = OWNER_READ_SECONDS if timeout is None else timeout
    started = start_ticks(pid, proc_root)
    owner = process_owner(pid, proc_root)
    if started is None or owner is None:
        raise _gone(pid)
    uid, gid, dumpable = owner
    reason = (denied.strerror if denied is not None else None) or 'Permission denied'
    prefix = 'cannot read %s of pid %d: root may not without CAP_SYS_PTRACE (%s)' % (what, pid, reason)
    if uid == 0:
        raise OwnerReadError(prefix + ', and it runs as root, so reading it as its owner cannot help: give the '
                             'module CAP_SYS_PTRACE')
    if not dumpable:
        if is_exiting(pid, proc_root):
            raise _gone(pid)
        raise OwnerReadError(
            prefix + ', and its owner (uid %d) may not either: it changed its user itself after it started, so the '
            'kernel counts it as not dumpable. Give the module CAP_SYS_PTRACE, or start the server as its user '
            '(systemd User=) instead of letting it switch users' % uid)
    try:
        value = run_as(uid, gid, reader, timeout)
    except OwnerReadError as exc:
        raise OwnerReadError('%s, and reading it as its owner (uid %d, gid %d) %s' % (prefix, uid, gid, exc))
    except (IOError, OSError) as exc:
        if not is_denied(exc):
            raise
        # An exiting process's /proc entries turn root's: its owner is denied too, and the process is gone.
        if is_exiting(pid, proc_root) or start_ticks(pid, proc_root) != started:
            raise _gone(pid)
        raise OwnerReadError('%s, and its owner (uid %d, gid %d) may not read it either (%s)'
                             % (prefix, uid, gid, exc.strerror or exc))
    if start_ticks(pid, proc_root) != started:
        raise _gone(pid)
    return value


def is_exiting(pid, proc_root=None):
    """Whether a process is gone, a zombie, or has released its memory on its way out.

    Once it has, the kernel shows its /proc/PID/fd, environ and cwd as root's: its owner is denied them, which
    is the process exiting (a worker replaced during a reload), not a hidden one. /proc/PID/status is readable
    by everyone and lists the Vm* lines only while the process has its memory.
    """
    status = read_status(pid, proc_root)
    if status is None:
        return True
    return status.get('State', '')[:1] in ('Z', 'X') or 'VmSize' not in status


def read_status(pid, proc_root=None):
    """{field: value} of /proc/PID/status (values stripped), or None when it cannot be read."""
    text = read_text(proc_path(pid, 'status', proc_root=proc_root))
    if text is None:
        return None
    return dict((name, value.strip()) for name, _sep, value in (line.partition(':') for line in text.splitlines()))


def _gone(pid):
    return OSError(errno.ESRCH, 'pid %d exited or was reused while it was read' % pid)


def run_as(uid, gid, function, timeout):
    """``function()`` run by a child that became ``uid``/``gid`` (no supplementary groups, no capabilities).

    The child sends the value back as JSON through a pipe and is killed and reaped after ``timeout``
    seconds at most. Raises the OSError ``function`` raised, and OwnerReadError with the reason as a
    phrase ("gave no answer within 5 s ...") when the child could not become that user or gave no answer.
    """
    read_end, write_end = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        raise OwnerReadError('failed: cannot fork (%s)' % (exc.strerror or exc))
    if child == 0:
        _owner_child(uid, gid, function, write_end)
    os.close(write_end)
    try:
        data = _read_answer(read_end, timeout)
    finally:
        os.close(read_end)
        status = _reap(child)
    try:
        answer = json.loads(data.decode('utf-8')) if data else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise OwnerReadError('ended without an answer (%s)' % _wait_status(status))
    if 'value' in answer:
        return answer['value']
    if 'errno' in answer:
        raise OSError(answer['errno'], answer.get('strerror'), answer.get('filename'))
    raise OwnerReadError('failed: %s' % answer.get('failed'))


def _owner_child(uid, gid, function, write_end):
    """In the forked child: become uid/gid, run ``function``, write the answer, exit. Never returns."""
    code = 1
    try:
        # Nothing of the parent's but the pipe stays open in a process of the (untrusted) app user.
        os.closerange(3, write_end)
        os.closerange(write_end + 1, max(write_end + 1, os.sysconf('SC_OPEN_MAX')))
        answer = _become(uid, gid)
        if answer is None:
            try:
                answer = dict(value=function())
            except (IOError, OSError) as exc:
                answer = dict(errno=exc.errno, strerror=exc.strerror, filename=exc.filename)
        data = json.dumps(answer).encode('utf-8')
        while data:
            data = data[os.write(write_end, data):]
        code = 0
    except Exception as exc:  # pylint: disable=broad-except
        try:
            os.write(write_end, json.dumps(dict(failed='%s: %s' % (type(exc).__name__, exc))).encode('utf-8'))
        except Exception:  # pylint: disable=broad-except
            pass
    finally:
        os._exit(code)  # never back into the caller's stack, nor its atexit handlers and buffers


def _become(uid, gid):
    """Take uid/gid for good, groups first (setgid needs the privilege setuid drops); None when done, else
    an answer saying why not.

    Changing its uid makes the child not dumpable (unless fs.suid_dumpable is 1, a debugging setting), so the
    app user it now is cannot trace it nor read its memory and descriptors.
    """
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        return dict(failed='could not take that identity (%s)' % (exc.strerror or exc))
    kept = _capabilities()
    if kept is None or kept != (0, 0):
        return dict(failed='kept capabilities after taking that identity (CapPrm, CapEff %s)' % (kept,))
    owner = process_owner('self')
    if owner is None or owner[2]:
        return dict(failed='would stay dumpable, open to the app user (fs.suid_dumpable is 1)')
    return None


def _capabilities():
    """(permitted, effective) capability masks of this process, or None when unreadable."""
    status = read_status('self') or {}
    if 'CapPrm' not in status or 'CapEff' not in status:
        return None
    return int(status['CapPrm'], 16), int(status['CapEff'], 16)


def _read_answer(read_end, timeout):
    """What the child writes until it closes the pipe; OwnerReadError when that takes over ``timeout`` s."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    chunks = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OwnerReadError('gave no answer within %g s (the reading process was killed)' % timeout)
        if not poller.poll(int(left * 1000) + 1):
            continue
        chunk = os.read(read_end, 65536)
        if not chunk:
            return b''.join(chunks)
        size += len(chunk)
        if size > OWNER_READ_LIMIT:
            raise OwnerReadError('sent more than %d bytes (the reading process was killed)' % OWNER_READ_LIMIT)
        chunks.append(chunk)


def _reap(child):
    """Wait status of the child, killed first unless it already exited; None when it cannot be reaped."""
    try:
        reaped, status = os.waitpid(child, os.WNOHANG)
        if reaped:
            return status
        os.kill(child, signal.SIGKILL)
        return os.waitpid(child, 0)[1]
    except OSError:
        return None


def _wait_status(status):
    if status is None:
        return 'not reaped'
    if os.WIFSIGNALED(status):
        return 'killed by signal %d' % os.WTERMSIG(status)
    return 'exit code %d' % os.WEXITSTATUS(status)

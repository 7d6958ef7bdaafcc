# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""gunicorn control: who is the master, which workers have booted, what the log says.

Private to the collection: the interface may change without notice.
Facts relied on (gunicorn 20.1 to 27, arbiter.py and workers/):

* every worker owns a heartbeat file: created by the master as ``wgunicorn-*`` in
  ``worker_tmp_dir``, unlinked at once, held open by the master and by that worker
  only (siblings close it after fork).  The worker touches it from its run loop,
  which it enters after the application loaded and ``post_worker_init`` ran.
  Before 21.2 a touch is ``fchmod(fd, 0|1)``, so the mode leaves 0600; since 21.2
  it is ``utime(fd, time.monotonic())``, so the mtime drops to seconds since boot.
  Either change is the proof that the worker booted; it needs no configuration
  and reads the same on every version;
* USR2 forks and execs a new master with ``GUNICORN_PID`` = the old master in its
  environment; it writes ``<pidfile>.2``, and renames it to ``<pidfile>`` when it
  sees its parent change (the old master exited);
* a worker that cannot boot exits with code 3 (4: the app cannot be imported) and
  the master halts, logging ``Reason: Worker failed to boot.``;
* a master leaving removes ``<pidfile>`` only when it names that master's own PID,
  and a promoted master that finds ``<pidfile>`` already naming its own PID keeps
  it (``Pidfile.unlink``/``Pidfile.create``); gunicorn writes it with mode 0644.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import errno
import os
import pwd
import re
import shlex
import stat
import tempfile

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc, _systemd

HEARTBEAT_PREFIX = 'wgunicorn-'
UPGRADE_ENV = 'GUNICORN_PID'
EXIT_REASONS = {3: 'a worker failed to boot', 4: 'the application failed to load'}
# What the master logs as "Reason:" when it halts for those exit codes (gunicorn 20.1 logs only this).
HALT_REASONS = {'Worker failed to boot.': 3, 'App failed to load.': 4}

# fchmod-style heartbeats leave the owner's rw bits; utime-style ones put mtime this far before ctime.
_HEARTBEAT_MODES = (0, 1)
_MONOTONIC_GAP_SECONDS = 3600.0

_PYTHON = re.compile(r'^python[0-9.]*$')
_PYTHON_OPTIONS_WITH_VALUE = ('-W', '-X', '-Q')
_VERSION_INFO = re.compile(r'^version_info\s*=\s*\(([0-9,\s]+)\)', re.MULTILINE)
_EXIT_CODE = re.compile(r'Worker \(pid:\s*(\d+)\) exited with code (-?\d+)')
_REASON = re.compile(r'Reason: (.+)$')
# A master that crashes while halting (a second worker's exit raises again) leaves only its traceback.
_HALT_SERVER = re.compile(r"HaltServer '([^']+)' (\d+)>")
# The last line of a traceback: the exception's name, alone or before ': '. A traceback's source lines, such as
# logging's 'self.handleError(record)', also start with a name ending in Error, and are not exceptions.
_EXCEPTION_LINE = re.compile(r'\A[A-Za-z_][\w.]*(Error|Exception|Exit)(: .*)?\Z')
# gunicorn's own logging, interrupted by a signal handler that logs too (seen with gunicorn 20.1 while a broken
# worker's traceback was being written): not the cause of anything, so an earlier error is kept instead.
_LOGGING_ACCIDENT = re.compile(r'^RuntimeError: reentrant call inside <_io\.')
_LOG_PREFIX = re.compile(r'^\[[^\]]*\] \[\d+\] \[[A-Z]+\] ')


class GunicornError(Exception):
    """The message names the option or path and what was found instead."""


# ---------------------------------------------------------------- command lines

def is_gunicorn_cmdline(cmdline):
    """True for gunicorn's script, ``python .../gunicorn``, ``python -m gunicorn`` or a setproctitle title."""
    if not cmdline:
        return False
    first = os.path.basename(cmdline[0])
    if first == 'gunicorn' or cmdline[0].startswith('gunicorn: '):
        return True
    if not _PYTHON.match(first):
        return False
    args = iter(cmdline[1:])
    for arg in args:
        if arg == '-m':
            return next(args, None) == 'gunicorn'
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            next(args, None)
            continue
        if arg.startswith('-'):
            if arg.startswith('-c'):
                return False
            continue
        return os.path.basename(arg) == 'gunicorn'
    return False


def title_role(cmdline):
    """'master' or 'worker' from a setproctitle title (``gunicorn: master [app]``), else None."""
    if cmdline and cmdline[0].startswith('gunicorn: '):
        words = cmdline[0].split()
        if len(words) > 1 and words[1] in ('master', 'worker'):
            return words[1]
    return None


def cmdline_pidfile(cmdline):
    """The value of ``-p``/``--pid`` on a gunicorn command line, or None."""
    for index, arg in enumerate(cmdline):
        if arg in ('-p', '--pid') and index + 1 < len(cmdline):
            return cmdline[index + 1]
        if arg.startswith('--pid='):
            return arg[len('--pid='):]
        if arg.startswith('-p') and len(arg) > 2 and not arg.startswith('--'):
            return arg[2:]
    return None


# ---------------------------------------------------------------- heartbeats

def heartbeat_started(mode, mtime, ctime):
    """Whether a worker's heartbeat file was touched since the master created it (see module docstring)."""
    if (mode & 0o777) in _HEARTBEAT_MODES:
        return True
    return ctime - mtime > _MONOTONIC_GAP_SECONDS


def heartbeats(pid, proc_root=None):
    """{inode: booted} for the heartbeat files process ``pid`` holds open.

    Raises OSError (EACCES) when this user may not look at the process's descriptors,
    ESRCH-like ENOENT when the process is gone.
    """
    found = {}
    for entry in _proc.list_fds(pid, proc_root):
        try:
            target = _proc.fd_target(pid, entry, proc_root)
            if not os.path.basename(target).startswith(HEARTBEAT_PREFIX):
                continue
            status = _proc.fd_status(pid, entry, proc_root)
        except OSError as exc:
            # Listing fd/ needs less than reading its links: root without CAP_SYS_PTRACE lists them only.
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise
            continue  # closed between listdir and stat
        found[status.st_ino] = heartbeat_started(status.st_mode, status.st_mtime, status.st_ctime)
    return found


class LogFiles(list):
    """The paths written_files found (a list), with ``owner``: the uid the process runs as, None when unknown.

    LogWatch reads a log only when it is owned by that user or root.
    """

    owner = None


def written_files(pid, proc_root=None):
    """Regular files the process holds open for writing (its log files), by path; empty when not readable.

    A LogFiles: its ``owner`` is the process's uid, for LogWatch. Root that /proc denies reads the descriptors
    as the process's owner (see _guarded); GunicornError when that fails too.
    """
    proc_root = proc_root or _proc.PROC
    paths = LogFiles()
    try:
        targets = _guarded(pid, 'fd and fdinfo', lambda: _written_targets(pid, proc_root), proc_root)
    except OSError:
        return paths
    owner = _proc.process_owner(pid, proc_root)
    paths.owner = owner[0] if owner is not None else None
    for target in targets:
        if os.path.isfile(target) and target not in paths:
            paths.append(target)
    return paths


def _written_targets(pid, proc_root):
    """Paths the process holds open for writing, in descriptor order; OSError (EACCES) when hidden."""
    paths = []
    try:
        entries = _proc.list_fds(pid, proc_root)
    except OSError as exc:
        if _proc.is_denied(exc):
            raise
        return paths
    for entry in sorted(entries, key=lambda name: int(name) if name.isdigit() else 0):
        try:
            target = _proc.fd_target(pid, entry, proc_root)
            if not target.startswith('/') or target.endswith(' (deleted)'):
                continue
            if os.path.basename(target).startswith(HEARTBEAT_PREFIX):
                continue
            flags = _proc.fd_flags(pid, entry, proc_root)
        except OSError as exc:
            if _proc.is_denied(exc):
                raise
            continue
        except ValueError:
            continue
        if flags & 3:
            paths.append(target)
    return paths


# ---------------------------------------------------------------- process tree

def age_seconds(ticks, proc_root=None):
    """Seconds a process started ``ticks`` (_proc.start_ticks) after boot has been running, or None."""
    uptime = _proc.uptime(proc_root) if ticks is not None else None
    if uptime is None:
        return None
    return round(max(0.0, uptime - ticks / float(os.sysconf('SC_CLK_TCK'))), 2)


class Master:
    """One gunicorn master as /proc shows it at one moment."""

    def __init__(self, info, started, environ, workers, upgrade_children, strangers, uid=None):
        self.info = info
        self.pid = info.pid
        self.uid = uid                          # the user it runs as (effective uid), None when unknown
        self.started = started
        self.environ = environ
        self.workers = workers                  # {pid: booted}
        self.upgrade_children = upgrade_children  # new masters forked by USR2, not yet promoted
        self.strangers = strangers              # children that are neither (a USR2 child before exec)

    @property
    def upgrading_from(self):
        """The old master's PID when this master was started by USR2 and is not promoted yet."""
        value = self.environ.get(UPGRADE_ENV, '')
        if value.isdigit() and int(value) == self.info.ppid:
            return int(value)
        return None

    def booted(self):
        return sorted(pid for pid, ready in self.workers.items() if ready)

    def describe(self):
        return self.info.describe()


def inspect_master(pid, proc_root=None):
    """A Master for ``pid``, or None when that PID is no live gunicorn process.

    Raises GunicornError when /proc hides the descriptors that prove its workers, from this user
    and, for root, from the process's owner too.
    """
    proc_root = proc_root or _proc.PROC
    info = _proc.read_process(pid, proc_root)
    if info is None or not is_gunicorn_cmdline(info.cmdline):
        return None
    started = _proc.start_ticks(pid, proc_root)
    try:
        environ, own = process_view(pid, proc_root)
    except OSError as exc:
        if _proc.is_denied(exc):
            raise GunicornError(_hidden(pid, proc_root))
        return None
    workers, upgrades, strangers = {}, [], []
    for child in _proc.child_pids(pid, proc_root):
        child_info = _proc.read_process(child, proc_root)
        if child_info is None or not is_gunicorn_cmdline(child_info.cmdline):
            continue
        try:
            child_environ, held = process_view(child, proc_root)
        except OSError as exc:
            if _proc.is_denied(exc):
                raise GunicornError(_hidden(child, proc_root))
            continue  # exited while we looked
        if child_environ.get(UPGRADE_ENV) == str(pid):
            upgrades.append(child)
            continue
        mine = [inode for inode in held if inode in own]
        if len(mine) == 1:
            workers[child] = held[mine[0]]
        else:
            strangers.append(child)
    owner = _proc.process_owner(pid, proc_root)
    return Master(info, started, environ, workers, upgrades, strangers, owner[0] if owner else None)


def _hidden(pid, proc_root):
    return ('cannot read %s/%d/fd: permission denied; run the module as the user gunicorn runs as, or as root'
            % (proc_root, pid))


def _guarded(pid, what, reader, proc_root):
    """_proc.read_guarded: root that /proc denies (no CAP_SYS_PTRACE, as in containers) reads as the
    process's owner. GunicornError when that fails too; OSError (EACCES) for another user, as ``reader``."""
    try:
        return _proc.read_guarded(pid, what, reader, proc_root)
    except _proc.OwnerReadError as exc:
        raise GunicornError(str(exc))


def process_view(pid, proc_root=None):
    """(environ, {heartbeat inode: booted}) of one process, read in one go (see _guarded).

    OSError (EACCES) when this user may not read them; OSError (ENOENT, ESRCH) when the process is gone.
    """
    proc_root = proc_root or _proc.PROC

    def read():
        # Pairs, not a dict: JSON would make the inodes strings on their way back from the owner's child.
        return [_proc.read_environ_or_raise(pid, proc_root), sorted(heartbeats(pid, proc_root).items())]

    environ, pairs = _guarded(pid, 'environ and fd', read, proc_root)
    return environ or {}, dict((inode, booted) for inode, booted in pairs)


def socket_inodes(pid, proc_root=None):
    """The sockets a process holds (its listeners, for a master), as 'socket:[inode]' strings.

    Empty when the process is gone or hidden from this user (not root); root that /proc denies reads
    them as the process's owner, and GunicornError says when that fails too.
    """
    proc_root = proc_root or _proc.PROC
    try:
        return set(_guarded(pid, 'fd', lambda: _socket_targets(pid, proc_root), proc_root))
    except OSError:
        return set()


def _socket_targets(pid, proc_root):
    found = set()
    try:
        entries = _proc.list_fds(pid, proc_root)
    except OSError as exc:
        if _proc.is_denied(exc):
            raise
        return []
    for entry in entries:
        try:
            target = _proc.fd_target(pid, entry, proc_root)
        except OSError as exc:
            if _proc.is_denied(exc):
                raise
            continue
        if target.startswith('socket:'):
            found.add(target)
    return sorted(found)


def is_running(pid, proc_root=None):
    """Whether ``pid`` is a live process (zombies are not)."""
    return _proc.is_alive(pid, proc_root)


def is_gone(master, proc_root=None):
    """Whether ``master``'s process has exited (a zombie counts; a PID reused since counts too).

    Not the negation of same_process(): an exiting process loses its command line before it dies.
    """
    proc_root = proc_root or _proc.PROC
    return _proc.read_process(master.pid, proc_root) is None or _proc.start_ticks(master.pid, proc_root) != master.started


def reinspect(master, proc_root=None):
    """A fresh Master for ``master``'s process, or None when it exited or its PID was reused."""
    return inspect_master(master.pid, proc_root) if same_process(master, proc_root) else None


def same_process(master, proc_root=None):
    """Whether ``master``'s PID still belongs to the process we inspected (not reused since)."""
    proc_root = proc_root or _proc.PROC
    info = _proc.read_process(master.pid, proc_root)
    return info is not None and _proc.start_ticks(master.pid, proc_root) == master.started and is_gunicorn_cmdline(info.cmdline)


# ---------------------------------------------------------------- identity

def not_running(path):
    """What a missing gunicorn pidfile ``path`` means, for _proc.read_pidfile's ``missing``."""
    return 'gunicorn not running, or started without --pid %s' % path


# A system service as the ``unit`` option names it (systemd.unit(5)): ASCII letters, digits and ":-_.\@", with or
# without ".service"; never a leading "-", which systemctl would take for an option.
_SERVICE_NAME = re.compile(r'\A[A-Za-z0-9:_.@\\][A-Za-z0-9:_.@\\-]*\Z')
_SERVICE_SUFFIX = '.service'
_UNIT_NAME_MAX = 255
_UID = re.compile(r'\A[0-9]+\Z')
UNIT_PROPERTIES = ('MainPID', 'ControlGroup', 'ActiveState', 'LoadState')


def service_name(value):
    """The ``unit`` option as NAME.service; GunicornError naming the option when it is no service name."""
    base = value[:-len(_SERVICE_SUFFIX)] if value.endswith(_SERVICE_SUFFIX) else value
    name = base + _SERVICE_SUFFIX
    if not _SERVICE_NAME.match(base) or len(name) > _UNIT_NAME_MAX:
        raise GunicornError('unit=%s: not a systemd service name (ASCII letters, digits and ":-_.@\\" only, not '
                            'starting with "-", at most %d characters with .service)' % (value, _UNIT_NAME_MAX))
    return name


def user_identity(value):
    """(name, uid) of the ``expected_user`` option, a user name or a uid; GunicornError naming it when unknown."""
    try:
        entry = pwd.getpwnam(value)
        return entry.pw_name, entry.pw_uid
    except (KeyError, ValueError):
        pass
    if _UID.match(value):
        return None, int(value)
    raise GunicornError('expected_user=%s: no such user on this host' % value)


class UnitMaster:
    """What systemd says of the unit now: its main process ``main_pid`` (running as ``uid``) and its cgroup."""

    def __init__(self, unit, main_pid, control_group, uid):
        self.unit = unit
        self.main_pid = main_pid
        self.control_group = control_group
        self.uid = uid


class Expected:
    """Whom a pidfile may name: the module's ``unit`` and ``expected_user`` options (see identify_master).

    ``unit`` is NAME.service, asked about through ``systemctl`` (its path) at each identification, since an upgrade
    moves the unit's main process; ``user`` is (name or None, uid). Neither: the master runs as the pidfile's owner.
    """

    def __init__(self, unit=None, user=None, systemctl=None):
        self.unit = unit
        self.user = user
        self.systemctl = systemctl

    @classmethod
    def from_options(cls, unit=None, expected_user=None, systemctl=None):
        """From the options as given; GunicornError naming the option that is invalid, or ``unit`` without
        systemctl."""
        name = service_name(unit) if unit is not None else None
        user = user_identity(expected_user) if expected_user is not None else None
        if name is not None and not systemctl:
            raise GunicornError('unit=%s: systemctl not found, so no master can be proven to be the main process of '
                                '%s' % (unit, name))
        return cls(name, user, systemctl)

    @property
    def user_words(self):
        """'expected_user=alice (uid 1000)'."""
        name, uid = self.user
        return 'expected_user=%s (uid %d)' % (name, uid) if name else 'expected_user=%d' % uid

    def unit_master(self, proc_root=None):
        """The unit's UnitMaster now; GunicornError naming the unit when systemd cannot say or it has none."""
        try:
            properties = _systemd.show(self.systemctl, self.unit, UNIT_PROPERTIES)
        except _systemd.SystemdError as exc:
            raise GunicornError('unit=%s: systemd cannot be asked for its main process: %s' % (self.unit, exc))
        state = 'LoadState=%s, ActiveState=%s' % (properties.get('LoadState') or '?',
                                                  properties.get('ActiveState') or '?')
        main_pid = _systemd.int_property(properties, 'MainPID')
        control_group = properties.get('ControlGroup') or ''
        if not main_pid or not control_group.startswith('/'):
            raise GunicornError('unit=%s has no main process (%s, MainPID=%s, ControlGroup=%s): gunicorn is not '
                                'running in it' % (self.unit, state, properties.get('MainPID') or '?',
                                                   control_group or '?'))
        owner = _proc.process_owner(main_pid, proc_root)
        if owner is None:
            raise GunicornError('unit=%s: its main process %d (MainPID) is not running' % (self.unit, main_pid))
        return UnitMaster(self.unit, main_pid, control_group, owner[0])

    def pidfile_owners(self, unit):
        """{uid: words} of whom the pidfile may belong to, besides root; None when it defines the master's user."""
        if self.user is not None:
            owners = {self.user[1]: self.user_words}
        elif unit is not None:
            owners = {unit.uid: '%s, the user of the main process %d of unit=%s' % (
                _proc.describe_user(unit.uid), unit.main_pid, unit.unit)}
        else:
            return None
        owners.setdefault(0, 'root')
        return owners

    def master_user(self, unit, pidfile_owner):
        """(uid, words) of the user the master must run as."""
        if self.user is not None:
            return self.user[1], self.user_words
        if unit is not None:
            return unit.uid, '%s, the user of the main process %d of unit=%s' % (
                _proc.describe_user(unit.uid), unit.main_pid, unit.unit)
        return pidfile_owner, 'the owner of the pidfile, %s (set expected_user or unit when the master runs as ' \
                              'another user)' % _proc.describe_user(pidfile_owner)


def cgroup_paths(text):
    """The paths systemd manages in the text of /proc/PID/cgroup: the unified (``0::``) and ``name=systemd`` ones."""
    found = []
    for line in (text or '').splitlines():
        fields = line.strip().split(':', 2)
        if len(fields) == 3 and ((fields[0] == '0' and fields[1] == '') or fields[1] == 'name=systemd'):
            found.append(fields[2])
    return found


def in_control_group(cgroup_text, control_group):
    """Whether a process whose /proc/PID/cgroup reads ``cgroup_text`` lies in ``control_group`` or below it.

    Any one of its paths will do: on a cgroup v1 host the unified line reads ``0::/`` for every process. Only root
    moves a process into another service's cgroup.
    """
    prefix = control_group.rstrip('/') + '/'
    return any(path == control_group or path.startswith(prefix) for path in cgroup_paths(cgroup_text))


def master_owners(master):
    """read_pidfile's ``owners`` of a pidfile of the proven ``master``: its user or root; None when unknown."""
    if master.uid is None:
        return None
    owners = {master.uid: "the gunicorn master's user, %s" % _proc.describe_user(master.uid)}
    owners.setdefault(0, 'root')
    return owners


def identify_master(pidfile, proc_root=None, expected=None):
    """The Master the pidfile names, proven from /proc; GunicornError saying what the PID really is.

    ``expected`` (an Expected, by default one without options) says whom the pidfile may name. With a unit: the
    unit's main process, or a new master an upgrade of it started (its child, exec'd with GUNICORN_PID naming it),
    in the unit's cgroup. The master runs as the expected user, else as the unit's main process does, else as the
    pidfile's owner; the pidfile belongs to that user or root. Messages name the pidfile, the process it names and
    its user, and whom it should have named.
    """
    proc_root = proc_root or _proc.PROC
    expected = expected or Expected()
    unit = expected.unit_master(proc_root) if expected.unit else None
    try:
        pid, owner = _proc.read_pidfile_and_owner(pidfile, 'pidfile', not_running(pidfile),
                                                  expected.pidfile_owners(unit))
    except _proc.PidfileError as exc:
        raise GunicornError(str(exc))
    info = _proc.read_process(pid, proc_root)
    if info is None:
        raise GunicornError('pidfile=%s names pid %d, which is not running (stale pidfile)'
                            % (pidfile, pid))
    if not is_gunicorn_cmdline(info.cmdline):
        raise GunicornError('pidfile=%s names %s, which is not a gunicorn process'
                            % (pidfile, info.describe()))
    running_as = _proc.process_owner(pid, proc_root)
    if running_as is None:
        raise GunicornError('pidfile=%s names pid %d, which exited while it was inspected' % (pidfile, pid))
    required, whom = expected.master_user(unit, owner)
    if running_as[0] != required:
        raise GunicornError('pidfile=%s names %s, a gunicorn master running as %s, not as %s: another app\'s master, '
                            'or a pidfile written by someone else'
                            % (pidfile, info.describe(), _proc.describe_user(running_as[0]), whom))
    if unit is not None:
        check_unit(pidfile, info, unit, proc_root)
    master = inspect_master(pid, proc_root)
    if master is None:
        raise GunicornError('pidfile=%s names pid %d, which exited while it was inspected' % (pidfile, pid))
    parent = inspect_master(info.ppid, proc_root) if info.ppid > 1 else None
    if (parent is not None and pid in parent.workers) or title_role(info.cmdline) == 'worker':
        raise GunicornError('pidfile=%s names %s, a gunicorn worker of master %d, not a master'
                            % (pidfile, info.describe(), info.ppid))
    if unit is not None and pid != unit.main_pid and master.upgrading_from != unit.main_pid:
        raise GunicornError(not_the_units(pidfile, info, unit, proc_root))
    declared = cmdline_pidfile(info.cmdline)
    if declared is not None:
        cwd = master_cwd(pid, proc_root) if not os.path.isabs(declared) else '/'
        declared_path = os.path.realpath(os.path.join(cwd or '/', declared))
        if os.path.realpath(pidfile) not in (declared_path, declared_path + '.2'):
            raise GunicornError('pidfile=%s names %s, a gunicorn master started with --pid %s: another instance'
                                % (pidfile, info.describe(), declared))
    return master


def check_unit(pidfile, info, unit, proc_root):
    """GunicornError unless the process ``info`` may be ``unit``'s master: its main process or a child of it (a new
    master; identify_master proves the rest), in its cgroup."""
    if info.pid != unit.main_pid and info.ppid != unit.main_pid:
        raise GunicornError(not_the_units(pidfile, info, unit, proc_root))
    cgroup = _proc.read_cgroup(info.pid, proc_root)
    if not in_control_group(cgroup, unit.control_group):
        raise GunicornError('pidfile=%s names %s, which runs in cgroup %s, not in %s of unit=%s (MainPID %d)'
                            % (pidfile, info.describe(), ', '.join(cgroup_paths(cgroup)) or 'unknown',
                               unit.control_group, unit.unit, unit.main_pid))


def not_the_units(pidfile, info, unit, proc_root):
    owner = _proc.process_owner(info.pid, proc_root)
    service = _systemd.unit_from_cgroup(_proc.read_cgroup(info.pid, proc_root))
    return ('pidfile=%s names %s, a gunicorn master running as %s in %s, which is neither the main process of unit=%s '
            '(MainPID %d) nor a new master that process started: another app\'s master'
            % (pidfile, info.describe(), _proc.describe_user(owner[0]) if owner else 'an unknown user',
               service or 'no system service', unit.unit, unit.main_pid))


def master_cwd(pid, proc_root=None):
    """The master's working directory (what a relative --pid is relative to), None when it is gone."""
    proc_root = proc_root or _proc.PROC
    try:
        return _guarded(pid, 'cwd', lambda: _proc.read_link_or_raise(pid, 'cwd', proc_root), proc_root)
    except OSError as exc:
        if _proc.is_denied(exc):
            raise GunicornError('cannot read %s/%d/cwd: permission denied; run the module as the user gunicorn '
                                'runs as, or as root' % (proc_root, pid))
        return None


def hand_over_pidfile(path, pid):
    """Make the pidfile ``path`` name ``pid`` at once: a file written beside it, renamed over it.

    The new file gets the owner and group of the one it replaces (systemd refuses a
    PIDFile= whose owner differs from its directory's non-root owner) and mode 0644, as
    gunicorn writes it. A group that cannot be kept is left; an owner that cannot be kept
    is an error. Raises OSError naming what failed; nothing is left behind then.
    """
    status = os.lstat(path)
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, '%s is %s, not a regular file' % (path, _file_kind(status.st_mode)))
    directory = os.path.dirname(path) or '.'
    handle, temporary = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        try:
            os.write(handle, ('%d\n' % pid).encode('ascii'))
            os.fchmod(handle, 0o644)
            written = os.fstat(handle)
            if (written.st_uid, written.st_gid) != (status.st_uid, status.st_gid):
                try:
                    os.fchown(handle, status.st_uid, status.st_gid)
                except OSError as exc:
                    if written.st_uid != status.st_uid:
                        raise OSError(exc.errno, 'cannot give the new file the owner %d:%d of the old one: %s'
                                      % (status.st_uid, status.st_gid, exc.strerror or exc))
        finally:
            os.close(handle)
        os.rename(temporary, path)
    except (IOError, OSError):
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def pending_upgrade(master, pidfile):
    """Why an upgrade of ``master`` is in progress (a message), or None."""
    if master.upgrading_from:
        return ('pidfile=%s names pid %d, a new master started by USR2 that is not promoted yet (old master %d '
                'still running): finish that upgrade (stop the old master) or abort it (stop this one) first'
                % (pidfile, master.pid, master.upgrading_from))
    for child in master.upgrade_children:
        return ('an upgrade is already pending: new master %d (%s.2) runs beside master %d and is not promoted; '
                'gunicorn ignores another USR2 until it exits. Stop master %d to promote it, or stop %d to abort it'
                % (child, pidfile, master.pid, master.pid, child))
    return None


class PendingUpgrade:
    """An upgrade started by USR2 and neither finished nor aborted: the old master and the new one, both proven.

    ``named`` is the PID the pidfile named when it was found (the old master, or the new one when an earlier
    run handed the pidfile over). ``old_stopping``: the old master no longer holds the listening sockets it
    shares with the new one, which gunicorn's master closes first when it is told to stop (TERM, QUIT): it
    is leaving, and only finishing the upgrade leaves a master.
    """

    def __init__(self, old, new, named, old_stopping):
        self.old = old
        self.new = new
        self.named = named
        self.old_stopping = old_stopping


def find_pending_upgrade(master, pidfile, proc_root=None):
    """The PendingUpgrade ``master`` (as identify_master proved it from ``pidfile``) belongs to, or None.

    Proven from both sides before anything may be signalled: the new master is a live gunicorn process, a child
    of the old one, exec'd with GUNICORN_PID naming it (so the old master lists it among its upgrade children),
    and ``<pidfile>.2`` names it, as gunicorn writes it when such a master starts. GunicornError says which
    proof failed.
    """
    proc_root = proc_root or _proc.PROC
    if master.upgrading_from:
        old, new = inspect_master(master.upgrading_from, proc_root), master
        if old is None:
            raise GunicornError('pidfile=%s names the new master %d of an upgrade, whose old master %d exited while '
                                'it was inspected' % (pidfile, master.pid, master.upgrading_from))
    elif master.upgrade_children:
        old, new = master, inspect_master(master.upgrade_children[0], proc_root)
        if new is None:
            raise GunicornError('the new master %d of the pending upgrade of master %d exited while it was inspected'
                                % (master.upgrade_children[0], master.pid))
    else:
        return None
    if new.pid not in old.upgrade_children or new.upgrading_from != old.pid:
        raise GunicornError('pid %d (%s) is not a new master started by USR2 from master %d'
                            % (new.pid, new.describe(), old.pid))
    upgrade_pidfile = pidfile + '.2'
    try:
        named = _proc.read_pidfile(upgrade_pidfile, 'upgrade pidfile', not_running(upgrade_pidfile),
                                   master_owners(old))
    except _proc.PidfileError as exc:
        raise GunicornError('new master %d runs beside master %d, but it cannot be proven to be this instance\'s: '
                            '%s' % (new.pid, old.pid, exc))
    if named != new.pid:
        raise GunicornError('new master %d runs beside master %d, but %s names pid %d, not it: it cannot be proven '
                            'to be this instance\'s' % (new.pid, old.pid, upgrade_pidfile, named))
    new_sockets = socket_inodes(new.pid, proc_root)
    old_stopping = bool(new_sockets) and not (new_sockets & socket_inodes(old.pid, proc_root))
    return PendingUpgrade(old, new, master.pid, old_stopping)


def stale_upgrade_pidfile(pidfile, proc_root=None, owners=None):
    """A message when ``<pidfile>.2`` names a live process that is not a gunicorn master, else None.

    gunicorn's new master refuses to start when its pidfile names any live process. ``owners``: read_pidfile's,
    those the file may belong to (master_owners); one of anyone else names nothing.
    """
    proc_root = proc_root or _proc.PROC
    path = pidfile + '.2'
    if not os.path.exists(path):
        return None
    try:
        pid = _proc.read_pidfile(path, owners=owners)
    except (IOError, OSError, ValueError):
        return None
    info = _proc.read_process(pid, proc_root)
    if info is None:
        return None
    return ('%s names live %s: gunicorn\'s new master would refuse to start ("Already running"); remove the stale '
            'file' % (path, info.describe()))


# ---------------------------------------------------------------- version

def parse_version(text):
    """'27.0.1' from the text of gunicorn/__init__.py, or None."""
    match = _VERSION_INFO.search(text or '')
    if not match:
        return None
    parts = [part.strip() for part in match.group(1).split(',') if part.strip()]
    return '.'.join(parts) or None


def site_dirs(cmdline, maps_text, exists=os.path.exists, listdir=os.listdir, read_text=_proc.read_text):
    """Directories where the master's interpreter imports packages from, most specific first."""
    found = []

    def add(path):
        if path and path not in found and exists(path):
            found.append(path)

    for line in (maps_text or '').splitlines():
        path = line.split(None, 5)[5] if len(line.split(None, 5)) == 6 else ''
        for marker in ('/site-packages/', '/dist-packages/'):
            if marker in path:
                add(path[:path.index(marker) + len(marker) - 1])
    interpreter = _interpreter(cmdline, read_text)
    if interpreter:
        prefix = os.path.dirname(os.path.dirname(interpreter))
        lib = os.path.join(prefix, 'lib')
        try:
            versions = sorted(name for name in listdir(lib) if name.startswith('python3'))
        except OSError:
            versions = []
        for version in versions:
            add(os.path.join(lib, version, 'site-packages'))
        if not exists(os.path.join(prefix, 'pyvenv.cfg')):
            add(os.path.join(prefix, 'lib', 'python3', 'dist-packages'))
            add(os.path.join(prefix, 'local', 'lib', 'python3', 'dist-packages'))
            for version in versions:
                add(os.path.join(prefix, 'local', 'lib', version, 'dist-packages'))
    return found


def _interpreter(cmdline, read_text):
    if not cmdline or not cmdline[0].startswith('/'):
        return None
    if _PYTHON.match(os.path.basename(cmdline[0])):
        return cmdline[0]
    head = (read_text(cmdline[0], 256) or '').splitlines()
    if head and head[0].startswith('#!'):
        words = head[0][2:].split()
        if words and words[0].startswith('/'):
            return words[-1] if os.path.basename(words[0]) == 'env' and len(words) > 1 and words[-1].startswith('/') else words[0]
    return None


def find_version(master, proc_root=None):
    """gunicorn's version as installed where the master imports it from, or None."""
    proc_root = proc_root or _proc.PROC
    try:
        maps = _guarded(master.pid, 'maps', lambda: _proc.read_text_or_raise(master.pid, 'maps', proc_root), proc_root)
    except OSError:
        maps = None  # hidden from this user: the interpreter's own directories are still searched
    for directory in site_dirs(master.info.cmdline, maps):
        version = parse_version(_proc.read_text(os.path.join(directory, 'gunicorn', '__init__.py'), 8192))
        if version:
            return version
    return None


# ---------------------------------------------------------------- preload_app

# gunicorn's argparse takes any unambiguous prefix of a long option: --pre is already only --preload, --co only
# --config (--capture-output, --certfile, --chdir, --check-config, --ciphers all part earlier).
_PRELOAD_FLAGS = frozenset('--preload'[:length] for length in range(5, len('--preload') + 1))
_CONFIG_FLAGS = frozenset('--config'[:length] for length in range(4, len('--config') + 1))
DEFAULT_CONFIG = 'gunicorn.conf.py'
CONFIG_LIMIT = 1024 * 1024


class Preload:
    """Whether a master loaded the application before forking its workers (gunicorn's ``preload_app``).

    ``value`` is True, False or None (cannot be told); ``source`` says where it was read or, for None, why not.
    """

    def __init__(self, value, source):
        self.value = value
        self.source = source


def gunicorn_arguments(cmdline):
    """The arguments gunicorn parses from a command line is_gunicorn_cmdline accepts; None for a setproctitle
    title, which replaced them."""
    if not cmdline or cmdline[0].startswith('gunicorn: '):
        return None
    if os.path.basename(cmdline[0]) == 'gunicorn':
        return list(cmdline[1:])
    args = cmdline[1:]
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == '-m' or arg in _PYTHON_OPTIONS_WITH_VALUE:
            index += 2
            if arg == '-m':
                return list(args[index:])
            continue
        if not arg.startswith('-'):
            return list(args[index + 1:])
        index += 1
    return []


def option_scan(args):
    """(preload flag given, the config location given or None) in gunicorn's arguments, as argparse reads them.

    An option's value is the next argument unless it starts with '-' (argparse takes that for an option).
    """
    preload, config = False, None
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == '--':
            break
        if arg.startswith('--'):
            name, equals, value = arg.partition('=')
            value = value if equals else None
        else:
            name, value = arg[:2], arg[2:] or None
        if name in _PRELOAD_FLAGS and value is None:
            preload = True
        elif name in _CONFIG_FLAGS or name == '-c':
            if value is None and index < len(args) and not args[index].startswith('-'):
                value = args[index]
                index += 1
            config = value if value is not None else config
    return preload, config


def config_preload(text, path):
    """A Preload from a gunicorn config file's text: the literal it assigns last to ``preload_app`` at the top
    level, False when it never does. None when the file binds the name any other way (in a block, a loop, with
    an expression, ``import *``): reading it would mean running it. The file is parsed, never run, and never
    quoted.
    """
    try:
        tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return Preload(None, '%s is not Python that can be parsed' % path)
    value, where = False, 'not set in %s (default false)' % path
    literal = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if not any(isinstance(target, ast.Name) and target.id == 'preload_app' for target in targets):
            continue
        setting = _bool_literal(getattr(node, 'value', None))
        if len(targets) != 1 or setting is None:
            return Preload(None, '%s line %d sets preload_app to something other than true or false'
                           % (path, node.lineno))
        literal.add(id(targets[0]))
        value, where = setting, '%s line %d' % (path, node.lineno)
    for node in ast.walk(tree):
        bound = ((isinstance(node, ast.Name) and node.id == 'preload_app' and isinstance(node.ctx, ast.Store)
                  and id(node) not in literal)
                 or (isinstance(node, ast.Global) and 'preload_app' in node.names)
                 or (isinstance(node, ast.ImportFrom) and any(alias.name == '*' for alias in node.names))
                 or (isinstance(node, (ast.Import, ast.ImportFrom))
                     and any((alias.asname or alias.name) == 'preload_app' for alias in node.names)))
        if bound:
            return Preload(None, '%s line %d sets preload_app, or may, in a way only running it would tell'
                           % (path, node.lineno))
    return Preload(value, where)


def _bool_literal(node):
    """True or False for a constant gunicorn's validate_bool accepts (a bool, 'true' or 'false'), else None."""
    if not isinstance(node, ast.Constant):
        return None
    if isinstance(node.value, bool):
        return node.value
    if isinstance(node.value, str) and node.value.lower().strip() in ('true', 'false'):
        return node.value.lower().strip() == 'true'
    return None


def read_config(path, uid, gid):
    """(text, None) of a config file read with the master's identity, or (None, why not).

    The path comes from the master's command line, which its (untrusted) user controls: root reads it as that
    user, who read it when gunicorn started, so it never opens what that user may not. A FIFO or device is
    refused without opening it for reading; the text is bounded.
    """
    def read():
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                return [None, 'not a regular file']
            if status.st_size > CONFIG_LIMIT:
                return [None, 'larger than %d bytes' % CONFIG_LIMIT]
            data = os.read(fd, CONFIG_LIMIT + 1)
        finally:
            os.close(fd)
        try:
            return [data.decode('utf-8'), None]
        except UnicodeDecodeError:
            return [None, 'not UTF-8 text']

    try:
        if os.geteuid() == 0 and uid not in (None, 0):
            return tuple(_proc.run_as(uid, gid, read, _proc.OWNER_READ_SECONDS))
        return tuple(read())
    except (IOError, OSError) as exc:
        return None, exc.strerror or str(exc)
    except _proc.OwnerReadError as exc:
        return None, 'reading it as the master\'s user %s' % exc


def find_preload(master, proc_root=None, reader=read_config):
    """A Preload for the proven ``master``, from what gunicorn itself reads at start, in its order: the command
    line, ``GUNICORN_CMD_ARGS`` in its environment, and the config file (``-c``/``--config`` from either, else
    ``gunicorn.conf.py`` in its working directory). ``--preload`` anywhere wins: the setting is a flag no later
    source can turn off. A relative config path is taken from the master's working directory.
    """
    args = gunicorn_arguments(master.info.cmdline)
    if args is None:
        return Preload(None, 'its command line was replaced by a setproctitle title (%s)' % master.info.cmdline[0])
    preload, config = option_scan(args)
    if preload:
        return Preload(True, 'the command line (--preload)')
    env_args = master.environ.get('GUNICORN_CMD_ARGS')
    if env_args:
        try:
            env_preload, env_config = option_scan(shlex.split(env_args))
        except ValueError:
            return Preload(None, 'GUNICORN_CMD_ARGS in its environment cannot be split into arguments')
        if env_preload:
            return Preload(True, 'GUNICORN_CMD_ARGS in its environment (--preload)')
        config = config or env_config
    if config is not None and config.startswith('python:'):
        return Preload(None, 'its config is the Python module %s, which only importing it would tell' % config[7:])
    if config is not None and config.startswith('file:'):
        config = config[5:]
    if config is None or not config.startswith('/'):
        cwd = master_cwd(master.pid, proc_root)
        if cwd is None:
            return Preload(None, 'its working directory cannot be read')
        if config is None:
            config = os.path.join(cwd, DEFAULT_CONFIG)
            if not os.path.lexists(config):
                return Preload(False, 'no --preload, and no config file (no %s)' % config)
        else:
            config = os.path.join(cwd, config)
    owner = _proc.process_owner(master.pid, proc_root)
    text, problem = reader(config, owner[0] if owner else None, owner[1] if owner else None)
    if text is None:
        return Preload(None, 'its config file %s cannot be read: %s' % (config, problem))
    return config_preload(text, config)


# ---------------------------------------------------------------- log

class LogWatch:
    """Remembers where the master's log files end, to return only what was written afterwards.

    The logs and their directory belong to the app's user, who can put a FIFO (it would block the reader) or a
    symlink (to a file only root may read, whose lines would be returned in log_tail) in a log's place. A log is
    opened without following a symlink and without blocking, and read only when the descriptor is a regular file
    owned by the master's user or root. Otherwise ``notes`` says why, and new_lines gives that note instead of the
    log's lines, never what the file holds.
    """

    def __init__(self, paths, owner=None):
        # The master's uid: given, else the one written_files found, else (unknown) this process's own.
        if owner is None:
            owner = getattr(paths, 'owner', None)
        self.owner = os.geteuid() if owner is None else owner
        self.notes = {}
        self.offsets = {}
        for path in paths:
            try:
                self.offsets[path] = os.path.getsize(path)
            except OSError:
                continue

    def add(self, paths):
        for path in paths:
            if path not in self.offsets:
                self.offsets[path] = 0 if not os.path.exists(path) else os.path.getsize(path)

    def new_lines(self, limit=65536):
        """The lines written since the watch began (the last ``limit`` bytes of each log at most), then one note
        line per log that failed its checks (also in ``notes``, by path)."""
        lines = []
        self.notes = {}
        for path, offset in self.offsets.items():
            try:
                handle = os.fdopen(open_log(path, self.owner), 'rb')
            except GunicornError as exc:
                self.notes[path] = str(exc)
                continue
            except (IOError, OSError):
                continue  # gone (rotated away) or unreadable: nothing to show
            try:
                with handle:
                    size = os.fstat(handle.fileno()).st_size
                    handle.seek(max(offset, size - limit) if size >= offset else 0)
                    lines.extend(handle.read(limit).decode('utf-8', 'replace').splitlines())
            except (IOError, OSError):
                continue
        return lines + ['[graceful.wsgi] %s' % self.notes[path] for path in sorted(self.notes)]


def open_log(path, owner):
    """A read-only descriptor of the log file ``path``, opened without following a symlink or blocking.

    GunicornError naming the path and what it is instead, when it is not a regular file owned by ``owner``
    (the master's uid) or root; OSError when it cannot be opened (gone, permission).
    """
    try:
        fd = _proc.open_unfollowed(path)
    except _proc.NotRegularFile as exc:
        raise GunicornError('log file %s not read: it is %s, not a regular file' % (path, _file_kind(exc.mode)))
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise GunicornError('log file %s not read: it is %s, not a regular file'
                                % (path, _file_kind(status.st_mode)))
        if status.st_uid not in (owner, 0):
            raise GunicornError('log file %s not read: it is owned by uid %d, neither the gunicorn master\'s user '
                                '(uid %d) nor root' % (path, status.st_uid, owner))
    except Exception:
        os.close(fd)
        raise
    return fd


def _file_kind(mode):
    return _proc.file_kind(mode) or 'of file type %o' % stat.S_IFMT(mode)


def shows_exit(lines):
    """Whether log lines show a master shutting down on an error (boot failure, bad configuration)."""
    for line in lines:
        bare = _LOG_PREFIX.sub('', line).strip()
        if _EXIT_CODE.search(line) or _HALT_SERVER.search(line) or bare.startswith(('Reason: ', 'Error: ')):
            return True
    return False


def summarize_log(lines):
    """(exit_code, cause) from gunicorn log lines: the workers' exit code and the last error shown."""
    exit_code = None
    reason = None
    error = None
    for line in lines:
        match = _EXIT_CODE.search(line)
        if match:
            exit_code = int(match.group(2))
        match = _REASON.search(line)
        if match:
            reason = match.group(1).strip()
        match = _HALT_SERVER.search(line)
        if match:
            reason, exit_code = match.group(1), int(match.group(2))
        bare = _LOG_PREFIX.sub('', line).strip()
        if _EXCEPTION_LINE.match(bare) or bare.startswith('Error: '):
            if not (error and _LOGGING_ACCIDENT.match(bare)):
                error = bare
    if exit_code is None:
        exit_code = HALT_REASONS.get(reason)
    parts = []
    if error:
        parts.append(error)
    if reason:
        parts.append('gunicorn: %s' % reason.rstrip('.'))
    elif exit_code in EXIT_REASONS:
        parts.append(EXIT_REASONS[exit_code])
    return exit_code, '; '.join(parts) or None

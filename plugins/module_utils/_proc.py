# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Process identity from /proc, so no signal ever reaches a process we have not recognised.

Private to the collection: the interface may change without notice.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import time


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


def read_process(pid, proc_root='/proc'):
    """ProcessInfo for ``pid``, or None when no such process exists (or it is a zombie)."""
    base = os.path.join(proc_root, str(pid))
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


def is_alive(pid, proc_root='/proc'):
    return read_process(pid, proc_root) is not None


def child_pids(pid, proc_root='/proc'):
    """PIDs whose parent is ``pid``: the kernel's children list when it has one, else a scan of every /proc/N/stat."""
    listing = read_text(os.path.join(proc_root, str(pid), 'task', str(pid), 'children'))
    if listing is not None:
        return sorted(int(word) for word in listing.split())
    found = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        info = read_process(int(entry), proc_root)
        if info is not None and info.ppid == pid:
            found.append(info.pid)
    return sorted(found)


def read_pidfile(path):
    """The PID named by a pidfile; ValueError with the reason when it names none."""
    with open(path, 'r') as handle:
        content = handle.read(64).strip()
    if not content:
        raise ValueError('it is empty')
    if not content.isdigit() or int(content) <= 0:
        raise ValueError('it does not hold a PID (starts with %r)' % content[:20])
    return int(content)


def read_link(pid, name, proc_root='/proc'):
    """Target of /proc/PID/<name> (exe, cwd), or None when hidden from this user or gone."""
    try:
        return os.readlink(os.path.join(proc_root, str(pid), name))
    except (IOError, OSError):
        return None


def read_environ(pid, proc_root='/proc'):
    """The process's initial environment as a dict; empty when unreadable."""
    try:
        with open(os.path.join(proc_root, str(pid), 'environ'), 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return {}
    environ = {}
    for entry in raw.split(b'\0'):
        key, sep, value = entry.partition(b'=')
        if sep:
            environ[key.decode('utf-8', 'replace')] = value.decode('utf-8', 'replace')
    return environ


def read_text(path, limit=1024 * 1024):
    """A small text file's content, or None when it cannot be read."""
    try:
        with open(path, 'r') as handle:
            return handle.read(limit)
    except (IOError, OSError, UnicodeDecodeError):
        return None


def all_child_pids(pid, proc_root='/proc'):
    """Children of every thread of ``pid``: a child forked by another thread than the main one is only in that
    thread's children list. Falls back to child_pids when the kernel keeps no such list."""
    try:
        tasks = os.listdir(os.path.join(proc_root, str(pid), 'task'))
    except (IOError, OSError):
        return []
    found = set()
    listed = False
    for task in tasks:
        listing = read_text(os.path.join(proc_root, str(pid), 'task', task, 'children'))
        if listing is not None:
            listed = True
            found.update(int(word) for word in listing.split())
    return sorted(found) if listed else child_pids(pid, proc_root)


def read_link_or_raise(pid, name, proc_root='/proc'):
    """Target of /proc/PID/<name>, None when the process is gone; OSError (EACCES, EPERM) when it is hidden.

    Unlike read_link, a process this user may not look at is not mistaken for one that exited.
    """
    try:
        return os.readlink(os.path.join(proc_root, str(pid), name))
    except (IOError, OSError) as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise
        return None


def read_text_or_raise(pid, name, proc_root='/proc'):
    """Content of /proc/PID/<name> (maps), None when the process is gone; OSError (EACCES, EPERM) when hidden."""
    try:
        with open(os.path.join(proc_root, str(pid), name), 'r') as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise
        return None


def parse_start_ticks(text):
    """Start time of a process in clock ticks since boot: field 22 of the text of /proc/PID/stat."""
    # Fields counted after comm, which may hold spaces: state is field 3, starttime field 22.
    return int(text[text.rindex(')') + 2:].split()[19])


def start_ticks(pid, proc_root='/proc'):
    """The process's start time in clock ticks since boot, or None when it is gone."""
    text = read_text(os.path.join(proc_root, str(pid), 'stat'))
    if text is None:
        return None
    try:
        return parse_start_ticks(text)
    except (ValueError, IndexError):
        return None


def parse_uptime(text):
    """Seconds since boot from the text of /proc/uptime."""
    return float(text.split()[0])


def boot_time(proc_root='/proc', now=None):
    """Epoch time of the boot, to 10 ms (now minus /proc/uptime), or None when /proc/uptime cannot be read.

    Not btime of /proc/stat: that is truncated to the second, so a process started just after an
    event could seem to have started up to a second before it.
    """
    text = read_text(os.path.join(proc_root, 'uptime'))
    if not text:
        return None
    uptime = parse_uptime(text)
    return (time.time() if now is None else now) - uptime


def clock_tick():
    """Seconds per clock tick, the resolution of start times in /proc/PID/stat."""
    return 1.0 / os.sysconf('SC_CLK_TCK')


def start_time(pid, proc_root='/proc', boot=None):
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

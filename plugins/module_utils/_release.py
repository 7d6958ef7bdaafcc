# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which release the workers of a WSGI server run, judged from /proc and the filesystem only.

Private to the collection: the interface may change without notice.
Facts relied on:

* ``<app_root>/current`` is a symlink to ``releases/<name>``, switched by renaming a
  new symlink over it, so the lstat mtime of ``current`` is the time of the switch
  (a rename keeps the mtime of the link it moves, and the link is made just before);
* a worker's working directory is the release it loaded the application from:
  gunicorn's master changes into ``chdir`` (``<app_root>/current``) whenever it
  (re)loads its configuration, at start and at each ``HUP``, before it forks the
  workers, and uWSGI's ``chdir2`` is done by each worker after it loaded its apps
  (``lazy-apps``). ``chdir`` resolves the symlink, so ``/proc/PID/cwd`` names
  ``releases/<name>``, and still does after ``current`` moved on;
* ``/proc/PID/stat`` gives a start time in clock ticks since boot, so a worker
  that started before the switch is told apart only to one tick;
* files a process maps (C extensions, shared libraries, an interpreter copied into
  a venv) stay in ``/proc/PID/maps``, and a fork inherits its parent's, so an old
  release's venv seen there means the worker still runs some of its code. Pure
  Python modules are read, not mapped, and leave no such trace.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import os

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc

# How many stray files a message names before it only counts the rest.
SHOWN_STRAY_FILES = 2


class ReleaseError(Exception):
    """The proof cannot be made at all; the message names the option or path and what was found."""


def iso_utc(epoch):
    """``2026-11-22T16:20:01.482Z`` for an epoch time."""
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=epoch)
    return moment.strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (moment.microsecond // 1000)


def seconds(value):
    """A duration for a message: tenths from a second on, hundredths below (a tick is 0.01 s)."""
    value = abs(value)
    return '%.1f s' % value if value >= 1 else '%.2f s' % value


def under(path, directory):
    return path == directory or path.startswith(directory.rstrip('/') + '/')


# ---------------------------------------------------------------- the release current points to

def read_current(app_root, release=None):
    """(release directory, switch time) of ``<app_root>/current``; ReleaseError naming the path otherwise."""
    current = os.path.join(app_root, 'current')
    try:
        status = os.lstat(current)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ReleaseError('app_root=%s: %s does not exist' % (app_root, current))
        raise ReleaseError('app_root=%s: cannot read %s: %s' % (app_root, current, exc.strerror))
    if not os.path.islink(current):
        raise ReleaseError('app_root=%s: %s is not a symlink (the release role switches releases by '
                           'renaming a symlink over it)' % (app_root, current))
    release_dir = os.path.realpath(current)
    if not os.path.isdir(release_dir):
        raise ReleaseError('app_root=%s: %s points to %s, which is not a directory' % (
            app_root, current, os.readlink(current)))
    if release is not None:
        expected = os.path.realpath(os.path.join(app_root, 'releases', release))
        if release_dir != expected:
            raise ReleaseError('release=%s: %s points to %s, not to %s' % (release, current, release_dir, expected))
    return release_dir, status.st_mtime


def releases_dir(app_root):
    """Resolved ``<app_root>/releases``, the prefix of every release's files as /proc shows them."""
    return os.path.realpath(os.path.join(app_root, 'releases'))


# ---------------------------------------------------------------- what /proc says about one worker

def observe_worker(pid, boot, proc_root=None):
    """{pid, cwd, started_at, mapped} of a live worker, or None when it exited or is a zombie.

    ReleaseError when this user may not look at it: a hidden working directory must not pass
    for a wrong one, nor for a worker that is gone. Root that /proc denies (no CAP_SYS_PTRACE)
    reads them as the worker's owner instead (_proc.read_guarded).
    """
    proc_root = proc_root or _proc.PROC
    info = _proc.read_process(pid, proc_root)
    if info is None:
        return None
    try:
        cwd, maps = _proc.read_guarded(pid, 'cwd and maps', lambda: _cwd_and_maps(pid, proc_root), proc_root)
    except _proc.OwnerReadError as exc:
        raise ReleaseError('worker %d: %s' % (pid, exc))
    except OSError as exc:
        if not _proc.is_denied(exc):
            return None  # exited, or its PID was reused, while it was read
        raise ReleaseError('cannot read %s of worker %d (%s): run the module as the user the server runs as, or '
                           'as root' % (exc.filename or os.path.join(proc_root, str(pid)), pid,
                                        exc.strerror or 'permission denied'))
    started = _proc.start_time(pid, proc_root, boot=boot)
    if cwd is None or maps is None or started is None:
        return None
    return dict(pid=pid, cwd=cwd, started_at=started, mapped=_proc.mapped_paths(maps))


def _cwd_and_maps(pid, proc_root):
    """[cwd, maps text] of ``pid``, None for what is gone; OSError (EACCES, EPERM) when hidden."""
    return [_proc.read_link_or_raise(pid, 'cwd', proc_root), _proc.read_text_or_raise(pid, 'maps', proc_root)]


def workers_of(master_pid, boot, proc_root=None):
    """Observations of the master's live children (every one of them counts as a worker)."""
    proc_root = proc_root or _proc.PROC
    found = []
    for pid in _proc.all_child_pids(master_pid, proc_root):
        worker = observe_worker(pid, boot, proc_root)
        if worker is not None:
            found.append(worker)
    return found


# ---------------------------------------------------------------- judging

def worker_report(worker, expected_dir, switched_at, releases_root):
    """The RETURN entry for one observed worker."""
    stray = [path for path in worker['mapped'] if under(path, releases_root) and not under(path, expected_dir)]
    return dict(
        pid=worker['pid'],
        cwd=worker['cwd'],
        started_at=iso_utc(worker['started_at']),
        started_after_switch=round(worker['started_at'] - switched_at, 3),
        stray_mapped_files=stray,
    )


def worker_problem(report, expected_dir, tick):
    """What keeps this worker from the proof, as a phrase about it, or None."""
    faults = []
    if report['cwd'] != expected_dir:
        faults.append('runs in %s' % report['cwd'])
    # Start times have tick resolution: one started in the switch's tick may read up to a tick earlier.
    if report['started_after_switch'] < -tick:
        faults.append('started %s before the switch' % seconds(report['started_after_switch']))
    stray = report['stray_mapped_files']
    if stray:
        shown = ', '.join(stray[:SHOWN_STRAY_FILES])
        if len(stray) > SHOWN_STRAY_FILES:
            shown += ' and %d more' % (len(stray) - SHOWN_STRAY_FILES)
        counted = 'a file' if len(stray) == 1 else '%d files' % len(stray)
        faults.append('maps %s of another release: %s' % (counted, shown))
    if not faults:
        return None
    return 'worker %d %s' % (report['pid'], ', '.join(faults))


def judge_workers(expected_dir, switched_at, workers_info, releases_root, tick):
    """Problems (phrases) keeping the observed workers from proving ``expected_dir``; empty when proven."""
    problems = []
    for worker in sorted(workers_info, key=lambda item: item['pid']):
        problem = worker_problem(worker_report(worker, expected_dir, switched_at, releases_root), expected_dir, tick)
        if problem:
            problems.append(problem)
    return problems


def count_problem(master_pid, count, min_workers):
    """The problem of a master with too few workers, or None."""
    if count >= min_workers:
        return None
    return 'master %d has %d worker%s (child processes), fewer than min_workers=%d' % (
        master_pid, count, '' if count == 1 else 's', min_workers)


def failure_message(subject, expected_dir, switched_at, problems):
    """``release proof failed for SUBJECT: expected every worker in DIR (current switched AT); PROBLEM; ...``."""
    return 'release proof failed for %s: expected every worker in %s (current switched %s); %s' % (
        subject, expected_dir, iso_utc(switched_at), '; '.join(problems))

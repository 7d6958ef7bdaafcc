# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The deploy lock: one JSON file per app, created with O_EXCL so that two runs never both hold it.

Private to the collection: the interface may change without notice.
Rules relied on:

* ``open(O_CREAT | O_EXCL)`` creates the file in exactly one of any number of
  concurrent callers (POSIX; also on NFSv3+ and every local filesystem);
* ``rename`` within one directory is atomic: a lock being removed is moved aside
  first and compared with what was read, so a release or a break never removes a
  lock that another run took in between.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import json
import os
import stat
import time

from ansible_collections.graceful.wsgi.plugins.module_utils import _journal

LOCK_MODE = 0o644
# The creator writes right after O_EXCL: an empty lock file is one being written, for this long at most.
EMPTY_GRACE_SECONDS = 1.0
EMPTY_POLL_SECONDS = 0.05
SNIPPET_CHARS = 120

# Actions decide() returns.
ACQUIRE = 'acquire'
KEEP = 'keep'
BREAK_AND_ACQUIRE = 'break_and_acquire'
NOTHING = 'nothing'
RELEASE = 'release'
BREAK_AND_RELEASE = 'break_and_release'


class LockError(Exception):
    """The message names the option or path and what was found instead."""


class LockHeld(LockError):
    """Another run holds the lock (or the lock is corrupt) and break_lock is false."""

    def __init__(self, message, holder):
        super(LockHeld, self).__init__(message)
        self.holder = holder


class Lock:
    """What a lock file held when read: its raw bytes and, unless corrupt, its JSON object."""

    def __init__(self, path, raw, content=None, problem=None, journal=None):
        self.path = path
        self.raw = raw
        self.content = content
        self.problem = problem
        # The run journal: one JSON line per entry after the holder's JSON document.
        self.journal = journal or []

    @property
    def corrupt(self):
        return self.content is None

    @property
    def run_id(self):
        return None if self.corrupt else self.content['run_id']

    def holder(self):
        """The holder as returned to the caller; a corrupt file gives the start of its text."""
        if self.corrupt:
            return {'corrupt': snippet(self.raw.decode('utf-8', 'replace'))}
        return dict(self.content)


def utc_now(clock=time.time):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(clock()))


def lock_content(run_id, holder, acquired_at):
    """What the lock file holds: the caller's facts, with run_id and acquired_at that they cannot override."""
    content = dict(holder or {})
    content.update(run_id=run_id, acquired_at=acquired_at)
    return content


def encode(content, journal=()):
    """The holder's JSON document, then one line per journal entry."""
    return (json.dumps(content, sort_keys=True, indent=2) + '\n').encode('utf-8') + b''.join(
        _journal.entry_line(entry) for entry in journal)


def snippet(text, limit=SNIPPET_CHARS):
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def parse(path, raw):
    """A Lock from the bytes of ``path``; corrupt when it does not start with a JSON object with a string run_id.

    The holder's JSON document comes first; the run journal's lines, appended by the holder, follow it.
    """
    try:
        text = raw.decode('utf-8')
        content, end = json.JSONDecoder().raw_decode(text.lstrip())
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return Lock(path, raw, problem='not JSON' if raw.strip() else 'empty')
    if not isinstance(content, dict):
        return Lock(path, raw, problem='not a JSON object')
    if not isinstance(content.get('run_id'), str) or not content['run_id']:
        return Lock(path, raw, problem='no run_id')
    return Lock(path, raw, content, journal=_journal.parse_lines(text.lstrip()[end:]))


def check_directory(path):
    """Fail early, naming ``path``, when the lock cannot live there."""
    directory = os.path.dirname(path) or '.'
    if not os.path.exists(directory):
        raise LockError('path=%s: directory %s does not exist' % (path, directory))
    if not os.path.isdir(directory):
        raise LockError('path=%s: %s is not a directory' % (path, directory))
    if os.path.isdir(path):
        raise LockError('path=%s: is a directory, not a lock file' % path)


def _os_error(path, exc, doing):
    reason = 'permission denied' if exc.errno in (errno.EACCES, errno.EPERM) else exc.strerror or str(exc)
    return LockError('path=%s: cannot %s the lock: %s' % (path, doing, reason))


def _file_kind(mode):
    for test, name in ((stat.S_ISFIFO, 'a FIFO'), (stat.S_ISDIR, 'a directory'), (stat.S_ISSOCK, 'a socket'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return 'not a regular file'


def _open_regular(path, flags, doing, mode=LOCK_MODE):
    """A descriptor of the regular file ``path`` owned by this user, opened without following a symlink or
    blocking on a FIFO; None when it does not exist. LockError names the path and what it is instead.

    Lock files are only ever created by the user that runs the module (root): one owned by anyone else was put
    there by them (/run/lock is writable by every user), and is neither trusted nor written to.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise LockError('path=%s: is a symlink; the lock is never followed through one' % path)
        # ENXIO: a socket; EACCES: with O_CREAT, the kernel's protected_regular/protected_fifos refuse another
        # user's file in a sticky directory. lstat tells which, when it can.
        problem = _not_a_lock(path, os.lstat) if exc.errno in (errno.ENXIO, errno.EACCES, errno.EPERM) else None
        if problem:
            raise LockError(problem)
        raise _os_error(path, exc, doing)
    problem = _not_a_lock(path, lambda _path: os.fstat(fd))
    if problem:
        os.close(fd)
        raise LockError(problem)
    return fd


def _not_a_lock(path, status_of):
    """What is wrong with ``path`` as a lock file (not a regular file, or another user's), or None."""
    try:
        status = status_of(path)
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return 'path=%s: is %s, not a lock file' % (path, _file_kind(status.st_mode))
    if status.st_uid != os.geteuid():
        return ('path=%s: is owned by uid %d, not by uid %d that runs the module and creates its lock files; not '
                'used as a lock' % (path, status.st_uid, os.geteuid()))
    return None


def _read_fd(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)


def _read_raw(path):
    fd = _open_regular(path, os.O_RDONLY, 'read')
    if fd is None:
        return None
    try:
        return _read_fd(fd)
    except OSError as exc:
        raise _os_error(path, exc, 'read')
    finally:
        os.close(fd)


def read_lock(path, clock=time.monotonic, sleep=time.sleep):
    """The Lock at ``path``, or None when there is none."""
    give_up = clock() + EMPTY_GRACE_SECONDS
    while True:
        raw = _read_raw(path)
        if raw is None:
            return None
        if raw or clock() >= give_up:
            return parse(path, raw)
        sleep(EMPTY_POLL_SECONDS)


def describe(lock):
    """``run X: user U on controller C since T (release R, playbook P)`` from what the holder stored."""
    if lock.corrupt:
        return 'a corrupt lock file (%s: %r)' % (lock.problem, snippet(lock.raw.decode('utf-8', 'replace'), 60))
    content = lock.content
    words = ['run %s' % lock.run_id]
    who = []
    if content.get('user'):
        who.append('user %s' % content['user'])
    if content.get('controller'):
        who.append('on controller %s' % content['controller'])
    since = content.get('acquired_at') or content.get('started')
    if since:
        who.append('since %s' % since)
    extras = ['%s %s' % (key, content[key]) for key in ('release', 'playbook', 'pid') if content.get(key)]
    text = words[0] + (': ' + ' '.join(who) if who else '')
    return text + (' (%s)' % ', '.join(extras) if extras else '')


def what_is_broken(lock):
    return 'a corrupt lock file' if lock.corrupt else 'the lock of %s' % describe(lock)


def held_message(path, lock, state, now=None):
    if lock.corrupt:
        return ('deploy lock %s is corrupt (%s: %r). If no deploy is running, set break_lock=true to %s it.'
                % (path, lock.problem, snippet(lock.raw.decode('utf-8', 'replace'), 60),
                   'replace' if state == 'present' else 'remove'))
    if state == 'present':
        tail = ('Wait for that run to end; if it died, set break_lock=true to take the lock and reconcile what its '
                'journal shows.')
    else:
        tail = 'Not releasing a lock this run does not hold; if that run died, set break_lock=true to remove it.'
    journal = _journal.summary(lock.journal, lock.content.get('acquired_at'), now)
    return 'deploy lock %s is held by %s: %s. %s' % (path, describe(lock), journal, tail)


def decide(path, state, run_id, lock, break_lock, now=None):
    """The action for ``state`` given the current Lock (or None); LockHeld when another run has it."""
    mine = lock is not None and not lock.corrupt and lock.run_id == run_id
    if state == 'present':
        if lock is None:
            return ACQUIRE
        if mine:
            return KEEP
        if break_lock:
            return BREAK_AND_ACQUIRE
    else:
        if lock is None:
            return NOTHING
        if mine:
            return RELEASE
        if break_lock:
            return BREAK_AND_RELEASE
    raise LockHeld(held_message(path, lock, state, now), lock.holder())


def create(path, content, journal=()):
    """Create the lock holding ``content`` (and the journal entries it inherits); False when a lock file already
    exists (someone else won)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, LOCK_MODE)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise _os_error(path, exc, 'create')
    try:
        # The umask must not hide the holder from other deploy users who need to read who holds it.
        os.fchmod(fd, LOCK_MODE)
        data = encode(content, journal)
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        os.close(fd)
        # A half-written lock would read as corrupt and block every later run.
        os.unlink(path)
        raise _os_error(path, exc, 'write')
    os.close(fd)
    return True


def remove(lock):
    """Remove the lock file ``lock`` was read from, and only if it still holds the same bytes.

    The file is renamed aside first (atomic) and compared; one that changed since it was read
    belongs to a run that took the lock in between and is put back.
    """
    path = lock.path
    aside = '%s.removing-%d-%s' % (path, os.getpid(), os.urandom(4).hex())
    try:
        os.rename(path, aside)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise _os_error(path, exc, 'remove')
    moved = _read_raw(aside)
    if moved == lock.raw:
        os.unlink(aside)
        return True
    try:
        # link, not rename: a lock created meanwhile by a third run must not be overwritten.
        os.link(aside, path)
    except OSError:
        raise LockError('path=%s: the lock changed while it was being removed and could not be put back; the lock '
                        'that was there is kept as %s' % (path, aside))
    os.unlink(aside)
    return False


def acquire(path, run_id, content, journal=()):
    """Take the lock for ``run_id``: (changed, holder). LockHeld names the run that holds it instead."""
    # A lock that vanishes between a failed create and the read gets another try, a few at most.
    for _attempt in range(3):
        if create(path, content, journal):
            return True, content
        current = read_lock(path)
        if current is not None and decide(path, 'present', run_id, current, False) == KEEP:
            return False, current.holder()
    raise LockError('path=%s: the lock file keeps appearing and vanishing; another run is taking and releasing it'
                    % path)


def release(path, run_id, lock):
    """Remove the lock ``run_id`` holds, as read before: (changed, removed holder).

    LockHeld when another run holds it (it took the lock after a break, for instance).
    """
    for _attempt in range(3):
        if decide(path, 'absent', run_id, lock, False) == NOTHING:
            return False, None
        if remove(lock):
            return True, lock.holder()
        lock = read_lock(path)
    raise LockError('path=%s: the lock file keeps changing while this run releases it' % path)


# ---------------------------------------------------------------- the run journal

def append_journal(path, run_id, entry):
    """Append ``entry`` to the journal of the lock ``run_id`` holds: the Lock as it was before the append.

    One write with O_APPEND, so entries of the hosts of a batch, recorded at the same time, never interleave.
    LockError when the run does not hold the lock (another run broke it, or it was never taken).
    """
    line = _journal.entry_line(_journal.check_entry(entry))
    fd = _open_regular(path, os.O_RDWR | os.O_APPEND, 'write')
    if fd is None:
        raise LockError('path=%s: no lock, so run %s cannot record %s of %s in its journal'
                        % (path, run_id, entry['step'], entry['host']))
    try:
        lock = parse(path, _read_fd(fd))
        if lock.corrupt or lock.run_id != run_id:
            raise LockError('path=%s: not recording %s of %s: the lock is held by %s, not by run %s'
                            % (path, entry['step'], entry['host'], describe(lock), run_id))
        os.write(fd, line)
    except OSError as exc:
        raise _os_error(path, exc, 'write the journal of')
    finally:
        os.close(fd)
    return lock


def pending_path(path):
    """Where a run that ended keeps the hosts it could not settle, for the next run."""
    return path + '.pending'


def read_pending(path):
    """The journal entries a finished run left unsettled (pending record of the lock ``path``); [] when none."""
    raw = _read_raw(pending_path(path))
    return _journal.parse_lines(raw.decode('utf-8', 'replace')) if raw else []


def write_pending(path, entries):
    """Keep the entries of unsettled hosts for the next run (atomically, root-only), or drop the record when
    there are none. Returns whether a record is kept."""
    target = pending_path(path)
    if not entries:
        try:
            os.unlink(target)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise _os_error(target, exc, 'remove')
        return False
    temporary = '%s.%d-%s' % (target, os.getpid(), os.urandom(4).hex())
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        data = b''.join(_journal.entry_line(entry) for entry in entries)
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, target)
    return True


def unsettled_entries(entries):
    """The entries about the hosts the journal leaves unsettled, in order (all of each such host's entries)."""
    hosts = set(state['host'] for state in _journal.pending(entries))
    return [entry for entry in entries if entry['host'] in hosts]


# ---------------------------------------------------------------- process locks (flock)
# A lock held for the life of one module run: the kernel drops it when the process ends, however it ends,
# so it never needs breaking. The file keeps the holder's facts for the message of a refused run.
# Its file lives in a directory only this user may enter (private_directory): in a directory every user may write
# to (/run/lock, /tmp) anyone could take its predictable name first and deny every run.

PRIVATE_MODE = 0o700


def private_directory(path, create=True):
    """``path`` once it is a directory of this user's that no one else may enter (mode 0700), created so if it is
    missing and ``create``; None when it is missing and not ``create`` (check mode).

    Its parent must be a directory of root's or this user's that no one else may write to: otherwise someone else
    could have made ``path`` (or could move it away) first. LockError names the path and what is wrong; nothing
    found there is changed (a directory of the wrong owner or mode is somebody's doing, to be looked at).
    """
    parent = os.path.dirname(path.rstrip('/')) or '/'
    euid = os.geteuid()
    try:
        status = os.stat(parent)
    except OSError as exc:
        raise LockError('lock directory %s: its parent %s cannot be used: %s' % (path, parent, exc.strerror or exc))
    if not stat.S_ISDIR(status.st_mode):
        raise LockError('lock directory %s: its parent %s is not a directory' % (path, parent))
    if status.st_uid not in (0, euid) or status.st_mode & 0o022:
        raise LockError('lock directory %s: its parent %s is owned by uid %d with mode %04o: other users may create '
                        'or move names in it' % (path, parent, status.st_uid, stat.S_IMODE(status.st_mode)))
    if create:
        try:
            os.mkdir(path, PRIVATE_MODE)
            # The umask may have taken bits away; the parent lets no one else replace it meanwhile.
            os.chmod(path, PRIVATE_MODE)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise LockError('lock directory %s: cannot be created: %s' % (path, exc.strerror or exc))
    try:
        status = os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not create:
            return None
        raise LockError('lock directory %s: %s' % (path, exc.strerror or exc))
    problem = _not_private(status, euid)
    if problem:
        raise LockError('lock directory %s: %s; not used, and left as it is' % (path, problem))
    return path


def _not_private(status, euid):
    """What keeps a directory with this lstat from being this user's private one, or None."""
    if stat.S_ISLNK(status.st_mode):
        return 'is a symbolic link, never followed'
    if not stat.S_ISDIR(status.st_mode):
        return 'is %s, not a directory' % ('a regular file' if stat.S_ISREG(status.st_mode) else _file_kind(status.st_mode))
    if status.st_uid != euid:
        return 'is owned by uid %d, not by uid %d that runs the module' % (status.st_uid, euid)
    if stat.S_IMODE(status.st_mode) & 0o077:
        return 'has mode %04o: other users may enter it (expected %04o)' % (stat.S_IMODE(status.st_mode), PRIVATE_MODE)
    return None


def flock_acquire(path, content):
    """An open descriptor holding an exclusive flock on ``path``; LockHeld naming the holder if another has it."""
    # /run/lock is writable by every user: a FIFO, a symlink or another user's file there fails at once.
    fd = _open_regular(path, os.O_RDWR | os.O_CREAT, 'open')
    if fd is None:  # even with O_CREAT: its directory is missing
        raise LockError('path=%s: cannot open the lock: %s' % (path, os.strerror(errno.ENOENT)))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError) as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            holder = flock_holder(path)
            raise LockHeld('%s is held by another run: %s' % (path, describe_holder(holder)), holder)
        raise _os_error(path, exc, 'lock')
    os.ftruncate(fd, 0)
    os.write(fd, encode(content))
    return fd


def flock_release(fd):
    """Empties the file (no stale holder facts) and drops the lock."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def flock_is_held(path):
    """The holder's facts when another process holds the flock on ``path``, else None (check mode).

    LockError, as flock_acquire, when ``path`` is a FIFO, a symlink or another user's file."""
    fd = _open_regular(path, os.O_RDONLY, 'open')
    if fd is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError):
        return flock_holder(path) or {}
    finally:
        os.close(fd)
    return None


def flock_holder(path):
    raw = _read_raw(path)
    if raw is None:
        return {}
    try:
        content = json.loads(raw.decode('utf-8', 'replace'))
    except ValueError:
        return {'corrupt': snippet(raw.decode('utf-8', 'replace'))}
    return content if isinstance(content, dict) else {'corrupt': snippet(raw.decode('utf-8', 'replace'))}


def describe_holder(holder):
    if not holder:
        return 'holder unknown (it has not written its facts yet)'
    if 'corrupt' in holder:
        return 'holder unreadable: %r' % holder['corrupt']
    return ', '.join('%s %s' % (key, holder[key]) for key in sorted(holder))

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The driver of release_switch: ``<app_root>/current`` pointed at an installed release and the switch recorded,
in one call.

Private to the collection: the interface may change without notice.
Facts relied on (the layout of the role release):

* ``current`` is a relative symlink, ``releases/<name>``; a new symlink made beside it and renamed over it replaces
  it at once, so a process resolving ``current`` sees the old release or the new one, never nothing. The renamed
  link keeps its own mtime, the time of the switch, which release_proof compares with the workers' start;
* ``switches.jsonl`` is root's record of switches, one JSON object per line (at, release, from, reason): what
  "previous" means for a rollback, not directory times. The app user owns ``/run/<app>``, not ``app_root``, but the
  record is still opened without following a symlink and checked (a regular file of root's) before it is written
  or read.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import json
import os
import re
import stat

NAME = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z')
ROOT_PATH = re.compile(r'\A(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})+\Z')
TRUSTED_UID = 0
# Years of switches fit in far less; a record larger than this is not the role's.
MAX_RECORD_BYTES = 4 * 1024 * 1024
RECORD = 'switches.jsonl'


class SwitchError(Exception):
    """The switch cannot be made or recorded; the message names the option or the path."""


def app_root_problem(app_root):
    """Why ``app_root`` cannot be the app's directory, or None (release_info checks it the same way)."""
    if not ROOT_PATH.match(app_root) or '/..' in app_root:
        return ('app_root=%r: use an absolute path of names of letters, digits, ".", "_" and "-", with no ".."'
                % app_root)
    return None


def check_params(params):
    """Why the parameters cannot be used, or None: the names that become paths."""
    if not NAME.match(params['release']) or '..' in params['release']:
        return ('release=%r: use 1 to 64 letters, digits, ".", "_" and "-", starting with a letter or a digit, '
                'with no ".."' % params['release'])
    return app_root_problem(params['app_root'])


def read_link(path):
    """Where the symlink ``path`` points, '' when there is none; SwitchError when it is not a symlink."""
    try:
        return os.readlink(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return ''
        if exc.errno == errno.EINVAL:
            raise SwitchError('%s is not a symlink (the release role switches releases by renaming a symlink over '
                              'it); move it away by hand' % path)
        raise SwitchError('cannot read %s: %s' % (path, exc.strerror or exc))


def _check_record(path, fd):
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SwitchError('%s is not a regular file; the record of switches is never written through one' % path)
    if st.st_uid != TRUSTED_UID:
        raise SwitchError('%s is owned by uid %d, not root; not trusted as the record of switches' % (path, st.st_uid))
    if st.st_size > MAX_RECORD_BYTES:
        raise SwitchError('%s is %d bytes, too large for a record of switches' % (path, st.st_size))


def _open_record(path, flags, mode=0o644):
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SwitchError('%s is a symbolic link; the record of switches is never followed through one' % path)
        raise


def read_record(path):
    """The text of the record of switches, '' when there is none yet."""
    try:
        fd = _open_record(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return ''
        raise SwitchError('cannot open %s: %s' % (path, exc.strerror or exc))
    try:
        _check_record(path, fd)
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b''.join(chunks).decode('utf-8', 'replace')
    finally:
        os.close(fd)


def append_record(path, entry):
    """Add ``entry`` as one JSON line at the end of the record (created root's, 0644, when missing)."""
    try:
        fd = _open_record(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError as exc:
        raise SwitchError('cannot open %s: %s' % (path, exc.strerror or exc))
    try:
        _check_record(path, fd)
        os.write(fd, (json.dumps(entry) + '\n').encode('utf-8'))
        os.fsync(fd)
    except OSError as exc:
        raise SwitchError('cannot write %s: %s' % (path, exc.strerror or exc))
    finally:
        os.close(fd)


def replace_link(path, target):
    """Point the symlink ``path`` at ``target`` by renaming a new symlink over it."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, '.%s.%d.tmp' % (name, os.getpid()))
    try:
        try:
            os.unlink(temporary)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        os.symlink(target, temporary)
        os.rename(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise SwitchError('cannot point %s at %s: %s' % (path, target, exc.strerror or exc))


def utc_now():
    # utcnow() is deprecated from Python 3.12: the same naive ISO text, from an aware time.
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat() + 'Z'


def run(params, check_mode, now=utc_now):
    """The module's result; SwitchError (the message names the path) on failure."""
    app_root, release = params['app_root'], params['release']
    target = 'releases/%s' % release
    python = os.path.join(app_root, target, 'venv', 'bin', 'python')
    if not os.path.exists(python):
        raise SwitchError('cannot switch %s/current to release %s: %s does not exist (not installed, or pruned)'
                          % (app_root, release, python))
    current = os.path.join(app_root, 'current')
    record_path = os.path.join(app_root, RECORD)
    before = read_link(current)
    switched = before != target
    if switched and not check_mode:
        replace_link(current, target)
        append_record(record_path, dict([('at', now()), ('release', release),
                                         ('from', os.path.basename(before) or None), ('reason', params['reason'])]))
    return dict(changed=switched, switched=switched, release=release, before=os.path.basename(before),
                record=read_record(record_path),
                msg='%s/current %s' % (app_root, ('now points to %s (was %s)' % (target, before or 'missing'))
                                       if switched else 'already points to %s' % target))

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Static assets of every release merged into one shared directory per URL prefix.

Private to the collection: the interface may change without notice.
Facts relied on:

* a release's static directory (Django's STATIC_ROOT, filled by collectstatic run as the
  app user) belongs to the untrusted app user, who may put symlinks, FIFOs, hard links or
  anything else there, and swap them while they are read. So everything below ``app_root``
  is opened one component at a time, relative to its parent's descriptor, with O_NOFOLLOW
  (files also with O_NONBLOCK): no symlink is ever followed, a FIFO never blocks, and the
  type of the opened descriptor (fstat) is what counts;
* ``rename`` within a directory replaces the entry, and a symlink or a FIFO there is
  replaced itself, not written through: a destination file is written as a new file beside
  it, then renamed over it; nothing in the destination is ever opened for writing;
* hashed names (ManifestStaticFilesStorage, WhiteNoise) change whenever the content does,
  so keeping the files of every release still under ``releases/`` serves the pages of the
  old and of the new release alike during a rolling deploy. An unhashed name (robots.txt)
  holds the version of the release merged last.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import hashlib
import os
import re
import stat

PREFIX_PATTERN = re.compile(r'\A/([A-Za-z0-9._-]+/)*[A-Za-z0-9._-]+/?\Z')
DIRECTORY_PATTERN = re.compile(r'\A[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?\Z')
RELEASE_PATTERN = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9._-]*\Z')
# A name found in a release's static directory becomes a name in the shared one: no control character, no '/'.
NAME_PATTERN = re.compile(r'\A[^\x00-\x1f\x7f-\x9f/]+\Z')
CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f]')

SHARED = ('shared', 'static')
FILE_MODE = 0o644
DIR_MODE = 0o755
CHUNK = 1024 * 1024
SHOWN = 50
TEMPORARY = '.graceful-static-%s.tmp'

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# One prefix of the ``static`` option: ``source`` is the directory's path in the release, ``shared`` the path of
# its shared directory under <app_root>/shared/static, both as tuples of names.
Mapping = collections.namedtuple('Mapping', 'prefix directory source shared')


class StaticError(Exception):
    """The message names the option or the path, never the content of a file."""

    def __init__(self, message, result=None):
        super(StaticError, self).__init__(message)
        self.result = result


# ---------------------------------------------------------------- names and paths

def kind(mode):
    """What a file of this mode is, for ``skipped`` and messages."""
    for test, name in ((stat.S_ISLNK, 'symlink'), (stat.S_ISDIR, 'directory'), (stat.S_ISFIFO, 'FIFO'),
                       (stat.S_ISSOCK, 'socket'), (stat.S_ISCHR, 'character device'),
                       (stat.S_ISBLK, 'block device'), (stat.S_ISREG, 'regular file')):
        if test(mode):
            return name
    return 'special file'


def shown(parts):
    """A relative path for a result or a message: names joined by '/', control characters and undecodable bytes
    escaped (names in the release are the app user's)."""
    text = '/'.join(parts)
    try:
        text = text.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
    except UnicodeError:
        text = ascii(text)
    return CONTROL.sub(lambda match: '\\x%02x' % ord(match.group()), text)


def safe_name(name):
    """Whether a name found in a release may become a name in the shared directory."""
    if not NAME_PATTERN.match(name) or name in ('.', '..'):
        return False
    try:
        name.encode('utf-8')
    except UnicodeError:  # bytes that are not UTF-8, which listdir hands over as surrogates
        return False
    return True


def _components(path):
    return tuple(part for part in path.split('/') if part)


def validate(static, release=None):
    """The Mappings of the ``static`` option, sorted by prefix; StaticError naming the option and key otherwise."""
    if release is not None and not RELEASE_PATTERN.match(release):
        raise StaticError('release=%r: not a release name (a letter or digit, then letters, digits, ".", "_" or "-")'
                          % (release,))
    if not isinstance(static, dict) or not static:
        raise StaticError('static must map at least one URL prefix to a directory of the release, such as '
                          '{"/static/": "staticfiles"}')
    mappings = []
    for prefix in sorted(static, key=str):
        directory = static[prefix]
        if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix) or set(
                _components(prefix)) & set(('.', '..')):
            raise StaticError('static key %r: not a URL path prefix such as /static/ (starts with "/", names of '
                              'letters, digits, ".", "_" or "-" separated by "/", no "." or ".." name, not "/" '
                              'alone)' % (prefix,))
        if not isinstance(directory, str) or not DIRECTORY_PATTERN.match(directory) or set(
                _components(directory)) & set(('.', '..')):
            raise StaticError('static[%r] = %r: not a directory relative to the release such as staticfiles '
                              '(names of letters, digits, ".", "_" or "-" separated by "/", no leading "/", no "." '
                              'or ".." name)' % (prefix, directory))
        mappings.append(Mapping(prefix, directory, _components(directory), _components(prefix)))
    for index, mapping in enumerate(mappings):
        for other in mappings[index + 1:]:
            shorter, longer = sorted((mapping.shared, other.shared), key=len)
            if longer[:len(shorter)] == shorter:
                raise StaticError('static keys %r and %r: %s' % (mapping.prefix, other.prefix, (
                    'both name the shared directory %s' % '/'.join(SHARED + shorter) if shorter == longer else
                    'one shared directory would be inside the other, whose pruning would remove its files')))
    return mappings


def shared_path(app_root, mapping):
    """The shared directory of a prefix: ``<app_root>/shared/static/static`` for ``/static/``."""
    return os.path.join(app_root, *(SHARED + mapping.shared))


def source_path(app_root, release, mapping):
    return os.path.join(app_root, 'releases', release, *mapping.source)


# ---------------------------------------------------------------- descriptors

def wanted_owner():
    """(uid, gid) of what the module writes: root:root when it runs as root, else its own uid (gid untouched)."""
    euid = os.geteuid()
    return (0, 0) if euid == 0 else (euid, None)


def owned_right(status, mode):
    uid, gid = wanted_owner()
    return (status.st_uid == uid and (gid is None or status.st_gid == gid)
            and stat.S_IMODE(status.st_mode) == mode)


def open_root(app_root):
    """A descriptor of ``app_root`` (given by the administrator: a symlink there is followed)."""
    try:
        return os.open(app_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise StaticError('app_root=%s: does not exist' % app_root)
        raise StaticError('app_root=%s: cannot open the directory: %s' % (app_root, exc.strerror or exc))


def lstat_at(dir_fd, name):
    """lstat of ``name`` in the directory ``dir_fd``, None when there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def open_dir_at(dir_fd, name):
    """A descriptor of the directory ``name`` in ``dir_fd``, never through a symlink (OSError: ELOOP, ENOTDIR)."""
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def open_path(root_fd, parts, app_root, what):
    """A descriptor of the directory ``parts`` below ``root_fd``, one name at a time, without following a symlink;
    None when a name is missing. StaticError naming the path when one is a symlink or no directory."""
    fd = os.dup(root_fd)
    for index, name in enumerate(parts):
        try:
            child = open_dir_at(fd, name)
        except OSError as exc:
            path = os.path.join(app_root, *parts[:index + 1])
            # O_DIRECTORY|O_NOFOLLOW fails a symlink with ENOTDIR (ELOOP without O_DIRECTORY): lstat tells.
            status = lstat_at(fd, name) if exc.errno in (errno.ELOOP, errno.ENOTDIR) else None
            os.close(fd)
            if exc.errno == errno.ENOENT:
                return None
            if status is not None and stat.S_ISLNK(status.st_mode):
                raise StaticError('%s: %s is a symlink; it is never followed' % (what, path))
            if status is not None:
                raise StaticError('%s: %s is a %s, not a directory' % (what, path, kind(status.st_mode)))
            raise StaticError('%s: cannot open %s: %s' % (what, path, exc.strerror or exc))
        os.close(fd)
        fd = child
    return fd


def file_digest(fd):
    """(size, sha256 hex) of what can be read from ``fd``."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            return size, digest.hexdigest()
        size += len(chunk)
        digest.update(chunk)


def digest_at(dir_fd, name):
    """(size, sha256) of the regular file ``name`` in ``dir_fd``, opened without following a symlink or blocking;
    None when it is missing or not a regular file any more."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.ENOTDIR):
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return file_digest(fd)
    finally:
        os.close(fd)


def skip_reason(status, dir_owner):
    """Why a file of the release is not copied (its type, or a hard link to another user's file), or None."""
    if not stat.S_ISREG(status.st_mode):
        return kind(status.st_mode)
    # The app user may hard link a file of another user into its directory (without fs.protected_hardlinks).
    if status.st_nlink > 1 and status.st_uid != dir_owner:
        return 'hard link to a file of uid %d' % status.st_uid
    return None


# ---------------------------------------------------------------- plans

class Plan:
    """What to do, in order: ``actions`` are (what, parts, source parts) with what one of mkdir, fixdir, remove (a
    non-directory), rmdir (a directory emptied before) and copy; parts are relative to app_root."""

    def __init__(self):
        self.actions = []
        self.skipped = []
        self.unchanged = 0
        self.warnings = []
        self._planned = set()

    def add(self, what, parts, source=None):
        # A directory's actions may be planned from each file below it and from each prefix: once is enough.
        if what != 'copy':
            if (what, parts) in self._planned:
                return
            self._planned.add((what, parts))
        self.actions.append((what, parts, source))

    def skip(self, parts, reason):
        self.skipped.append(dict(path=shown(parts), type=reason))

    def copied(self):
        return [shown(parts[len(SHARED):]) for what, parts, _source in self.actions if what == 'copy']

    def removed(self):
        return [shown(parts[len(SHARED):]) + ('/' if what == 'rmdir' else '')
                for what, parts, _source in self.actions if what in ('remove', 'rmdir')]


def _plan_remove_tree(actions, parent_fd, parts):
    """Append to ``actions`` the removal of ``parts``: a non-directory, or a directory and everything in it, deepest
    first."""
    status = lstat_at(parent_fd, parts[-1])
    if status is None:
        return
    if not stat.S_ISDIR(status.st_mode):
        actions.append(('remove', parts))
        return
    fd = open_dir_at(parent_fd, parts[-1])
    try:
        for name in sorted(os.listdir(fd)):
            _plan_remove_tree(actions, fd, parts + (name,))
    finally:
        os.close(fd)
    actions.append(('rmdir', parts))


def _plan_dir(plan, parent_fd, parts):
    """(descriptor, actions) for the shared directory ``parts`` whose parent is ``parent_fd`` (None when the parent
    is to be made): its descriptor when it exists (its owner and mode fixed, when wrong, by the plan), or None and
    the actions that make it (removing what is there instead)."""
    status = lstat_at(parent_fd, parts[-1]) if parent_fd is not None else None
    if status is not None and stat.S_ISDIR(status.st_mode):
        fd = open_dir_at(parent_fd, parts[-1])
        if not owned_right(os.fstat(fd), DIR_MODE):
            plan.add('fixdir', parts)
        return fd, []
    actions = []
    if status is not None:
        _plan_remove_tree(actions, parent_fd, parts)
    return None, actions + [('mkdir', parts)]


def _open_shared(plan, root_fd, app_root, mapping):
    """Plan every directory from ``shared`` down to the prefix's own (made even when no file goes there); the
    descriptor of the latter, or None when it is to be made."""
    parts = SHARED + mapping.shared
    status = lstat_at(root_fd, 'shared')
    if status is not None and not stat.S_ISDIR(status.st_mode):
        raise StaticError('app_root=%s: %s is a %s, not a directory' % (
            app_root, os.path.join(app_root, 'shared'), kind(status.st_mode)))
    if status is None:
        plan.add('mkdir', parts[:1])
        fd = None
    else:
        fd = open_dir_at(root_fd, 'shared')  # not the collection's: made if missing, its owner and mode untouched
    for end in range(2, len(parts) + 1):
        child, actions = _plan_dir(plan, fd, parts[:end])
        for what, path in actions:
            plan.add(what, path)
        if fd is not None:
            os.close(fd)
        fd = child
    return fd


def _same_file(dest_fd, name, status, src_fd, src_name, src_status):
    """Whether the shared file is the release's already: a regular file of the wanted owner and mode with one
    link, the same size and the same sha256."""
    if not (stat.S_ISREG(status.st_mode) and status.st_nlink == 1 and owned_right(status, FILE_MODE)
            and status.st_size == src_status.st_size):
        return False
    have = digest_at(dest_fd, name)
    return have is not None and have == digest_at(src_fd, src_name)


def _plan_tree(plan, src_fd, dest_fd, src_parts, dest_parts, pending):
    """Plan the merge of the release's directory ``src_fd`` into the shared directory ``dest_fd`` (None when it is to
    be made), without following any symlink of the release. ``pending`` are the actions that make the shared
    directories above: done before the first copy below them, so no directory is made that no file needs."""
    dir_owner = os.fstat(src_fd).st_uid
    for name in sorted(os.listdir(src_fd)):
        src, dest = src_parts + (name,), dest_parts + (name,)
        status = lstat_at(src_fd, name)
        if status is None:
            continue  # removed while read
        if not safe_name(name):
            plan.skip(src[2:], 'name with a control character or bytes that are not UTF-8')
            continue
        if stat.S_ISDIR(status.st_mode):
            try:
                child = open_dir_at(src_fd, name)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    raise
                now = lstat_at(src_fd, name)  # swapped since the lstat above
                if now is not None:
                    plan.skip(src[2:], kind(now.st_mode))
                continue
            try:
                child_dest, actions = _plan_dir(plan, dest_fd, dest)
                try:
                    _plan_tree(plan, child, child_dest, src, dest, pending + actions)
                finally:
                    if child_dest is not None:
                        os.close(child_dest)
            finally:
                os.close(child)
            continue
        reason = skip_reason(status, dir_owner)
        if reason:
            plan.skip(src[2:], reason)
            continue
        existing = lstat_at(dest_fd, name) if dest_fd is not None else None
        if existing is not None and _same_file(dest_fd, name, existing, src_fd, name, status):
            plan.unchanged += 1
            continue
        for what, path in pending:
            plan.add(what, path)
        del pending[:]
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            removal = []
            _plan_remove_tree(removal, dest_fd, dest)
            for what, path in removal:
                plan.add(what, path)
        plan.add('copy', dest, src)


def plan_merge(app_root, mappings, release=None):
    """The Plan that makes every prefix's shared directory, and merges ``release``'s directories into them."""
    plan = Plan()
    root_fd = open_root(app_root)
    try:
        for mapping in mappings:
            dest_fd = _open_shared(plan, root_fd, app_root, mapping)
            try:
                if release is not None:
                    src_fd = _open_source(root_fd, app_root, release, mapping)
                    try:
                        _plan_tree(plan, src_fd, dest_fd, ('releases', release) + mapping.source,
                                   SHARED + mapping.shared, [])
                    finally:
                        os.close(src_fd)
            finally:
                if dest_fd is not None:
                    os.close(dest_fd)
    except OSError as exc:
        raise StaticError('app_root=%s: cannot read %s below it: %s' % (app_root, exc.filename, exc.strerror or exc))
    finally:
        os.close(root_fd)
    return plan


def _open_source(root_fd, app_root, release, mapping):
    release_fd = open_path(root_fd, ('releases', release), app_root, 'release=%s' % release)
    if release_fd is None:
        raise StaticError('release=%s: %s does not exist' % (release, os.path.join(app_root, 'releases', release)))
    try:
        fd = open_path(release_fd, mapping.source, os.path.join(app_root, 'releases', release),
                       'static[%r]' % mapping.prefix)
    finally:
        os.close(release_fd)
    if fd is None:
        raise StaticError('static (graceful_static) maps %s to %s, but %s does not exist in release %s: does an '
                          'after_stage hook (collectstatic) create it?' % (
                              mapping.prefix, mapping.directory, source_path(app_root, release, mapping), release))
    return fd


def provided_files(dir_fd, parts=()):
    """The relative paths (tuples) of the files a release's directory provides: what the merge would copy."""
    found = set()
    dir_owner = os.fstat(dir_fd).st_uid
    for name in os.listdir(dir_fd):
        status = lstat_at(dir_fd, name)
        if status is None or not safe_name(name):
            continue
        if stat.S_ISDIR(status.st_mode):
            try:
                child = open_dir_at(dir_fd, name)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue
                raise
            try:
                found |= provided_files(child, parts + (name,))
            finally:
                os.close(child)
        elif skip_reason(status, dir_owner) is None:
            found.add(parts + (name,))
    return found


def open_below(dir_fd, parts):
    """The directory ``parts`` below ``dir_fd``, None when a name is missing, a symlink or no directory."""
    fd = os.dup(dir_fd)
    for name in parts:
        try:
            child = open_dir_at(fd, name)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                child = None
            else:
                os.close(fd)
                raise
        os.close(fd)
        if child is None:
            return None
        fd = child
    return fd


def provided_by_releases(root_fd, mappings):
    """{prefix: set of relative paths} that the releases present under ``releases/`` (directories with a release
    name) provide. A prefix that no release has a directory for is left out; a symlink is no directory."""
    provided = {}
    releases_fd = open_below(root_fd, ('releases',))
    if releases_fd is None:
        return provided
    try:
        for release in sorted(os.listdir(releases_fd)):
            if not RELEASE_PATTERN.match(release):
                continue
            for mapping in mappings:
                fd = open_below(releases_fd, (release,) + mapping.source)
                if fd is None:
                    continue
                try:
                    provided.setdefault(mapping.prefix, set()).update(provided_files(fd))
                finally:
                    os.close(fd)
    finally:
        os.close(releases_fd)
    return provided


def _plan_prune_dir(plan, fd, rel, parts, provided, provided_dirs):
    """Plan removing what no release provides below the shared directory ``fd``; whether it will then be empty."""
    empty = True
    for name in sorted(os.listdir(fd)):
        status = lstat_at(fd, name)
        if status is None:
            continue
        path = rel + (name,)
        if stat.S_ISDIR(status.st_mode):
            child = open_dir_at(fd, name)
            try:
                child_empty = _plan_prune_dir(plan, child, path, parts + (name,), provided, provided_dirs)
            finally:
                os.close(child)
            if child_empty and path not in provided_dirs:
                plan.add('rmdir', parts + (name,))
            else:
                empty = False
        elif path in provided:
            empty = False
        else:
            plan.add('remove', parts + (name,))
    return empty


def plan_prune(app_root, mappings):
    """The Plan that removes, from each prefix's shared directory, the files that no release present under
    ``<app_root>/releases/`` provides (same relative path under the same prefix), then the directories left empty.
    A prefix that no release has a directory for is not pruned (a wrong directory must not empty the shared
    one): a warning says so."""
    plan = Plan()
    root_fd = open_root(app_root)
    try:
        provided = provided_by_releases(root_fd, mappings)
        for mapping in mappings:
            if mapping.prefix not in provided:
                plan.warnings.append('static[%r]: no release in %s has the directory %s; nothing pruned from %s' % (
                    mapping.prefix, os.path.join(app_root, 'releases'), mapping.directory,
                    shared_path(app_root, mapping)))
                continue
            fd = open_below(root_fd, SHARED + mapping.shared)
            if fd is None:
                continue
            files = provided[mapping.prefix]
            try:
                _plan_prune_dir(plan, fd, (), SHARED + mapping.shared, files,
                                set(path[:end] for path in files for end in range(1, len(path))))
            finally:
                os.close(fd)
    except OSError as exc:
        raise StaticError('app_root=%s: cannot read %s below it: %s' % (app_root, exc.filename, exc.strerror or exc))
    finally:
        os.close(root_fd)
    return plan


# ---------------------------------------------------------------- doing it

class Directories:
    """Descriptors of directories below app_root by their parts, each opened once, without following symlinks."""

    def __init__(self, root_fd):
        self.fds = {(): root_fd}

    def open(self, parts):
        if parts not in self.fds:
            self.fds[parts] = open_dir_at(self.open(parts[:-1]), parts[-1])
        return self.fds[parts]

    def forget(self, parts):
        for key in [key for key in self.fds if key and key[:len(parts)] == parts]:
            os.close(self.fds.pop(key))

    def close(self):
        for parts in list(self.fds):
            if parts:
                os.close(self.fds.pop(parts))


def fix_dir(fd):
    """The wanted owner and mode on a shared directory."""
    status = os.fstat(fd)
    uid, gid = wanted_owner()
    if gid is not None and (status.st_uid, status.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
    if stat.S_IMODE(status.st_mode) != DIR_MODE:
        os.fchmod(fd, DIR_MODE)


def write_copy(source_fd, dest_dir_fd, name, source_status):
    """Copy the open regular file ``source_fd`` as a new file next to ``name`` in ``dest_dir_fd``, then rename it
    over ``name``: what was there (a file, a symlink, a FIFO) is replaced, never written through."""
    temporary = TEMPORARY % os.urandom(8).hex()
    out = os.open(temporary, WRITE_FLAGS, 0o600, dir_fd=dest_dir_fd)
    try:
        try:
            while True:
                chunk = os.read(source_fd, CHUNK)
                if not chunk:
                    break
                while chunk:
                    chunk = chunk[os.write(out, chunk):]
            uid, gid = wanted_owner()
            if gid is not None:
                os.fchown(out, uid, gid)
            os.fchmod(out, FILE_MODE)
            os.utime(out, ns=(source_status.st_mtime_ns, source_status.st_mtime_ns))
            os.fsync(out)
        finally:
            os.close(out)
        os.rename(temporary, name, src_dir_fd=dest_dir_fd, dst_dir_fd=dest_dir_fd)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dest_dir_fd)
        except OSError:
            pass
        raise


def copy_file(dirs, source, dest):
    """Copy the release's file ``source`` to ``dest`` (parts); the reason it was skipped instead, or None."""
    try:
        source_dir = dirs.open(source[:-1])
        fd = os.open(source[-1], FILE_FLAGS, dir_fd=source_dir)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return 'symlink'
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENXIO):
            return 'changed while read'
        raise
    try:
        status = os.fstat(fd)
        reason = skip_reason(status, os.fstat(source_dir).st_uid)
        if reason:
            return reason
        write_copy(fd, dirs.open(dest[:-1]), dest[-1], status)
    finally:
        os.close(fd)
    return None


VERBS = dict(copy='copy %s to', mkdir='make the directory', fixdir='set the owner and mode of', remove='remove',
             rmdir='remove the directory')


def apply(app_root, plan, done=None):
    """Do what ``plan`` says, adding to ``done`` ({copied, removed, skipped, changed}: relative paths, and {path,
    type} for skipped) what was done, and returning it. StaticError naming the path when something cannot be done;
    ``done`` then holds what was done before."""
    done = done if done is not None else dict(copied=[], removed=[], skipped=list(plan.skipped), changed=False)
    root_fd = open_root(app_root)
    dirs = Directories(root_fd)
    try:
        for what, parts, source in plan.actions:
            try:
                changed = _act(dirs, what, parts, source, done)
            except OSError as exc:
                verb = VERBS[what] % os.path.join(app_root, *source) if what == 'copy' else VERBS[what]
                raise StaticError('cannot %s %s: %s' % (verb, os.path.join(app_root, *parts), exc.strerror or exc))
            done['changed'] = done['changed'] or changed
    finally:
        dirs.close()
        os.close(root_fd)
    return done


def _act(dirs, what, parts, source, done):
    """One action of a plan; whether it changed something."""
    if what == 'copy':
        reason = copy_file(dirs, source, parts)
        if reason:
            done['skipped'].append(dict(path=shown(source[2:]), type=reason))
            return False
        done['copied'].append(shown(parts[len(SHARED):]))
    elif what in ('mkdir', 'fixdir'):
        if what == 'mkdir':
            try:
                os.mkdir(parts[-1], DIR_MODE, dir_fd=dirs.open(parts[:-1]))
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
        fix_dir(dirs.open(parts))
    elif what == 'remove':
        try:
            os.unlink(parts[-1], dir_fd=dirs.open(parts[:-1]))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        done['removed'].append(shown(parts[len(SHARED):]))
    else:
        dirs.forget(parts)
        try:
            os.rmdir(parts[-1], dir_fd=dirs.open(parts[:-1]))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                raise
            return False  # something came in meanwhile: kept
        done['removed'].append(shown(parts[len(SHARED):]) + '/')
    return True


# ---------------------------------------------------------------- the module's driver

def _unique(items):
    seen = set()
    return [item for item in items if not (item in seen or seen.add(item))]


def _counted(count, one, many):
    return '%d %s' % (count, one if count == 1 else many)


def result(dirs, done, unchanged, check_mode, release):
    """The module's result from what was (or would be) done: lists capped to SHOWN entries, with their counts."""
    copied, removed, skipped = done['copied'], _unique(done['removed']), done['skipped']
    words = []
    if release is not None:
        words.append('%s %s of release %s (%d unchanged)' % (
            'would copy' if check_mode else 'copied', _counted(len(copied), 'file', 'files'), release, unchanged))
    words.append('%s %s' % ('would remove' if check_mode else 'removed', _counted(len(removed), 'entry', 'entries')))
    if skipped:
        words.append('skipped %d symlinks, special files or unsafe names of the release (never followed)'
                     % len(skipped))
    return dict(changed=done['changed'], dirs=dirs, copied=copied[:SHOWN], copied_count=len(copied),
                removed=removed[:SHOWN], removed_count=len(removed), skipped=skipped[:SHOWN],
                skipped_count=len(skipped), unchanged_count=unchanged,
                msg='%s; shared directories: %s' % (', '.join(words), ', '.join(
                    '%s %s' % (prefix, path) for prefix, path in sorted(dirs.items()))))


def run(app_root, static, release=None, prune=True, check_mode=False):
    """Merge ``release``'s static directories into the shared ones, then prune; in check mode only say what would
    be done. Returns (result, warnings); StaticError carries the result so far when it fails midway."""
    mappings = validate(static, release)
    dirs = dict((mapping.prefix, shared_path(app_root, mapping)) for mapping in mappings)
    merge = plan_merge(app_root, mappings, release)
    if check_mode:
        pruned = plan_prune(app_root, mappings) if prune else Plan()
        done = dict(copied=merge.copied(), removed=merge.removed() + pruned.removed(), skipped=merge.skipped,
                    changed=bool(merge.actions or pruned.actions))
        return result(dirs, done, merge.unchanged, True, release), pruned.warnings
    done = dict(copied=[], removed=[], skipped=list(merge.skipped), changed=False)
    warnings = []
    try:
        for step in ('merge', 'prune'):
            if step == 'prune' and not prune:
                break
            plan = merge if step == 'merge' else plan_prune(app_root, mappings)
            warnings = plan.warnings
            apply(app_root, plan, done)
    except StaticError as exc:
        raise StaticError(str(exc), result(dirs, done, merge.unchanged, False, release))
    return result(dirs, done, merge.unchanged, False, release), warnings

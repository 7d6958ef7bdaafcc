# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The driver of release_stage: a release installed on its host, in one module run, ahead of its switch.

Private to the collection: the interface may change without notice.
Facts relied on (the layout of the role release):

* ``<app_root>/releases/<release>`` holds the release's code and its venv, root's: the app cannot change the code it
  runs. ``.graceful-release`` in it says its code is complete (written last);
* ``<app_root>/wheelhouse/<id>`` holds the wheels of one set of requirements, ``.complete`` in it says so. A
  wheelhouse never changes once complete; it is unpacked beside its place and renamed into it, so an interrupted
  unpack never passes for a complete one;
* the venv is made without ensurepip (about 1.9 CPU-s per venv on a test-bed host). The wheels are installed by pip
  from the wheel of pip that Debian ships for its python3's ensurepip (``/usr/share/python-wheels``). That pip is
  unpacked once into ``<app_root>/wheelhouse/.pip-<version>-...`` (root's, where it keeps its compiled modules) and
  run by the venv's interpreter, so the wheels land in the venv. Without such a wheel, or for another interpreter,
  the venv is made with ensurepip and its own pip installs them. ``venv/.graceful-wheels`` names the wheels
  installed, and no venv is ever removed: a release current points to may be staged again, under its running server;
* the app user owns its shared directories and its writable ones. Every directory is walked to from ``app_root``
  one name at a time, each opened without following a link: a link the app puts in place of a directory is refused
  by name, never followed to chown or chmod what it points to.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import glob
import grp
import os
import pwd
import re
import shutil
import stat
import zipfile

from ansible_collections.graceful.wsgi.plugins.module_utils import _release_switch, _static, _systemd

# A path inside the release: names of letters, digits, '.', '_' and '-', joined by '/', none of them '.' or '..'.
RELATIVE_PATH = re.compile(r'\A[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\Z')
ACCOUNT = re.compile(r'\A[a-z_][a-z0-9_-]*\$?\Z')
MODE = re.compile(r'\A0?[0-7]{3}\Z')
WHEEL = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9_.+!-]*\.whl\Z')

CODE_MARKER = '.graceful-release'
WHEELHOUSE_MARKER = '.complete'
VENV_MARKER = '.graceful-wheels'
# Where Debian keeps the wheels ensurepip installs (python3-pip-whl, which python3-venv depends on), for its python3.
PIP_WHEELS = ('/usr/share/python-wheels/pip-*-py3-none-any.whl',)
SYSTEM_PYTHON = '/usr/bin/python3'
ROOT_DIR_MODE = 0o755
# Owner of everything but the shared and writable paths (unit tests use their own user).
ROOT_IDS = (0, 0)
# A directory given by root (app_root, a release): a link there is root's layout and is followed.
ROOT_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


# The module's options, which its action plugin validates too before it asks the host anything.
ARGUMENT_SPEC = dict(
    app_root=dict(type='path', required=True),
    release=dict(type='str', required=True),
    wheelhouse=dict(type='str', required=True),
    wheelhouse_archive=dict(type='path'),
    src_archive=dict(type='path'),
    python=dict(type='path', default='/usr/bin/python3'),
    user=dict(type='str', default='root'),
    shared=dict(type='list', elements='dict', default=[], options=dict(
        path=dict(type='str', required=True),
        owner=dict(type='str', default='root'),
        group=dict(type='str', default='root'),
        mode=dict(type='str', default='0750'),
    )),
    writable=dict(type='list', elements='str', default=[]),
    command_timeout=dict(type='float', default=300),
)
# What the action plugin sends: the directory of app_root it goes into, the option naming its directory there, and
# the file whose presence on the host means it need not be sent.
ARCHIVES = dict(wheelhouse_archive=('wheelhouse', 'wheelhouse', WHEELHOUSE_MARKER),
                src_archive=('releases', 'release', CODE_MARKER))


def archive_markers(params):
    """{option: marker path on the host} of the archives given, the files whose presence makes sending them moot."""
    return dict((option, os.path.join(params['app_root'], directory, params[name], marker))
                for option, (directory, name, marker) in ARCHIVES.items() if params.get(option))


class StageError(Exception):
    """The release cannot be staged; the message names the option or the path, and what was found."""


class PipRefused(StageError):
    """pip did not install the wheelhouse: ``wheels`` are the wheels it was given, for the message naming the
    Pythons."""

    def __init__(self, message, wheels):
        super(PipRefused, self).__init__(message)
        self.wheels = wheels


def check_params(params):
    """Why the parameters cannot be used, or None: every name that becomes a path or an owner."""
    problem = _release_switch.check_params(params)  # release and app_root, as the switch checks them
    if problem:
        return problem
    if not _release_switch.NAME.match(params['wheelhouse']) or '..' in params['wheelhouse']:
        return ('wheelhouse=%r: use 1 to 64 letters, digits, ".", "_" and "-", starting with a letter or a digit, '
                'with no ".."' % params['wheelhouse'])
    if not ACCOUNT.match(params['user']):
        return 'user=%r: a user name' % params['user']
    for index, item in enumerate(params['shared']):
        if not relative_path(item['path']):
            return ("shared[%d].path=%r: a path inside the release (names of letters, digits, '.', '_' and '-' "
                    "joined by '/', no '.' or '..')" % (index, item['path']))
        for key in ('owner', 'group'):
            if not ACCOUNT.match(item[key]):
                return 'shared[%d].%s=%r: a %s name' % (index, key, item[key], 'user' if key == 'owner' else 'group')
        if not MODE.match(item['mode']):
            return "shared[%d].mode=%r: octal digits as a string, like '0750'" % (index, item['mode'])
    for index, path in enumerate(params['writable']):
        if not relative_path(path):
            return ("writable[%d]=%r: a path inside the release (names of letters, digits, '.', '_' and '-' "
                    "joined by '/', no '.' or '..')" % (index, path))
    return None


def relative_path(value):
    return bool(RELATIVE_PATH.match(value)) and not any(part in ('.', '..') for part in value.split('/'))


# ---------------------------------------------------------------- directories, walked without following links

def open_directory(parent_fd, name, shown):
    """A descriptor of the directory ``name`` in ``parent_fd`` (an absolute path with None), never through a link
    (_static.open_dir_at). StageError naming ``shown`` when it is a link or a file; OSError (ENOENT) when missing."""
    try:
        return _static.open_dir_at(parent_fd, name)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StageError('%s is not a directory but a link or a file: refused, nothing was followed' % shown)
        if exc.errno != errno.ENOENT:
            raise StageError('cannot open %s: %s' % (shown, exc.strerror))
        raise


def ensure_tree(base, relative, uid, gid, mode, check_mode):
    """Every directory of ``relative`` under the directory ``base``; those created and the last one get ``uid``,
    ``gid`` and ``mode``, those in between that exist are left as they are. Returns whether anything changed.

    ``base`` is root's (app_root or a release in it) and is opened as it is; StageError names the first component
    below it that is a link or a file."""
    if check_mode and not os.path.isdir(base):
        return True
    changed = False
    names = relative.split('/')
    fd = os.open(base, ROOT_DIR_FLAGS)
    try:
        walked = base
        for position, name in enumerate(names):
            walked = os.path.join(walked, name)
            last = position == len(names) - 1
            try:
                child = open_directory(fd, name, walked)
            except OSError:  # missing: the others are StageError
                if check_mode:
                    return True
                os.mkdir(name, mode, dir_fd=fd)
                child = open_directory(fd, name, walked)
                changed = True
                last = True  # a directory made here gets the owner and mode, like the last one
            os.close(fd)
            fd = child
            if last:
                changed = set_owner_and_mode(fd, walked, uid, gid, mode, check_mode) or changed
        return changed
    finally:
        os.close(fd)


def root_tree(base, relative, check_mode):
    """ensure_tree for directories of root's, mode 0755."""
    return ensure_tree(base, relative, ROOT_IDS[0], ROOT_IDS[1], ROOT_DIR_MODE, check_mode)


def make_app_root(app_root, check_mode):
    """``app_root`` made root's, mode 0755, with the directories above it when missing. A link above it or at it is
    followed: that is root's layout (a /srv on another volume), where the app's user cannot write."""
    created = not os.path.isdir(app_root)
    if created:
        if check_mode:
            return True
        os.makedirs(app_root, ROOT_DIR_MODE)
    fd = os.open(app_root, ROOT_DIR_FLAGS)
    try:
        return set_owner_and_mode(fd, app_root, ROOT_IDS[0], ROOT_IDS[1], ROOT_DIR_MODE, check_mode) or created
    finally:
        os.close(fd)


def set_owner_and_mode(fd, path, uid, gid, mode, check_mode):
    status = os.fstat(fd)
    if not stat.S_ISDIR(status.st_mode):
        raise StageError('%s is not a directory' % path)
    changed = False
    if (status.st_uid, status.st_gid) != (uid, gid):
        changed = True
        if not check_mode:
            os.fchown(fd, uid, gid)
    if stat.S_IMODE(status.st_mode) != mode:
        changed = True
        if not check_mode:
            os.fchmod(fd, mode)
    return changed


def user_ids(option, user, group, check_mode):
    """(uid, gid) of ``user`` and ``group`` (the user's own group when None); StageError naming the option and the
    missing account. In check mode a missing account is None: the account comes earlier in the same run."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        if check_mode:
            return None
        raise StageError('%s: user %s does not exist on the host' % (option, user))
    group = group or user
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        if check_mode:
            return None
        raise StageError('%s: group %s does not exist on the host' % (option, group))
    return uid, gid


def exists(path):
    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


# ---------------------------------------------------------------- archives

def command(runner, argv, timeout):
    """``argv`` run within ``timeout`` seconds; StageError naming the command and its last words when it fails."""
    try:
        rc, out, err = runner(argv, timeout)
    except _systemd.SystemdError as exc:
        raise StageError(str(exc))
    if rc != 0:
        raise StageError('%s failed (rc=%d): %s' % (' '.join(argv), rc, (err or out).strip()[-600:]))


def unpack(archive, destination, runner, timeout):
    """The archive's members extracted into ``destination`` as root's files (GNU tar refuses members outside it)."""
    command(runner, ['tar', '--extract', '--file', archive, '--directory', destination, '--no-same-owner'], timeout)


def stage_wheelhouse(app_root, wheelhouse, archive, runner, timeout, check_mode):
    """Unpacks the wheelhouse when it is not complete on the host; returns whether it did."""
    place = os.path.join(app_root, 'wheelhouse', wheelhouse)
    if exists(os.path.join(place, WHEELHOUSE_MARKER)):
        return False
    if not archive:
        raise StageError('wheelhouse %s is not on the host (no %s) and no wheelhouse_archive was given'
                         % (wheelhouse, os.path.join(place, WHEELHOUSE_MARKER)))
    if check_mode:
        return True

    def fill(unpacking):
        unpack(archive, unpacking, runner, timeout)
        if not exists(os.path.join(unpacking, WHEELHOUSE_MARKER)):
            with open(os.path.join(unpacking, WHEELHOUSE_MARKER), 'w') as marker:
                marker.write('%s\n' % wheelhouse)

    replace_directory(place, fill)
    return True


def replace_directory(place, fill):
    """``place`` made anew: ``fill`` fills a directory beside it, which is then renamed over it, so an interrupted
    fill never passes for a complete one. What an earlier fill left is root's, in the root-owned wheelhouse
    directory."""
    unpacking = place + '.unpacking'
    for leftover in (unpacking, place):
        if exists(leftover):
            shutil.rmtree(leftover)
    os.mkdir(unpacking, ROOT_DIR_MODE)
    fill(unpacking)
    os.rename(unpacking, place)


def stage_code(release_dir, release, archive, runner, timeout, check_mode):
    """Unpacks the release's code when it is not complete on the host; returns whether it did.

    Without an archive the code must be there already (the role copies it file by file)."""
    marker = os.path.join(release_dir, CODE_MARKER)
    if not archive:
        if not check_mode and not os.path.isdir(release_dir):
            raise StageError('release %s has no code on the host (%s) and no src_archive was given'
                             % (release, release_dir))
        return False
    if exists(marker):
        return False
    if check_mode:
        return True
    unpack(archive, release_dir, runner, timeout)
    with open(marker, 'w') as handle:
        handle.write('%s\n' % release)
    os.chmod(marker, 0o644)
    return True


# ---------------------------------------------------------------- the venv

def wheels_of(wheelhouse_dir):
    """The wheel files of the wheelhouse, sorted; StageError naming a file that is not a wheel's name."""
    found = []
    for name in sorted(os.listdir(wheelhouse_dir)):
        if name.startswith('.'):
            continue
        if not WHEEL.match(name):
            raise StageError('%s holds %s, which is not a wheel: the wheelhouse holds wheels only'
                             % (wheelhouse_dir, name))
        found.append(os.path.join(wheelhouse_dir, name))
    return found


def pip_wheel(patterns=PIP_WHEELS):
    """The newest wheel of pip the host ships for ensurepip, or None."""
    found = []
    for pattern in patterns:
        found.extend(glob.glob(pattern))
    return sorted(found, key=version_key)[-1] if found else None


def pip_wheel_for(python, system_python=SYSTEM_PYTHON, patterns=PIP_WHEELS):
    """The wheel of pip to install into a venv of ``python`` with, '' for the venv's own pip: Debian's wheel is its
    python3's, another interpreter (a pip too old for it) gets ensurepip."""
    if os.path.realpath(python) != os.path.realpath(system_python):
        return ''
    return pip_wheel(patterns) or ''


def version_key(path):
    version = os.path.basename(path).split('-')[1]
    return [int(part) if part.isdigit() else -1 for part in version.split('.')]


def installed_wheels(venv):
    try:
        with open(os.path.join(venv, VENV_MARKER)) as handle:
            return handle.read().split()
    except (IOError, OSError):
        return None


def unpacked_pip(pip_wheel_path, wheelhouse_root):
    """The directory holding pip unpacked from ``pip_wheel_path``, made once per host in ``wheelhouse_root``.

    pip run from its wheel imports every module from source, which costs about 0.7 CPU-s on each run; unpacked in a
    directory of root's, it keeps the compiled modules its first run writes."""
    place = os.path.join(wheelhouse_root, '.' + os.path.basename(pip_wheel_path)[:-len('.whl')])
    if os.path.isfile(os.path.join(place, 'pip', '__main__.py')):
        return place

    def fill(unpacking):
        with zipfile.ZipFile(pip_wheel_path) as wheel:
            wheel.extractall(unpacking)

    replace_directory(place, fill)
    return place


def stage_venv(venv, python, wheels, runner, timeout, check_mode, pip_wheel_path, wheelhouse_root):
    """Creates the venv when missing and installs the wheels not yet recorded in it. Returns (created, installed).

    PipRefused carries pip's message when the host refuses a wheel."""
    names = [os.path.basename(path) for path in wheels]
    created = not exists(os.path.join(venv, 'bin', 'python'))
    installing = bool(names) and installed_wheels(venv) != names
    if check_mode or not (created or installing):
        return created, installing
    if created:
        command(runner, [python, '-m', 'venv'] + (['--without-pip'] if pip_wheel_path else []) + [venv], timeout)
    if installing:
        interpreter = os.path.join(venv, 'bin', 'python')
        # pip run by the venv's interpreter installs into the venv (sys.prefix).
        pip = ([interpreter, os.path.join(unpacked_pip(pip_wheel_path, wheelhouse_root), 'pip')] if pip_wheel_path
               else [interpreter, '-m', 'pip'])
        try:
            command(runner, pip + ['install', '--quiet', '--disable-pip-version-check', '--no-index', '--no-deps',
                                   '--only-binary=:all:'] + wheels, timeout)
        except StageError as exc:
            raise PipRefused('pip could not install the wheelhouse into %s: %s' % (venv, exc), wheels)
    with open(os.path.join(venv, VENV_MARKER), 'w') as handle:
        handle.write('\n'.join(names) + '\n')
    return created, installing


# ---------------------------------------------------------------- shared and writable paths

def link_shared(release_dir, app_root, path, check_mode):
    """``<release>/<path>`` a link to ``<app_root>/shared/<path>``; returns whether it changed.

    A link or a file in its place is replaced, an empty directory too; a directory with files is refused by name."""
    target = os.path.join(app_root, 'shared', path)
    parent, name = os.path.split(path)
    changed = bool(parent) and root_tree(release_dir, parent, check_mode)
    if check_mode and (changed or not os.path.isdir(release_dir)):
        return True
    where_parent = os.path.join(release_dir, parent) if parent else release_dir
    fd = open_directory(None, where_parent, where_parent)
    try:
        status = _static.lstat_at(fd, name)
        where = os.path.join(release_dir, path)
        if status is not None and stat.S_ISLNK(status.st_mode) and os.readlink(name, dir_fd=fd) == target:
            return changed
        if status is not None and stat.S_ISDIR(status.st_mode):
            if os.listdir(os.path.join(release_dir, path)):
                raise StageError('%s is a directory with files in it, where the link to the shared %s goes: '
                                 'remove it from the source' % (where, target))
            if not check_mode:
                os.rmdir(name, dir_fd=fd)
        if check_mode:
            return True
        temporary = '.%s.graceful-link' % name
        try:
            os.unlink(temporary, dir_fd=fd)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        os.symlink(target, temporary, dir_fd=fd)
        os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        return True
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the whole staging

def run(params, check_mode, runner=None, pip_wheel_path=None):
    """Stages the release; returns the module's result. StageError names what stopped it.

    ``runner`` runs a bounded command (_systemd.run by default); ``pip_wheel_path`` is the wheel of pip to install
    with (found on the host by default). In check mode, what cannot be looked at because a directory above it would
    be made counts as a change."""
    runner = runner or _systemd.run
    timeout = params['command_timeout']
    app_root, release = params['app_root'], params['release']
    release_dir = os.path.join(app_root, 'releases', release)
    wheelhouse_dir = os.path.join(app_root, 'wheelhouse', params['wheelhouse'])
    if pip_wheel_path is None:
        pip_wheel_path = pip_wheel_for(params['python'])
    changes = []

    def note(what, changed):
        if changed:
            changes.append(what)

    note('app_root', make_app_root(app_root, check_mode))
    for directory in ('releases', 'wheelhouse'):
        note(directory, root_tree(app_root, directory, check_mode))
    # Made root's when missing; one an earlier version made the app's is left as it is.
    if not exists(os.path.join(app_root, 'shared')):
        note('shared', root_tree(app_root, 'shared', check_mode))
    note('wheelhouse', stage_wheelhouse(app_root, params['wheelhouse'], params['wheelhouse_archive'], runner, timeout,
                                        check_mode))
    if params['src_archive']:
        note('release', root_tree(os.path.join(app_root, 'releases'), release, check_mode))
    note('code', stage_code(release_dir, release, params['src_archive'], runner, timeout, check_mode))
    wheels = wheels_of(wheelhouse_dir) if os.path.isdir(wheelhouse_dir) else []
    venv = os.path.join(release_dir, 'venv')
    created, installed = stage_venv(venv, params['python'], wheels, runner, timeout, check_mode, pip_wheel_path,
                                    os.path.join(app_root, 'wheelhouse'))
    note('venv', created)
    note('wheels', installed)

    for item in params['shared']:
        ids = user_ids('shared path %s' % item['path'], item['owner'], item['group'], check_mode)
        if ids is None:
            note('shared', True)
            continue
        note('shared', ensure_tree(app_root, 'shared/' + item['path'], ids[0], ids[1], int(item['mode'], 8),
                                   check_mode))
        note('links', link_shared(release_dir, app_root, item['path'], check_mode))
    if params['writable']:
        ids = user_ids('user (owner of writable %s)' % ', '.join(params['writable']), params['user'], None, check_mode)
        for path in params['writable']:
            note('writable', ids is None or ensure_tree(release_dir, path, ids[0], ids[1], ROOT_DIR_MODE, check_mode))
    return dict(changed=bool(changes), changes=sorted(set(changes)), release=release, venv=venv, wheels=wheels,
                msg=('release %s staged: %s' % (release, ', '.join(sorted(set(changes)))) if changes
                     else 'release %s was staged already' % release))

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# What the controller ships: the app's source (its links) and the requirements the wheelhouse is built from. Both run
# on the controller before the deploy lock, so bad input stops the run before any host is touched. Each filter is
# documented in a file of its name beside this one.

import json
import os
import posixpath
import re
import shlex
import stat
import tarfile
import zipfile

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six import string_types

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
except ImportError:  # pragma: no cover - ansible-core requires packaging
    Requirement = None

# Links followed within one resolution, as the kernel's limit: more is a loop.
MAX_LINK_DEPTH = 40


# -- links --------------------------------------------------------------------------------------------------------


def _resolve(links, parts, target, depth=0):
    """The path components ``target`` (a link's text, relative to the directory ``parts``) resolves to inside the
    source, following the source's own links as the kernel would; None when it leaves the source."""
    if target.startswith('/'):
        return None
    parts = list(parts)
    for part in target.split('/'):
        if part in ('', '.'):
            continue
        if part == '..':
            if not parts:
                return None
            parts.pop()
            continue
        name = '/'.join(parts + [part])
        if name in links:
            if depth >= MAX_LINK_DEPTH:
                return None
            parts = _resolve(links, parts, links[name], depth + 1)
            if parts is None:
                return None
        else:
            parts.append(part)
    return parts


def _outside(links, hard_links=None, stray=()):
    """'name -> target' for each symbolic link that leads outside, 'name => target' for each hard link, and each
    member name that is outside the archive itself."""
    found = ['%s (a member outside the archive)' % name for name in stray]
    for name in sorted(links):
        if _resolve(links, name.split('/')[:-1], links[name]) is None:
            found.append('%s -> %s' % (name, links[name]))
    for name, target in sorted((hard_links or {}).items()):
        if _resolve(links, [], target) is None:
            found.append('%s => %s' % (name, target))
    return found


def _member_name(name):
    """An archive member's name relative to the archive's top, or None when it is absolute or climbs out."""
    if name.startswith('/'):
        return None
    normal = posixpath.normpath(name)
    if normal == '.':
        return ''
    if normal == '..' or normal.startswith('../'):
        return None
    return normal


def _directory_links(path):
    links = {}
    for top, directories, files in os.walk(path, followlinks=False):
        for name in directories + files:
            full = os.path.join(top, name)
            if os.path.islink(full):
                links[os.path.relpath(full, path).replace(os.sep, '/')] = os.readlink(full)
    return links


def _tar_links(path):
    links, hard_links, stray = {}, {}, []
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            name = _member_name(member.name)
            if name is None:
                stray.append(member.name)
            elif not name:
                continue
            elif member.issym():
                links[name] = member.linkname
            elif member.islnk():
                hard_links[name] = member.linkname
    return links, hard_links, stray


def _zip_links(path):
    links, stray = {}, []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = _member_name(info.filename.rstrip('/'))
            if name is None:
                stray.append(info.filename)
            elif name and stat.S_ISLNK(info.external_attr >> 16):
                links[name] = archive.read(info).decode('utf-8', 'surrogateescape')
    return links, {}, stray


def source_links(path):
    """The links of a source that point outside it, as 'name -> target' ('name => target' for a hard link in an
    archive, and the member names an archive would write outside itself); [] when there are none.

    ``path`` is a directory, or an archive that tarfile or zipfile reads (another archive gives [] here: its
    unpacked directory is checked). A relative link is resolved against the source's own tree, through its other
    links, as the kernel resolves it on the host: it must stay inside. An absolute link is outside wherever the
    source lands. The source's files are not read."""
    if not isinstance(path, string_types) or not path:
        raise AnsibleFilterError('source_links: expected the path of a directory or an archive, got %r' % (path,))
    if os.path.isdir(path):
        return _outside(_directory_links(path))
    if not os.path.isfile(path):
        return []
    if zipfile.is_zipfile(path):
        reader = _zip_links
    else:
        try:
            if not tarfile.is_tarfile(path):
                return []
        except (OSError, tarfile.TarError):
            return []
        reader = _tar_links
    try:
        return _outside(*reader(path))
    except (OSError, tarfile.TarError, zipfile.BadZipfile) as exc:
        raise AnsibleFilterError('source_links: cannot read the archive %s: %s' % (path, exc))


# -- requirements -------------------------------------------------------------------------------------------------

# pip's own reading of a requirements file: a comment starts a line or follows whitespace; a backslash at the end
# joins the next line; ${NAME} is replaced from the environment (here refused: its value is not in the file).
COMMENT = re.compile(r'(^|\s+)#.*$')
ENVIRONMENT_VARIABLE = re.compile(r'\$\{[A-Z0-9_]+\}')
URL = re.compile(r'([A-Za-z][A-Za-z0-9+.-]*://|(git|hg|svn|bzr)\+|file:)')
ARCHIVE = re.compile(r'\.(whl|zip|tar|tgz|tbz|txz|tar\.(gz|bz2|xz))\Z', re.IGNORECASE)
FILE_OPTIONS = {'-r': 'requirement', '--requirement': 'requirement', '-c': 'constraint', '--constraint': 'constraint'}
ALLOWED_FLAGS = ('--require-hashes', '--pre', '--prefer-binary', '--no-index')
ALLOWED_VALUED = ('--only-binary', '--no-binary')
ELSEWHERE = {'-i': 'another index', '--index-url': 'another index', '--extra-index-url': 'another index',
             '-f': 'another place to find packages', '--find-links': 'another place to find packages',
             '-e': 'an editable requirement (a path or a URL)', '--editable': 'an editable requirement (a path or a URL)',
             '--trusted-host': 'a host to trust without TLS'}
SHOWN = 120


def _logical_lines(text):
    """(line number, line) of each requirement or option, as pip reads them: a line ending in a backslash joins the
    next one (a comment line ends the join), then comments and blank lines are dropped."""
    joined, start = [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.endswith('\\') and not COMMENT.match(line):
            if not joined:
                start = number
            joined.append(line[:-1])
            continue
        if joined:
            joined.append(' ' + line if COMMENT.match(line) else line)
            line, number = ''.join(joined), start
            joined = []
        line = COMMENT.sub('', line).strip()
        if line:
            yield number, line
    if joined:
        line = COMMENT.sub('', ''.join(joined)).strip()
        if line:
            yield start, line


def _split_options(line):
    """pip's break_args_options: the requirement, then the options from the first word that starts with '-'."""
    words = line.split(' ')
    for index, word in enumerate(words):
        if word.startswith('-'):
            return ' '.join(words[:index]).strip(), ' '.join(words[index:])
    return line, ''


def _options(text):
    """[(option, value)] of an option string: --name=value, --name value, -Xvalue and -X value."""
    words = shlex.split(text)
    found = []
    while words:
        word = words.pop(0)
        if word.startswith('--'):
            name, equals, value = word.partition('=')
            if not equals and name not in ALLOWED_FLAGS and words and not words[0].startswith('-'):
                value = words.pop(0)
        elif word.startswith('-') and len(word) > 2:
            name, value = word[:2], word[2:]
        else:
            name, value = word, (words.pop(0) if words and not word == '-' else '')
        found.append((name, value))
    return found


class _Reading:
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.refused = []
        self.names = set()
        self.hashed_lines = []
        self.unhashed_lines = []
        self.require_hashes = False
        self.seen = set()

    def shown(self, path):
        return os.path.relpath(os.path.realpath(path), self.root)

    def refuse(self, where, line, why):
        text = line if len(line) <= SHOWN else line[:SHOWN - 3] + '...'
        self.refused.append('%s: %r is %s' % (where, text, why))

    def inside(self, path):
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def read(self, path, where, line, kind):
        if not self.inside(path):
            self.refuse(where, line, 'a file outside the source')
            return
        if not os.path.isfile(path):
            self.refuse(where, line, 'a file that does not exist')
            return
        real = os.path.realpath(path)
        if real in self.seen:
            return
        self.seen.add(real)
        try:
            with open(path, 'rb') as handle:
                text = handle.read().decode('utf-8')
        except UnicodeDecodeError:
            self.refuse(where, line, 'not UTF-8 text')
            return
        for number, logical in _logical_lines(text):
            self.line(path, '%s line %d' % (self.shown(path), number), logical, kind)

    def line(self, path, where, line, kind):
        if ENVIRONMENT_VARIABLE.search(line):
            self.refuse(where, line, 'an environment variable, whose value the check cannot see')
            return
        requirement, options = _split_options(line)
        try:
            parsed = _options(options)
        except ValueError as exc:
            self.refuse(where, line, 'not readable (%s)' % exc)
            return
        if not requirement:
            self.option_line(path, where, line, parsed)
            return
        hashes = [value for name, value in parsed if name == '--hash']
        others = [name for name, _value in parsed if name != '--hash']
        if others:
            self.refuse(where, line, 'a requirement with the option %s (only --hash may follow one)' % others[0])
            return
        if not self.requirement(where, line, requirement) or kind != 'requirement':
            return
        (self.hashed_lines if hashes else self.unhashed_lines).append((where, line))

    def option_line(self, path, where, line, parsed):
        for name, value in parsed:
            if name in FILE_OPTIONS:
                if URL.match(value):
                    self.refuse(where, line, 'a requirements file at a URL')
                else:
                    self.read(os.path.join(os.path.dirname(path), value), where, line, FILE_OPTIONS[name])
            elif name in ELSEWHERE:
                self.refuse(where, line, '%s (%s): the wheelhouse is built from the package index pip is '
                                         'configured with, by name and version only' % (ELSEWHERE[name], name))
            elif name == '--require-hashes':
                self.require_hashes = True
            elif name not in ALLOWED_FLAGS + ALLOWED_VALUED:
                self.refuse(where, line, 'an option other than -r, -c, %s' % ', '.join(ALLOWED_FLAGS + ALLOWED_VALUED))

    def requirement(self, where, line, text):
        try:
            parsed = None if URL.match(text) else Requirement(text)
        except InvalidRequirement:
            parsed = None
        if parsed is None:
            self.refuse(where, line, 'a direct URL: name a package and its version instead' if URL.search(text) else
                        'not a package name and version (a path, an archive or a URL)')
            return False
        if parsed.url:
            self.refuse(where, line, 'a direct reference (name @ URL): name a package and its version instead')
            return False
        if ARCHIVE.search(parsed.name):
            self.refuse(where, line, 'an archive file, not a package name')
            return False
        self.names.add(canonicalize_name(parsed.name))
        return True


def requirements_check(path, root=None, extra_packages=None, extra_option='extra_packages'):
    """The requirements file ``path`` (and the files its -r and -c lines name) checked for a wheelhouse built by name
    and version only: {hashed, refused, names, extra_packages}.

    ``refused`` names each line (file and number) that pip would fetch from anywhere else: a URL, a path or an
    archive, ``name @ URL``, -e, -i/--index-url, --extra-index-url, -f/--find-links, --trusted-host, an ${VARIABLE},
    another option, a file outside ``root`` (default: the file's directory); and with hashes, each requirement
    without one. ``hashed``: the requirements carry hashes (pip wheel --require-hashes). ``extra_packages``: the
    server packages to build besides the requirements; with hashes, one the requirements pin (with their hash) is
    left to them, and one they do not name is refused, since pip would refuse it unhashed. ``extra_option`` names
    them in a message."""
    if Requirement is None:  # pragma: no cover
        raise AnsibleFilterError('requirements_check needs the packaging library on the controller')
    if not isinstance(path, string_types) or not path:
        raise AnsibleFilterError('requirements_check: expected the path of a requirements file, got %r' % (path,))
    reading = _Reading(root or os.path.dirname(path) or '.')
    reading.read(path, reading.shown(path), reading.shown(path), 'requirement')
    hashed = bool(reading.hashed_lines) or reading.require_hashes
    if hashed:
        for where, line in reading.unhashed_lines:
            reading.refuse(where, line, 'a requirement without --hash, while the others carry hashes')
    build = []
    for spec in extra_packages or []:
        try:
            parsed = Requirement(str(spec))
        except InvalidRequirement:
            parsed = None
        if parsed is None or parsed.url or URL.match(str(spec)):
            reading.refused.append('%s: %r is not a package name and version' % (extra_option, spec))
        elif not hashed:
            build.append(str(spec))
        elif canonicalize_name(parsed.name) not in reading.names:
            reading.refused.append('%s: %r is not in the requirements, which carry hashes: add it there with its '
                                   '--hash' % (extra_option, spec))
    return dict(hashed=hashed, refused=reading.refused, names=sorted(reading.names), extra_packages=build)


# -- wheels -------------------------------------------------------------------------------------------------------


def wheel_mismatch(wheels, host_python, builder_version='', host_python_path='release_python',
                   builder_path='release_controller_python', pip_message=''):
    """Why pip refused the wheelhouse on a host, naming both Pythons: the wheels (paths or names) none of whose tags
    the host's Python accepts. ``host_python``: {version, tags} as the host's Python printed them (packaging's
    sys_tags), or the text it printed. ``builder_version``: the version of the Python that built the wheelhouse."""
    if Requirement is None:  # pragma: no cover
        raise AnsibleFilterError('wheel_mismatch needs the packaging library on the controller')
    if isinstance(host_python, string_types):
        try:
            host_python = json.loads(host_python)
        except ValueError:
            host_python = {}
    if not isinstance(host_python, dict):
        host_python = {}
    accepted = set(host_python.get('tags') or [])
    host_version = host_python.get('version') or 'unknown (it did not run)'
    refused = []
    for wheel in wheels or []:
        name = posixpath.basename(str(wheel))
        try:
            tags = parse_wheel_filename(name)[3]
        except InvalidWheelFilename:
            refused.append('%s (not a wheel file name)' % name)
            continue
        if not accepted or not any(str(tag) in accepted for tag in tags):
            refused.append(name)
    builder = 'Python %s' % builder_version if builder_version else 'a Python that could not be asked'
    if refused and accepted:
        return ('the wheelhouse was built by %s (%s) and holds wheels the host\'s %s (Python %s) cannot install: %s. '
                'Build it with the Python the hosts run: set release_controller_python to a Python %s on the '
                'controller (or in the execution environment)' % (
                    builder_path, builder, host_python_path, host_version, ', '.join(sorted(refused)),
                    '.'.join(host_version.split('.')[:2])))
    return ('pip could not install the wheelhouse built by %s (%s) with the host\'s %s (Python %s): %s' % (
        builder_path, builder, host_python_path, host_version, re.sub(r'\s+', ' ', str(pip_message)).strip()[-600:]
        or 'no message'))


class FilterModule:
    def filters(self):
        return {'source_links': source_links, 'requirements_check': requirements_check,
                'wheel_mismatch': wheel_mismatch}

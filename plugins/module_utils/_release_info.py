# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The driver of release_info: the release ``<app_root>/current`` points to, the commit it was made from, the record
of switches and the host's default IPv4 address, in one call.

Private to the collection: the interface may change without notice.
Facts relied on (the layout of the role release): ``current`` is a relative symlink ``releases/<name>``; a release
staged from a git source holds ``REVISION``, the commit, written by root with the release's code. Neither the
``REVISION`` file nor the record is followed through a symlink, and each must be a regular file of root's: a file
that fails a check fails the module, naming the path and never quoting the file.

The default IPv4 address is the source address the kernel picks for a route to ROUTE_PROBE: what
``ip -4 route get 8.8.8.8`` names ``src``, and Ansible's setup returns as ``ansible_default_ipv4.address``. Connecting a
UDP socket only asks the routing table; it sends nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import socket
import stat

from ansible_collections.graceful.wsgi.plugins.module_utils import _release_switch

RELEASE_LINK = re.compile(r'\Areleases/([A-Za-z0-9][A-Za-z0-9._-]{0,63})\Z')
# A commit and a newline; a file much larger is not the role's.
MAX_REVISION_BYTES = 4096
# The rollout writes a git commit; a source may bring its own REVISION (Capistrano's convention), a tag say.
REVISION = re.compile(r'\A[0-9A-Za-z._+-]{1,64}\Z')
SHOWN_REVISION = 40
# The destination Ansible's setup asks the routing table about for ansible_default_ipv4.
ROUTE_PROBE = ('8.8.8.8', 53)


class InfoError(Exception):
    """What current points to cannot be told; the message names the option or the path."""


def check_params(params):
    """Why the parameters cannot be used, or None."""
    return _release_switch.app_root_problem(params['app_root'])


def live_release(app_root):
    """The name of the release ``current`` points to, '' when there is no ``current``."""
    current = os.path.join(app_root, 'current')
    try:
        target = _release_switch.read_link(current)
    except _release_switch.SwitchError as exc:
        raise InfoError(str(exc))
    if not target:
        return ''
    found = RELEASE_LINK.match(target)
    if not found or '..' in target:
        raise InfoError('%s points to %r, not to releases/NAME as the release role switches it' % (current, target))
    return found.group(1)


def read_revision(path):
    """The revision in ``path`` (its first line, at most 40 characters); '' when there is no such file or its first
    line is not a revision."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return ''
        if exc.errno == errno.ELOOP:
            raise InfoError('%s is a symbolic link; a release\'s REVISION is never followed through one' % path)
        raise InfoError('cannot open %s: %s' % (path, exc.strerror or exc))
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise InfoError('%s is not a regular file; not read as the release\'s commit' % path)
        if status.st_uid != _release_switch.TRUSTED_UID:
            raise InfoError('%s is owned by uid %d, not root; not trusted as the release\'s commit'
                            % (path, status.st_uid))
        if status.st_size > MAX_REVISION_BYTES:
            raise InfoError('%s is %d bytes, too large for a commit' % (path, status.st_size))
        text = os.read(fd, MAX_REVISION_BYTES).decode('ascii', 'replace')
    finally:
        os.close(fd)
    lines = text.strip().splitlines()
    revision = lines[0].strip() if lines else ''
    return revision[:SHOWN_REVISION] if REVISION.match(revision) else ''


def default_ipv4(probe=ROUTE_PROBE):
    """The address the host sends from by its default route, '' when it has none."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect(probe)
        return sock.getsockname()[0]
    except OSError:
        return ''
    finally:
        sock.close()


def run(params):
    """The module's result; InfoError (the message names the path) on failure."""
    app_root = params['app_root']
    release = live_release(app_root)
    commit = read_revision(os.path.join(app_root, 'releases', release, 'REVISION')) if release else ''
    result = dict(changed=False, release=release, commit=commit,
                  msg='%s/current %s' % (app_root, 'points to releases/%s%s' % (
                      release, ' (commit %s)' % commit[:12] if commit else '') if release else 'does not exist'))
    if params['default_ipv4']:
        result['default_ipv4'] = default_ipv4()
    if params['record']:
        try:
            result['record'] = _release_switch.read_record(os.path.join(app_root, _release_switch.RECORD))
        except _release_switch.SwitchError as exc:
            raise InfoError(str(exc))
    return result

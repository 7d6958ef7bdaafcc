# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""nginx as the role lb_nginx configures it: whether the upstream sends each server traffic.

Private to the collection: the interface may change without notice.
Facts relied on (roles/lb_nginx):

* the upstream of an app includes ``<config_dir>/servers/*.conf``, one file per server named after it, each
  holding one ``server ADDRESS max_fails=N fail_timeout=Ns[ down];  # NAME`` line (templates/server.conf.j2);
* a drained server's line carries the ``down`` parameter; the drain and enable entry points rewrite only that
  file, root-owned, and reload nginx;
* nginx's include glob does not match names starting with a dot (the temporary files of a template write).

The files are read only when they are regular files owned by root, opened without following a symlink and
without blocking; the content of a file that fails a check is never shown.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

# Only root's files are believed: the role writes them as root, mode 0644.
TRUSTED_UID = 0

# One server line and a comment; a file much larger than that is not one of the role's.
MAX_FILE_BYTES = 64 * 1024

SUFFIX = '.conf'


class NginxError(Exception):
    """The servers' files cannot be read; the message names the option and the path."""


def servers_dir(config_dir):
    return os.path.join(config_dir, 'servers')


def server_path(config_dir, name):
    return os.path.join(servers_dir(config_dir), name + SUFFIX)


def check_config_dir(config_dir):
    """NginxError unless ``config_dir`` and its ``servers`` directory exist."""
    for path in (config_dir, servers_dir(config_dir)):
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise NginxError('config_dir=%s: %s does not exist (is the role lb_nginx set up for this app on '
                                 'this host?)' % (config_dir, path))
            raise NginxError('config_dir=%s: cannot read %s: %s' % (config_dir, path, exc.strerror or exc))
        if not stat.S_ISDIR(st.st_mode):
            raise NginxError('config_dir=%s: %s is not a directory' % (config_dir, path))


def list_servers(config_dir):
    """The names of the servers the upstream includes: every ``*.conf`` of the servers directory, sorted."""
    directory = servers_dir(config_dir)
    try:
        entries = os.listdir(directory)
    except OSError as exc:
        raise NginxError('config_dir=%s: cannot list %s: %s' % (config_dir, directory, exc.strerror or exc))
    return sorted(entry[:-len(SUFFIX)] for entry in entries
                  if entry.endswith(SUFFIX) and not entry.startswith('.') and len(entry) > len(SUFFIX))


def _kind(mode):
    for test, name in ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISSOCK, 'a socket'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return 'not a regular file'


def read_server_file(path):
    """The text of the server file ``path``, or None when there is none.

    NginxError, naming the path and never the content, when it is a symlink, not a regular file, not owned by
    root or too large.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise NginxError('%s: is a symbolic link; server files are never followed through one' % path)
        raise NginxError('%s: cannot open: %s' % (path, exc.strerror or exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NginxError('%s: is %s, not a server file' % (path, _kind(st.st_mode)))
        if st.st_uid != TRUSTED_UID:
            raise NginxError('%s: is owned by uid %d, not root; not trusted as a server file' % (path, st.st_uid))
        if st.st_size > MAX_FILE_BYTES:
            raise NginxError('%s: is %d bytes, too large for a server file' % (path, st.st_size))
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise NginxError('%s: grew past %d bytes while read; not a server file' % (path, MAX_FILE_BYTES))
            chunks.append(chunk)
    except OSError as exc:
        raise NginxError('%s: cannot read: %s' % (path, exc.strerror or exc))
    finally:
        os.close(fd)
    return b''.join(chunks).decode('utf-8', 'replace')


def parse_server_line(path, text):
    """(address, parameters) of the one ``server`` directive of a server file.

    Comments (``#`` to the end of the line) are ignored. NginxError, quoting nothing of the file, when it holds
    anything but exactly one ``server`` directive.
    """
    code = ' '.join(line.split('#', 1)[0] for line in text.splitlines())
    statements = [statement.split() for statement in code.split(';')]
    if statements[-1]:
        raise NginxError('%s: does not end its last directive with ";"; not a server file' % path)
    statements = [words for words in statements if words]
    servers = [words for words in statements if words[0] == 'server' and len(words) >= 2]
    if len(servers) != 1 or len(statements) != 1:
        raise NginxError('%s: holds %d directive%s, %d of them "server ADDRESS ...;"; a server file holds exactly '
                         'one' % (path, len(statements), '' if len(statements) == 1 else 's', len(servers)))
    return servers[0][1], servers[0][2:]


def server_report(path, text):
    """What lb_state returns for the server whose file ``path`` holds ``text``."""
    address, parameters = parse_server_line(path, text)
    if 'down' in parameters:
        return dict(state='drained', detail='marked down in %s' % path, address=address, path=path)
    return dict(state='enabled', detail='up in %s' % path, address=address, path=path)


def read_servers(config_dir, names=None):
    """{name: report} of the servers ``names`` (all the upstream includes when None); a name without a file is
    reported missing."""
    check_config_dir(config_dir)
    reports = {}
    for name in (list_servers(config_dir) if names is None else names):
        path = server_path(config_dir, name)
        text = read_server_file(path)
        if text is None:
            reports[name] = dict(state='missing', detail='no %s: nginx does not know this server' % path,
                                 address=None, path=path)
        else:
            reports[name] = server_report(path, text)
    return reports

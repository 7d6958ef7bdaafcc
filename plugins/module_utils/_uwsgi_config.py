# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a uWSGI configuration declares: its ini options, and the command line and environment of a master.

Private to the collection: the interface may change without notice.
``ini_items`` keeps every value of a repeated option in order (a vassal's sockets and subscriptions);
``declared_options`` reads a whole configuration (environment, command line, ini files and the ini files they
include), and ``flag_declared`` asks it one boolean option.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

# The options whose first value is the address a vassal subscribes with, in uWSGI's order of sockets.
SOCKET_OPTIONS = ('socket', 'uwsgi-socket', 'shared-socket', 'http-socket', 'fastcgi-socket', 'protocol-socket')
# The options that subscribe to a subscription server: ``server:key`` values, and ``key=value`` lists.
SUBSCRIBE_TO_OPTIONS = ('subscribe-to', 'subscribe', 'st')
SUBSCRIBE2_OPTIONS = ('subscribe2', 'subscribe2-to')

_TRUE_OFF = ('false', 'off', 'no', '0')


# ---------------------------------------------------------------- ini options

def ini_items(ini_text, section='uwsgi', bare=False):
    """(key, value) pairs of one section, in order and with repeats: uWSGI options repeat (socket, env). With
    ``bare``, a line that is only a key (a flag) is kept, with the value None."""
    items = []
    current = None
    for line in (ini_text or '').splitlines():
        line = line.strip()
        if not line or line[0] in ';#':
            continue
        if line.startswith('[') and line.endswith(']'):
            current = line[1:-1].strip()
            continue
        if current != section:
            continue
        if '=' in line:
            key, _sep, value = line.partition('=')
            items.append((key.strip().replace('_', '-'), value.strip()))
        elif bare:
            items.append((line.replace('_', '-'), None))
    return items


def subscription_addresses(ini_text):
    """The addresses a vassal ini subscribes with: the explicit ``address=`` of ``subscribe-to`` values, the
    ``addr=`` of ``subscribe2`` ones, and its first socket (what a subscription without one announces)."""
    addresses = []
    first_socket = None
    for key, value in ini_items(ini_text):
        if key in SUBSCRIBE_TO_OPTIONS:
            subscription = parse_subscribe_to(value)
            if subscription and subscription['address']:
                addresses.append(subscription['address'])
        elif key in SUBSCRIBE2_OPTIONS and value:
            for field in value.split(','):
                name, _sep, setting = field.partition('=')
                if name.strip() == 'addr' and setting.strip():
                    addresses.append(setting.strip())
        elif key in SOCKET_OPTIONS and value and first_socket is None:
            first_socket = value
    if first_socket is not None:
        addresses.append(_address_as_subscribed(first_socket))
    return addresses


def _address_as_subscribed(socket):
    """A socket option's address as the vassal announces it: the text before any ``,modifier``."""
    return socket.split(',')[0].strip()


def parse_subscribe_to(value):
    """A ``subscribe-to`` value read as uWSGI 2.0 reads it (core/subscription.c, uwsgi_subscribe), or None when
    uWSGI would send nothing for it.

    ``[address=]server:key[,modifier1[,sign]]``: ``server`` is a unix socket path when it starts with ``/`` (the
    key then follows the first ``:``), else ``host:port`` (the key follows the second ``:``); a key may hold
    ``:``. ``address`` (what the vassal announces, else its first socket) ends at the first ``=``; a ``=N=`` prefix
    names shared socket N, not resolved here (address None). A key ``@file`` reads the keys from a file (key None).
    Returns {'server', 'key', 'address'}.
    """
    if not value or value.startswith('@'):
        # A value starting with @ is read from that file by uWSGI's option parser: not the subscription itself.
        return None
    address = None
    server_and_key = value
    if '=' in value:
        if value.startswith('='):
            end = value.find('=', 1)
            if end < 0:
                return None
            server_and_key = value[end + 1:]
        else:
            address, _sep, server_and_key = value.partition('=')
    if server_and_key.startswith('/'):
        key_colon = server_and_key.find(':', 1)
    else:
        port_colon = server_and_key.find(':')
        key_colon = server_and_key.find(':', port_colon + 1) if port_colon >= 0 else -1
    if key_colon < 0:
        return None
    key = server_and_key[key_colon + 1:]
    return {'server': server_and_key[:key_colon],
            'key': None if key.startswith('@') else key.split(',', 1)[0],
            'address': address}


def subscription_servers(ini_text):
    """The subscription servers a vassal ini announces to, from ``subscribe-to``/``subscribe``/``st``
    (``server:key``, see ``parse_subscribe_to``) and ``subscribe2`` (``server=...,key=...``), in order, without
    repeats. A server is a unix socket path or ``host:port``."""
    servers = []
    for key, value in ini_items(ini_text):
        server = None
        if key in SUBSCRIBE_TO_OPTIONS:
            subscription = parse_subscribe_to(value)
            server = subscription and subscription['server']
        elif key in SUBSCRIBE2_OPTIONS:
            fields = dict(field.strip().partition('=')[::2] for field in value.split(','))
            server = fields.get('server')
        if server and server not in servers:
            servers.append(server)
    return servers


# ---------------------------------------------------------------- lazy-apps evidence

def lazy_apps_declared(cmdline, environ, cwd, read_text):
    """True/False when the instance's own configuration says whether apps load in workers (``lazy-apps``, or
    its older name ``lazy``); None when it cannot be told. See flag_declared."""
    return flag_declared(('lazy-apps', 'lazy'), cmdline, environ, cwd, read_text)


def flag_declared(names, cmdline, environ, cwd, read_text):
    """True/False when a uWSGI process's own configuration sets one of the flag options ``names`` (``lazy-apps``,
    ``emperor-nofollow``): its command line, its ``UWSGI_*`` environment, and the ini files it names and those
    include. None when it cannot be told (a config format or include not read here).

    ``read_text(path)`` returns a file's text or None; injected for tests.
    """
    options, unknown = declared_options(cmdline, environ, cwd, read_text)
    if any(name in names and (value is None or _truthy(value)) for name, value in options):
        return True
    return None if unknown else False


def declared_options(cmdline, environ, cwd, read_text):
    """(options, unknown): every (name, value) a uWSGI process's own configuration sets, with repeats, from its
    ``UWSGI_*`` environment, its command line and the ini files these name and include; a flag given without a
    value has None. ``unknown`` when part of the configuration is not read here (a yaml, xml or json file, an
    include or a file that cannot be read)."""
    options = []
    unknown = False
    for key, value in sorted(environ.items()):
        if key.startswith('UWSGI_') and len(key) > 6:
            options.append((key[6:].lower().replace('_', '-'), value))
    args = list(cmdline[1:])
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if len(args) == 1 and not arg.startswith('-'):
            unknown = _read_config('--ini' if arg.endswith('.ini') else 'other', arg, cwd, read_text, options, 0) \
                or unknown
            continue
        if not arg.startswith('-'):
            continue
        name, has_value, value = arg.partition('=')
        if not has_value:
            value = args[index] if index < len(args) and not args[index].startswith('-') else None
            index += value is not None
        if name in _CONFIG_OPTIONS:
            unknown = _read_config(name, value, cwd, read_text, options, 0) or unknown
            continue
        options.append((name.lstrip('-').replace('_', '-'), value))
    return options, unknown


def _truthy(value):
    if value is None:
        return False
    return value.strip().lower() not in _TRUE_OFF


# Options that name a config file; only --ini files are read here.
_CONFIG_OPTIONS = ('--ini', '--yaml', '-y', '--json', '-j', '--xml', '-x')


def _read_config(kind, spec, cwd, read_text, options, depth):
    """Add the options of config file ``spec`` (and of the ini files it includes) to ``options``; True when some of
    it could not be read."""
    if spec is None or depth > 5 or kind != '--ini':
        return True
    path, _sep, section = spec.partition(':')
    if not os.path.isabs(path) and cwd:
        path = os.path.join(cwd, path)
    text = read_text(path)
    if text is None:
        return True
    unknown = False
    for key, value in ini_items(text, section or 'uwsgi', bare=True):
        if key == 'ini' and value:
            unknown = _read_config('--ini', value, os.path.dirname(path), read_text, options, depth + 1) or unknown
        else:
            options.append((key, value))
    return unknown


# ---------------------------------------------------------------- magic variables

def magic_table(config_path, emperor_cwd=None):
    """The magic variables (``%n``, ``%s`` ...) of a vassal started from ``config_path``, as uWSGI 2.0 fills them
    (core/uwsgi.c, config_magic_table_fill): a symlink keeps its own name, in the directory the Emperor runs
    it from (``emperor_cwd``, resolved like getcwd); any other file is resolved to its real path.

    Only the variables a path defines; the others (``%h``, ``%k`` ...) are left as they are by magic_sub.
    """
    name = os.path.basename(config_path)
    if os.path.islink(config_path):
        full = os.path.join(os.path.realpath(emperor_cwd or os.path.dirname(config_path)), name)
    else:
        full = os.path.realpath(config_path)
    directory, base = os.path.split(full)
    stem, dot, extension = base.rpartition('.')
    table = {'o': name, 'p': full, 's': base, 'd': directory, 'c': os.path.basename(directory),
             'e': extension if dot else '', 'n': stem if dot else base, 'x': ''}
    parts = [part for part in directory.split('/') if part][:10]
    table.update((str(index), parts[index] if index < len(parts) else '') for index in range(10))
    # A vassal's own file is its first file: the upper-case variables name the same things.
    table.update(dict((key.upper(), value) for key, value in list(table.items()) if key.isalpha()))
    table.update({'%': '%', '(': '%('})
    return table


def magic_sub(text, table):
    """``text`` with each ``%X`` whose X the table defines replaced, as uWSGI replaces them in a config file
    before reading its options (core/utils.c, magic_sub); ``%(`` starts a placeholder and stays."""
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == '%' and index + 1 < len(text) and text[index + 1] in table:
            out.append(table[text[index + 1]])
            index += 2
            continue
        out.append(char)
        index += 1
    return ''.join(out)

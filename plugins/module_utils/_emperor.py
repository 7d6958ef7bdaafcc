# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A uWSGI Emperor and its vassals as the host shows them: their configs, which of them serve, a touch.

Private to the collection: the interface may change without notice.
Facts relied on (uWSGI 2.0, core/emperor.c, core/master.c), checked against 2.0.21 and 2.0.31:

* the Emperor's stats server sends one JSON document: ``emperor`` (what it watches), ``vassals[]`` with
  ``id`` (the config file's name), ``pid`` (the vassal's master), ``last_mod``, ``accepting``,
  ``last_accepting``, and ``blacklist[]`` with the vassals it failed to keep running (``id``,
  ``attempt``, ``throttle_level`` in microseconds);
* the Emperor stat()s each config: when its mtime (whole seconds) is greater than ``last_mod`` it sets
  ``last_mod``, resets ``accepting`` and asks the vassal for a graceful reload; a symlinked config is
  followed, so vassals sharing one file reload together, unless the Emperor runs with ``emperor-nofollow``:
  then it lstat()s the config, and each symlink is a vassal of its own, reloaded when the link's own mtime
  moves (``touch -h``);
* a vassal's magic variables come from the config's name as the Emperor runs it: for a symlink, the link's
  own name (``%n``), so vassals sharing one file can still differ (``socket = /run/app/%n.sock``);
* a vassal with ``unsubscribe-on-graceful-reload`` unsubscribes from the FastRouter before its graceful
  reload, and subscribes again from its master loop, after its app loaded and its workers were forked;
  a vassal whose app fails to load with ``need-app`` exits, and the Emperor blacklists and respawns it
  with a growing throttle.

A vassal serves when the Emperor runs it, it accepts and its FastRouter node (see _fastrouter) is live. The
reload of the vassals, keeping a floor of them serving, is in _emperor_reload.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import os
import stat
import time

from ansible_collections.graceful.wsgi.plugins.module_utils import _fastrouter
from ansible_collections.graceful.wsgi.plugins.module_utils import _proc
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi_config

STATS_TIMEOUT = 2.0
SEND_TIMEOUT = 2.0


class EmperorError(Exception):
    """A state the reload cannot start from or continue in; the message names the option and path."""


# ---------------------------------------------------------------- configs

def vassal_configs(names, suffix):
    """The vassal config names among a directory's entries, sorted: those ending with the suffix."""
    return sorted(name for name in names if name.endswith(suffix) and not name.startswith('.') and len(name) > len(suffix))


def select_vassals(configs, requested, suffix, emperor_dir):
    """The configs to reload: all, or those named in ``vassals`` (with or without the suffix)."""
    if not requested:
        return list(configs)
    selected, unknown = [], []
    for name in requested:
        config = name if name.endswith(suffix) else name + suffix
        if config not in configs:
            unknown.append(name)
        elif config not in selected:
            selected.append(config)
    if unknown:
        raise EmperorError('vassals: %s not found in emperor_dir=%s (its vassals: %s)'
                           % (', '.join(unknown), emperor_dir, ', '.join(configs) or 'none'))
    return selected


def shared_files(real_paths):
    """Groups of configs that are one file (symlinks to it): the Emperor would reload them together."""
    by_target = {}
    for config, target in real_paths.items():
        by_target.setdefault(target, []).append(config)
    return sorted(sorted(group) for group in by_target.values() if len(group) > 1)


def config_stem(config, suffix):
    return config[:-len(suffix)] if suffix and config.endswith(suffix) else config


# ---------------------------------------------------------------- stats documents

def check_emperor_document(document, label, emperor_dir, stats_cwd_realpath=os.path.realpath):
    """EmperorError unless the document is an Emperor's and that Emperor watches emperor_dir."""
    if not isinstance(document.get('vassals'), list) or 'emperor' not in document:
        raise EmperorError('%s: JSON without "emperor" and "vassals": not the stats server of a uWSGI Emperor '
                           '(an instance or router stats socket?)' % label)
    watched = document.get('emperor') or []
    if isinstance(watched, str):
        watched = [watched]
    wanted = stats_cwd_realpath(emperor_dir)
    cwd = document.get('cwd') or '/'
    for monitor in watched:
        if watched_directory(monitor, cwd, stats_cwd_realpath) == wanted:
            return
    raise EmperorError('%s is the stats server of an Emperor watching %s, not emperor_dir=%s'
                       % (label, ', '.join(str(item) for item in watched) or 'nothing', emperor_dir))


def watched_directory(monitor, cwd, realpath=os.path.realpath):
    """The directory an Emperor monitor (``/dir``, ``dir://``, ``glob://`` or a glob) watches, resolved."""
    spec = str(monitor)
    for scheme in ('dir://', 'glob://'):
        if spec.startswith(scheme):
            spec = spec[len(scheme):]
    if '://' in spec:
        return None
    if any(char in spec for char in '*?['):
        spec = os.path.dirname(spec)
    if not os.path.isabs(spec):
        spec = os.path.join(cwd, spec)
    return realpath(spec)


def check_fastrouter_document(document, label):
    if not isinstance(document.get('subscriptions'), list):
        raise EmperorError('%s: JSON without "subscriptions": not the stats server of a uWSGI FastRouter '
                           'with a subscription server' % label)


def emperor_entries(document):
    """Running vassals by config name, and blacklisted (failing, throttled) ones by config name."""
    running = {}
    for entry in document.get('vassals') or []:
        if isinstance(entry, dict) and entry.get('id'):
            running[os.path.basename(str(entry['id']))] = entry
    blacklisted = {}
    for entry in document.get('blacklist') or []:
        if isinstance(entry, dict) and entry.get('id'):
            blacklisted[os.path.basename(str(entry['id']))] = entry
    return running, blacklisted


def find_node(nodes, addresses, stem):
    """The FastRouter node of a vassal: by the addresses its ini subscribes with, else by the socket's
    file name (``/run/app/web-1.sock`` for ``web-1.ini``), the convention of the Emperor docs."""
    for address in addresses:
        if address in nodes:
            return nodes[address]
    if not addresses:
        for name, node in nodes.items():
            base = name.rsplit('/', 1)[-1]
            if base.split('.', 1)[0] == stem:
                return node
    return None


def observe(emperor_document, fastrouter_document, vassals, suffix):
    """One observation of every vassal: {config: {'entry', 'blacklisted', 'node', 'active'}}.

    ``vassals`` maps each config name to the addresses it subscribes with. A vassal is active (serves)
    when the Emperor runs it, it accepts, and its FastRouter subscription is live.
    """
    running, blacklisted = emperor_entries(emperor_document)
    nodes = _fastrouter.fastrouter_nodes(fastrouter_document)
    seen = {}
    for config, addresses in vassals.items():
        entry = running.get(config)
        node = find_node(nodes, addresses, config_stem(config, suffix))
        seen[config] = {
            'entry': entry,
            'blacklisted': blacklisted.get(config),
            'node': node,
            'active': bool(entry and entry.get('pid') and entry.get('accepting') and _fastrouter.node_live(node)),
        }
    return seen


def serving_count(observation):
    return sum(1 for state in observation.values() if state['active'])


def why_not_active(config, state, addresses):
    """Why a vassal does not serve, from one observation; the words an operator reads in the failure."""
    entry, node = state['entry'], state['node']
    if entry is None:
        black = state.get('blacklisted')
        if black:
            return ('%s: not running: the Emperor blacklisted it after %s failed start(s) and throttles its '
                    'respawns (throttle level %s): it exits as it starts, e.g. its app fails to load (need-app); '
                    'see its log' % (config, black.get('attempt', '?'), black.get('throttle_level', '?')))
        return '%s: not running: the Emperor lists no vassal for it' % config
    if not entry.get('accepting'):
        return '%s: running (pid %s) but not accepting requests yet' % (config, entry.get('pid'))
    if node is None:
        return '%s: accepting but not subscribed to the FastRouter (no node %s)' % (
            config, ' or '.join(addresses) or 'named after it')
    if not _fastrouter.node_live(node):
        return '%s: accepting but its FastRouter node %s is marked dead (unsubscribed)' % (config, node.get('name'))
    return '%s: serving' % config


# ---------------------------------------------------------------- touching a config

def next_mtime(current_mtime, last_mod, now):
    """The mtime to touch a config to: now, and always past what the Emperor saw (it compares seconds)."""
    floor = max(int(current_mtime or 0), int(last_mod or 0)) + 1
    return max(int(now), floor)


def touch_config(path, last_mod, now):
    """Move the vassal config ``path``'s mtime past what the Emperor saw (``last_mod``); returns the mtime set.

    The Emperor stat()s a config through its symlinks, so a config linked into its directory is touched where it
    points to. A symlink on the way is followed only when root or this user owns it: one the app's user made
    (replacing the file a config links to in the app's directories) could lead to any file, whose mtime root would
    move. The file reached is opened without following a symlink or blocking on a FIFO, must be a regular file,
    and must still be what ``path`` leads to; its times are set through the descriptor. EmperorError names the
    config and what it is instead; nothing is touched then.
    """
    target = _config_target(path)
    via = ' (through its symlink to %s)' % target if target != path else ''
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        # ELOOP: a symlink appeared since it was resolved; ENXIO: a socket.
        try:
            mode = os.lstat(target).st_mode
        except OSError:
            mode = None
        if exc.errno in (errno.ELOOP, errno.ENXIO) and mode is not None and not stat.S_ISREG(mode):
            raise EmperorError('vassal config %s: not a regular file%s (%s); nothing touched'
                               % (path, via, _file_kind(mode)))
        raise EmperorError('vassal config %s: cannot be touched%s: %s' % (path, via, exc.strerror or exc))
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise EmperorError('vassal config %s: not a regular file%s (%s); nothing touched'
                               % (path, via, _file_kind(status.st_mode)))
        try:
            leads_to = os.stat(path)
        except OSError:
            leads_to = None
        if leads_to is None or (leads_to.st_dev, leads_to.st_ino) != (status.st_dev, status.st_ino):
            raise EmperorError('vassal config %s: changed while it was being touched (it no longer leads to %s); '
                               'nothing touched' % (path, target))
        mtime = next_mtime(status.st_mtime, last_mod, now)
        os.utime(fd, (status.st_atime, mtime))
    except OSError as exc:
        raise EmperorError('vassal config %s: cannot be touched%s: %s' % (path, via, exc.strerror or exc))
    finally:
        os.close(fd)
    return mtime


def touch_link(path, last_mod, now):
    """Move the mtime of the symlink ``path`` itself past what the Emperor saw, as ``touch -h`` does, for an Emperor
    that does not follow symlinks (``emperor-nofollow``); returns the mtime set. Nothing the link leads to is
    touched. EmperorError names the config when it is no longer a symlink or cannot be touched."""
    try:
        status = os.lstat(path)
        if not stat.S_ISLNK(status.st_mode):
            raise EmperorError('vassal config %s: changed while it was being touched (no longer a symbolic link); '
                               'nothing touched' % path)
        mtime = next_mtime(status.st_mtime, last_mod, now)
        os.utime(path, (status.st_atime, mtime), follow_symlinks=False)
    except OSError as exc:
        raise EmperorError('vassal config %s: the symbolic link cannot be touched: %s' % (path, exc.strerror or exc))
    return mtime


def emperor_nofollow(document, proc_root=None, read_text=_proc.read_text):
    """(nofollow, why): whether the Emperor whose stats ``document`` was read runs with ``emperor-nofollow``,
    from its own command line, environment and the ini files those name. ``nofollow`` is None, with ``why``,
    when that cannot be told."""
    pid = document.get('pid')
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 1:
        return None, 'its stats name no pid'
    info = _proc.read_process(pid, proc_root)
    if info is None or not _uwsgi.looks_like_uwsgi(info):
        return None, 'its stats name pid %d, which is not a running uWSGI process' % pid
    cwd = _proc.read_link(pid, 'cwd', proc_root)
    declared = _uwsgi_config.flag_declared(('emperor-nofollow',), info.cmdline, _proc.read_environ(pid, proc_root),
                                           cwd, read_text)
    if declared is None:
        return None, 'pid %d reads a config file that cannot be read here (%s)' % (pid, ' '.join(info.cmdline))
    return declared, 'pid %d %s emperor-nofollow' % (pid, 'runs with' if declared else 'runs without')


def _config_target(path, hops=8):
    """The file the config ``path`` leads to through its symlinks, following only those of root or this user."""
    current = path
    for _hop in range(hops):
        try:
            status = os.lstat(current)
            if not stat.S_ISLNK(status.st_mode):
                return current
            if status.st_uid not in (0, os.geteuid()):
                raise EmperorError('vassal config %s: leads through the symbolic link %s of uid %d, neither root nor '
                                   'this user: not followed; nothing touched' % (path, current, status.st_uid))
            current = os.path.join(os.path.dirname(current), os.readlink(current))
        except OSError as exc:
            raise EmperorError('vassal config %s: cannot be touched%s: %s'
                               % (path, '' if current == path else ' (its symlink leads to %s)' % current,
                                  exc.strerror or exc))
    raise EmperorError('vassal config %s: more than %d symbolic links on the way; nothing touched' % (path, hops))


def _file_kind(mode):
    for test, name in ((stat.S_ISLNK, 'a symbolic link, not followed'), (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISSOCK, 'a socket'), (stat.S_ISDIR, 'a directory'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return 'file type %o' % stat.S_IFMT(mode)


# ---------------------------------------------------------------- the host

class Fleet(object):
    """The Emperor, its FastRouter and the vassal configs, as read from the host."""

    def __init__(self, params):
        self.emperor_dir = params['emperor_dir']
        self.suffix = params['vassal_suffix']
        self.emperor_address = _uwsgi.parse_stats_address(params['emperor_stats'])
        self.router_address = _uwsgi.parse_stats_address(params['fastrouter_stats'])
        self.emperor_label = _uwsgi.stats_label(self.emperor_address, 'emperor_stats')
        self.router_label = _uwsgi.stats_label(self.router_address, 'fastrouter_stats')
        self.configs = []
        self.addresses = {}
        self.servers = {}
        self.last_error = None
        # Whether the Emperor runs with emperor-nofollow: then a symlinked config is touched itself (see touch).
        self.nofollow = False
        # While the stats cannot be read: since when (epoch seconds, monotonic seconds).
        self.unreadable_since = None

    def load_configs(self):
        if not os.path.isdir(self.emperor_dir):
            raise EmperorError('emperor_dir=%s is not a directory' % self.emperor_dir)
        try:
            self.configs = vassal_configs(os.listdir(self.emperor_dir), self.suffix)
        except OSError as exc:
            raise EmperorError('emperor_dir=%s cannot be listed: %s' % (self.emperor_dir, exc.strerror))
        if not self.configs:
            raise EmperorError('emperor_dir=%s holds no vassal config ending with vassal_suffix=%s'
                               % (self.emperor_dir, self.suffix))
        for config in self.configs:
            text = _proc.read_text(self.path(config))
            if text is not None:
                # Through a symlink, the link's name: vassals sharing one file announce different sockets.
                text = _uwsgi_config.magic_sub(text, _uwsgi_config.magic_table(self.path(config), self.emperor_dir))
            self.addresses[config] = _uwsgi_config.subscription_addresses(text)
            self.servers[config] = _uwsgi_config.subscription_servers(text)

    def path(self, config):
        return os.path.join(self.emperor_dir, config)

    def read(self):
        """Both stats documents checked, or UwsgiError / EmperorError."""
        emperor = _uwsgi.read_json_document(self.emperor_address, STATS_TIMEOUT, self.emperor_label)
        check_emperor_document(emperor, self.emperor_label, self.emperor_dir)
        router = _uwsgi.read_json_document(self.router_address, STATS_TIMEOUT, self.router_label)
        check_fastrouter_document(router, self.router_label)
        return emperor, router

    def observe(self):
        """The state of every vassal, or None (with last_error kept) when the stats cannot be read."""
        attempted = (time.time(), time.monotonic())
        try:
            emperor, router = self.read()
        except (_uwsgi.UwsgiError, EmperorError) as exc:
            self.last_error = str(exc)
            if self.unreadable_since is None:
                self.unreadable_since = attempted
            return None
        self.unreadable_since = None
        return observe(emperor, router, self.addresses, self.suffix)

    def unreadable(self):
        """Since when and why the stats cannot be read, or None while they can."""
        if self.unreadable_since is None:
            return None
        epoch, clock = self.unreadable_since
        since = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
        return 'the stats could not be read since %s (%.1fs): %s' % (since, time.monotonic() - clock, self.last_error)

    def unsubscribe(self, config, node):
        """Ask each subscription server the vassal announces to to drop its node (as the vassal itself does on a
        graceful reload); returns the errors, one per server that could not be sent to. A unix socket is sent to
        only once checked (_fastrouter.open_subscription_socket): it usually sits in the app user's directory."""
        packet = _fastrouter.subscription_packet(node.get('key') or '', node['name'], _fastrouter.UNSUBSCRIBE)
        return _fastrouter.send_packet(packet, self.servers[config], SEND_TIMEOUT)

    def touch(self, config, entry):
        """Move the config's mtime past what the Emperor saw; returns the mtime set. A symlink is touched itself
        when the Emperor does not follow symlinks (``nofollow``), else where it leads. A config that leads to no
        regular file (a FIFO), or through a symlink of another user, raises EmperorError naming it, with nothing
        touched."""
        path = self.path(config)
        if self.nofollow and os.path.islink(path):
            return touch_link(path, (entry or {}).get('last_mod'), time.time())
        return touch_config(path, (entry or {}).get('last_mod'), time.time())


def workers_of(entry):
    if not entry or not entry.get('pid'):
        return []
    return _proc.child_pids(int(entry['pid']))

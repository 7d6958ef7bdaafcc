# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""uWSGI Emperor + FastRouter subscriptions: which vassals serve, and a reload that keeps a floor of them.

Private to the collection: the interface may change without notice.
Facts relied on (uWSGI 2.0, core/emperor.c, core/master.c, plugins/corerouter), checked against 2.0.21
and 2.0.31:

* the Emperor's stats server sends one JSON document: ``emperor`` (what it watches), ``vassals[]`` with
  ``id`` (the config file's name), ``pid`` (the vassal's master), ``last_mod``, ``accepting``,
  ``last_accepting``, and ``blacklist[]`` with the vassals it failed to keep running (``id``,
  ``attempt``, ``throttle_level`` in microseconds);
* the Emperor stat()s each config: when its mtime (whole seconds) is greater than ``last_mod`` it sets
  ``last_mod``, resets ``accepting`` and asks the vassal for a graceful reload; a symlinked config is
  followed, so vassals sharing one file reload together;
* a vassal with ``unsubscribe-on-graceful-reload`` unsubscribes from the FastRouter before its graceful
  reload, and subscribes again from its master loop, after its app loaded and its workers were forked;
  a vassal whose app fails to load with ``need-app`` exits, and the Emperor blacklists and respawns it
  with a growing throttle;
* the FastRouter's stats list ``subscriptions[].nodes[]`` with ``name`` (the address the vassal
  subscribed with), ``death_mark`` (1 once unsubscribed) and ``last_check``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import stat
import struct

# The options whose first value is the address a vassal subscribes with, in uWSGI's order of sockets.
SOCKET_OPTIONS = ('socket', 'uwsgi-socket', 'shared-socket', 'http-socket', 'fastcgi-socket', 'protocol-socket')

RELOADED = 'reloaded'
TIMEOUT = 'timeout'
NOT_STARTED = 'not_started'
PENDING = 'pending'
IN_FLIGHT = 'in_flight'


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


def ini_items(ini_text, section='uwsgi'):
    """(key, value) pairs of one section, in order and with repeats: uWSGI options repeat (socket, env)."""
    items = []
    current = None
    for line in (ini_text or '').splitlines():
        line = line.strip()
        if not line or line[0] in ';#':
            continue
        if line.startswith('[') and line.endswith(']'):
            current = line[1:-1].strip()
            continue
        if current == section and '=' in line:
            key, _sep, value = line.partition('=')
            items.append((key.strip().replace('_', '-'), value.strip()))
    return items


def subscription_addresses(ini_text):
    """The addresses a vassal ini subscribes with: ``subscribe2 addr=`` values, else its first socket."""
    addresses = []
    first_socket = None
    for key, value in ini_items(ini_text):
        if key in ('subscribe2', 'subscribe2-to') and value:
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


def fastrouter_nodes(document):
    """Every subscribed node by the address it subscribed with (a live one wins over a dead one)."""
    nodes = {}
    for subscription in document.get('subscriptions') or []:
        for node in (subscription or {}).get('nodes') or []:
            if not isinstance(node, dict) or 'name' not in node:
                continue
            node = dict(node, key=subscription.get('key'))
            name = str(node['name'])
            if name not in nodes or not node_live(nodes[name]):
                nodes[name] = node
    return nodes


def node_live(node):
    return node is not None and not node.get('death_mark')


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
    nodes = fastrouter_nodes(fastrouter_document)
    seen = {}
    for config, addresses in vassals.items():
        entry = running.get(config)
        node = find_node(nodes, addresses, config_stem(config, suffix))
        seen[config] = {
            'entry': entry,
            'blacklisted': blacklisted.get(config),
            'node': node,
            'active': bool(entry and entry.get('pid') and entry.get('accepting') and node_live(node)),
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
    if not node_live(node):
        return '%s: accepting but its FastRouter node %s is marked dead (unsubscribed)' % (config, node.get('name'))
    return '%s: serving' % config


# ---------------------------------------------------------------- the reload plan

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


class VassalReload(object):
    """One vassal's part in a run: started (unsubscribed, draining), touched, then back or timed out."""

    def __init__(self, config, was_active):
        self.config = config
        self.was_active = was_active
        self.state = PENDING
        self.started_clock = None
        self.drained_clock = None
        self.touched_at = None
        self.touched_mtime = None
        self.seen_down = False
        self.finished_at = None
        # A vassal the Emperor does not run (blacklisted after failed starts, or not yet spawned) is not touched:
        # the Emperor spawns it on its own schedule, which a touch does not change; the run waits for it.
        self.awaiting_spawn = False
        self.started_at = None

    @property
    def draining(self):
        return self.state == IN_FLIGHT and self.touched_mtime is None and not self.awaiting_spawn

    def seconds(self):
        if self.started_clock is None or self.finished_at is None:
            return None
        return round(self.finished_at - self.started_clock, 3)

    def drain_seconds(self):
        if self.started_clock is None or self.drained_clock is None:
            return None
        return round(self.drained_clock - self.started_clock, 3)


def drained(state):
    """The FastRouter routes nothing to the vassal any more and has no session with it: its node is gone
    (an unsubscribed node is dropped once its last session ends)."""
    node = state['node']
    return node is None or bool(node.get('death_mark') and not node.get('ref'))


def noticed(vassal, state):
    """The Emperor saw the touch (and asked the vassal to reload)."""
    entry = state['entry']
    return entry is not None and int(entry.get('last_mod') or 0) >= vassal.touched_mtime


def came_back(vassal, state):
    """A touched vassal is back when the Emperor saw the new mtime, it accepts again after having gone
    down (or accepted in a later second than the touch), and its FastRouter subscription is live."""
    entry = state['entry']
    if entry is None or not entry.get('pid') or not entry.get('accepting'):
        return False
    if not noticed(vassal, state) or not node_live(state['node']):
        return False
    return vassal.seen_down or int(entry.get('last_accepting') or 0) > int(vassal.touched_at)


def spawned_since_start(vassal, state):
    """A vassal the Emperor did not run at its start now serves, spawned after the start (so with the code current
    then)."""
    entry = state['entry']
    if entry is None or not entry.get('pid') or not entry.get('accepting') or not node_live(state['node']):
        return False
    return int(entry.get('last_run') or entry.get('first_run') or 0) >= int(vassal.started_at)


def settling(state):
    """The Emperor runs the vassal but it does not accept yet: it is starting. A touch now would ask a vassal that
    is still starting for a reload, which uWSGI 2.0 can leave running but never subscribing again."""
    entry = state['entry']
    return entry is not None and not entry.get('accepting')


def went_down(vassal, state):
    """Down after the touch, in the Emperor's eyes: gone, or not accepting once it saw the new mtime."""
    entry = state['entry']
    return entry is None or (noticed(vassal, state) and not entry.get('accepting'))


class Plan(object):
    """Which vassals to take down next so that at least ``min_active`` vassals serve at every moment.

    A vassal that does not serve may be started at any time; one that serves only while the vassals that
    serve and are not being reloaded stay at ``min_active`` or more once it goes down. After the first
    timeout no vassal is started any more: the ones in flight are waited for, the rest are not started.
    A started vassal that serves is drained first (the caller unsubscribes it) and touched once drained.
    """

    def __init__(self, targets, observation, min_active, timeout):
        self.min_active = min_active
        self.timeout = timeout
        self.vassals = dict((config, VassalReload(config, observation[config]['active'])) for config in targets)
        # Vassals that do not serve first: reloading them costs nothing and may add to the floor.
        self.order = sorted(targets, key=lambda config: (observation[config]['active'], config))
        self.stopped = False
        self.parallel_max = 0
        self.lowest_active = serving_count(observation)
        # Since when nothing is in flight and no vassal may start (see stuck), and whether that ended the run.
        self.stuck_since = None
        self.gave_up = False

    def in_flight(self):
        return [self.vassals[config] for config in self.order if self.vassals[config].state == IN_FLIGHT]

    def done(self):
        return all(v.state in (RELOADED, TIMEOUT, NOT_STARTED) for v in self.vassals.values())

    def to_start(self, observation):
        """The configs to take down now, given the latest observation."""
        if self.stopped:
            return []
        flying = set(v.config for v in self.in_flight())
        standing = sum(1 for config, state in observation.items() if state['active'] and config not in flying)
        chosen = []
        for config in self.order:
            vassal = self.vassals[config]
            if vassal.state != PENDING or settling(observation[config]):
                continue
            if observation[config]['active']:
                if standing - 1 < self.min_active:
                    continue
                standing -= 1
            chosen.append(config)
        return chosen

    def started(self, config, at, clock, observation):
        """``at`` is epoch seconds (compared with the Emperor's), ``clock`` monotonic."""
        vassal = self.vassals[config]
        vassal.state = IN_FLIGHT
        vassal.started_at = at
        vassal.started_clock = clock
        vassal.awaiting_spawn = observation[config]['entry'] is None
        self.parallel_max = max(self.parallel_max, len(self.in_flight()))

    def to_touch(self, observation, can_drain):
        """The draining vassals to touch now: drained, or ones the caller cannot drain (``can_drain(config)``
        false: nothing to unsubscribe from, or not serving). Vassals awaiting their spawn are never touched."""
        return [v.config for v in self.in_flight()
                if v.draining and (not can_drain(v.config) or drained(observation[v.config]))]

    def touched(self, config, at, clock, mtime, drained_first):
        """``at`` is epoch seconds (compared with the Emperor's), ``clock`` monotonic."""
        vassal = self.vassals[config]
        if drained_first:
            vassal.drained_clock = clock
        vassal.touched_at = at
        vassal.touched_mtime = mtime

    def update(self, observation, now):
        """Record an observation (None when the stats could not be read) at monotonic time ``now``: the
        floor, vassals that came back, vassals past their timeout, and a run stuck for as long as a timeout."""
        if observation is not None:
            self.lowest_active = min(self.lowest_active, serving_count(observation))
        for vassal in self.in_flight():
            state = observation.get(vassal.config) if observation is not None else None
            if state is not None and vassal.awaiting_spawn:
                if spawned_since_start(vassal, state):
                    vassal.state = RELOADED
                    vassal.finished_at = now
                    continue
            elif state is not None and not vassal.draining:
                if went_down(vassal, state):
                    vassal.seen_down = True
                if came_back(vassal, state):
                    vassal.state = RELOADED
                    vassal.finished_at = now
                    continue
            if now - vassal.started_clock >= self.timeout:
                vassal.state = TIMEOUT
                vassal.finished_at = now
                self.stop()
        # A vassal in flight times out on its own; with none in flight only this ends a run that cannot go on.
        if not self.stuck(observation):
            self.stuck_since = None
        elif self.stuck_since is None:
            self.stuck_since = now
        elif now - self.stuck_since >= self.timeout:
            self.gave_up = True
            self.stop()

    def stop(self):
        self.stopped = True
        for vassal in self.vassals.values():
            if vassal.state == PENDING:
                vassal.state = NOT_STARTED

    def stuck(self, observation):
        """True when nothing is in flight, vassals are pending and none may be started: the floor cannot be
        kept (a vassal that served went down on its own during the run), or the stats cannot be read (None):
        both count against the one timeout, whichever comes and goes."""
        return (not self.stopped and not self.in_flight()
                and any(v.state == PENDING for v in self.vassals.values())
                and (observation is None or not self.to_start(observation)))


# ---------------------------------------------------------------- the subscription protocol

SUBSCRIPTION_MODIFIER1 = 224
SUBSCRIBE = 0
UNSUBSCRIBE = 1


def subscription_servers(ini_text):
    """The subscription servers a vassal ini announces to, from ``subscribe-to``/``subscribe``/``st``
    (``server:key``) and ``subscribe2`` (``server=...,key=...``), in order, without repeats."""
    servers = []
    for key, value in ini_items(ini_text):
        server = None
        if key in ('subscribe-to', 'subscribe', 'st') and ':' in value and not value.startswith('@'):
            server = value.rsplit(':', 1)[0]
        elif key in ('subscribe2', 'subscribe2-to'):
            fields = dict(field.strip().partition('=')[::2] for field in value.split(','))
            server = fields.get('server')
        if server and server not in servers:
            servers.append(server)
    return servers


def _uwsgi_var(name, value):
    name, value = name.encode('utf-8'), str(value).encode('utf-8')
    return struct.pack('<H', len(name)) + name + struct.pack('<H', len(value)) + value


def subscription_packet(key, address, command):
    """A subscription packet as a vassal sends it (uwsgi packet, modifier1 224, modifier2 the command)."""
    body = _uwsgi_var('key', key) + _uwsgi_var('address', address) + _uwsgi_var('modifier1', 0) + \
        _uwsgi_var('modifier2', 0)
    return struct.pack('<BHB', SUBSCRIPTION_MODIFIER1, len(body), command) + body


def refusal(observation, targets, min_active, emperor_dir):
    """Why a run may not start, or None: it would have to take a serving vassal down while fewer than
    min_active + 1 serve."""
    active = sorted(config for config, state in observation.items() if state['active'])
    serving_targets = [config for config in targets if observation[config]['active']]
    if serving_targets and len(active) < min_active + 1:
        down = sorted(config for config in targets if not observation[config]['active'])
        hint = (' Reload only the vassals that do not serve (vassals: %s) to bring them back first.' % ', '.join(down)
                if down else '')
        return ('refusing to reload: %d vassal(s) of emperor_dir=%s serve (%s) and min_active=%d needs %d serving '
                'before one of them may go down.%s'
                % (len(active), emperor_dir, ', '.join(active) or 'none', min_active, min_active + 1, hint))
    return None


_SAFE = re.compile(r'[^A-Za-z0-9_.-]+')


def lock_name(emperor_dir_realpath):
    """A lock file name per Emperor directory, readable by an operator listing /run/lock."""
    return 'graceful-wsgi-vassals%s.lock' % _SAFE.sub('-', emperor_dir_realpath).rstrip('-')

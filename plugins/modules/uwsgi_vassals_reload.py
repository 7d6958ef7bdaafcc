#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: uwsgi_vassals_reload
short_description: Reload the vassals of a uWSGI Emperor behind a FastRouter, keeping a floor of serving vassals
version_added: 0.2.0
description:
  - Reloads the vassals of a uWSGI Emperor whose vassals subscribe to a FastRouter (the subscription system that
    the uWSGI docs call probably the best approach to graceful reloading). Each vassal is reloaded by moving its
    config's mtime forward; the Emperor then asks the vassal for a graceful reload.
  - As many vassals are reloaded at once as O(min_active) allows. A vassal that serves is only touched while,
    without it and without the vassals in flight, at least O(min_active) vassals serve. Vassals that do not serve
    (down, blacklisted by the Emperor, not subscribed) are touched first, since that costs nothing.
  - A vassal serves when the Emperor runs it, it accepts requests and its FastRouter subscription is live. A
    touched vassal counts as reloaded only when the Emperor reports the new config mtime, the vassal accepts again
    after having gone down, and its subscription is live again.
  - A serving vassal is drained before its touch. The module sends the FastRouter's subscription server the
    unsubscribe packet the vassal itself sends on a graceful reload. It then waits until the FastRouter has dropped
    the node, which it does once the last request routed there has ended. While the vassal drains, and until the
    Emperor has seen the touch, the packet is sent again whenever the vassal's periodic announce brings the node
    back. This is why a release that fails to load loses no request either. Without the drain, the connections
    waiting in the vassal's listen queue would be cut when its new master exits. The subscription servers are
    read from the vassal's C(subscribe-to) or C(subscribe2) options. A vassal without them is touched without a
    drain.
  - Refuses to start when a serving vassal would have to go down while fewer than O(min_active) + 1 vassals serve.
  - A vassal that is not back within O(timeout) seconds of its touch fails the task. No further vassal is touched
    once one timed out; the ones in flight are waited for. The failure names each vassal that did not come back,
    why (from the stats), and returns the stats entries.
  - The run also fails after O(timeout) without any vassal in flight when none may be started, because a vassal
    that served went down or because the stats cannot be read (each read of a stats server has 2 seconds). The
    failure then says since when the stats could not be read, and why.
  - One run per Emperor at a time. The run holds an exclusive lock, so a second run fails at once naming the first.
    The kernel releases the lock when the run ends, however it ends.
  - The number of serving vassals is sampled every O(poll_interval); the lowest seen is returned as
    RV(min_active_observed).
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.linux
attributes:
  check_mode:
    support: full
    details:
      - Reads the stats, applies every check and returns the vassals that would be touched first; touches nothing.
  diff_mode:
    support: none
options:
  emperor_dir:
    description:
      - The directory the Emperor watches for vassal configs.
      - The Emperor behind O(emperor_stats) must watch this directory (checked from its stats).
    type: path
    required: true
  emperor_stats:
    description:
      - The Emperor's stats server (C(--emperor-stats)), a unix socket path or C(host:port).
    type: str
    required: true
  fastrouter_stats:
    description:
      - The FastRouter's stats server (C(--fastrouter-stats)), a unix socket path or C(host:port).
      - A vassal is matched to its FastRouter node by the address it subscribes with, read from its ini
        (C(subscribe2) C(addr=), else its first C(socket)); for configs that cannot be read, by the socket's file
        name (C(web-1.sock) for C(web-1.ini)).
    type: str
    required: true
  vassal_suffix:
    description:
      - Files in O(emperor_dir) ending with this are vassal configs.
    type: str
    default: .ini
  min_active:
    description:
      - The least number of vassals that serve at every moment of the reload.
      - With N serving vassals, C(1) reloads N - 1 at once; N - 1 reloads them one by one.
    type: int
    default: 1
  timeout:
    description:
      - Seconds each vassal has, from its touch, to come back.
      - Also how long the run waits, with no vassal in flight, for a vassal it may start (the floor lost, or the
        stats unreadable).
    type: float
    default: 60
  poll_interval:
    description:
      - Seconds between two readings of the stats.
    type: float
    default: 0.1
  vassals:
    description:
      - Reload only these vassals (config names, with or without O(vassal_suffix)). All vassals count for the floor.
    type: list
    elements: str
notes:
  - Configs symlinked to one file are reloaded together by the Emperor, which follows symlinks; the module refuses
    to reload such vassals one by one.
  - Set up vassals with C(unsubscribe-on-graceful-reload), C(need-app) and without C(lazy-apps). The vassal
    then leaves the FastRouter before its reload, and subscribes again only after it loaded the new code. A
    release that fails to load keeps the vassal out of the FastRouter instead of serving errors.
  - Keep C(subscribe-freq) (the vassal's periodic announce) longer than most requests; each announce during a
    drain lets the FastRouter route to the vassal again until the next poll.
seealso:
  - module: graceful.wsgi.uwsgi_reload
  - name: The Art of Graceful Reloading, subscription system
    description: The setup this module drives.
    link: https://uwsgi-docs.readthedocs.io/en/latest/articles/TheArtOfGracefulReloading.html#subscription-system
'''

EXAMPLES = r'''
- name: Reload every vassal, at least one serving at any moment
  graceful.wsgi.uwsgi_vassals_reload:
    emperor_dir: /etc/uwsgi-emperor/shop/vassals
    emperor_stats: /run/shop-emperor/stats.sock
    fastrouter_stats: /run/shop-fastrouter/stats.sock

- name: Reload one by one, never fewer than three of four serving
  graceful.wsgi.uwsgi_vassals_reload:
    emperor_dir: /etc/uwsgi-emperor/shop/vassals
    emperor_stats: /run/shop-emperor/stats.sock
    fastrouter_stats: /run/shop-fastrouter/stats.sock
    min_active: 3
    timeout: 30

- name: Bring back the vassals that a broken release took down, once the release is fixed
  graceful.wsgi.uwsgi_vassals_reload:
    emperor_dir: /etc/uwsgi-emperor/shop/vassals
    emperor_stats: /run/shop-emperor/stats.sock
    fastrouter_stats: /run/shop-fastrouter/stats.sock
    vassals: [shop-1, shop-2, shop-3]
'''

RETURN = r'''
vassals:
  description: Each vassal of the run, in the order they were touched.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The vassal's name (its config name without O(vassal_suffix)).
      type: str
    config:
      description: Path of its config.
      type: str
    state:
      description: C(reloaded), C(timeout), C(not_started) (not touched because another vassal timed out), or in
        check mode C(would_reload).
      type: str
    was_active:
      description: Whether it served when the run started.
      type: bool
    pid_before:
      description: Its master PID when the run started (a graceful reload keeps it), null when it did not run.
      type: int
    pid_after:
      description: Its master PID at the end, null when it does not run.
      type: int
    workers_before:
      description: PIDs of its workers (children of its master) when the run started.
      type: list
      elements: int
    workers_after:
      description: PIDs of its workers at the end.
      type: list
      elements: int
    seconds:
      description: From the start of its reload (its drain) until it served again, or until its timeout.
      type: float
    drain_seconds:
      description: From its unsubscribe until the FastRouter had dropped its node; null when it was not drained
        (it did not serve, or names no subscription server).
      type: float
    drain_errors:
      description: The subscription servers the unsubscribe could not be sent to; the vassal was then touched
        without waiting for a drain.
      type: list
      elements: str
      returned: when sending failed
    why:
      description: Why it does not serve, for a vassal that did not come back.
      type: str
  sample:
    - {name: shop-1, config: /etc/uwsgi-emperor/shop/vassals/shop-1.ini, state: reloaded, was_active: true,
       pid_before: 4120, pid_after: 4120, workers_before: [4131], workers_after: [4877], seconds: 1.41}
reloaded:
  description: Names of the vassals that were reloaded and serve again.
  returned: always
  type: list
  elements: str
timed_out:
  description: Names of the vassals that did not come back within O(timeout).
  returned: always
  type: list
  elements: str
active_before:
  description: Vassals serving when the run started.
  returned: always
  type: int
active_after:
  description: Vassals serving when the run ended.
  returned: always
  type: int
min_active_observed:
  description: The lowest number of serving vassals seen during the run.
  returned: always
  type: int
parallel_max:
  description: The most vassals in flight at once.
  returned: always
  type: int
elapsed:
  description: Seconds from the first touch to the end of the run.
  returned: always
  type: float
started_at:
  description: When the first vassal was touched, epoch seconds.
  returned: always
  type: float
completed_at:
  description: When the run ended, epoch seconds.
  returned: always
  type: float
lock_path:
  description: The lock file of this Emperor's runs.
  returned: always
  type: str
stats:
  description: For each vassal that did not come back, its Emperor entry (or blacklist entry) and FastRouter node.
  returned: failure
  type: dict
'''

import datetime
import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor
from ansible_collections.graceful.wsgi.plugins.module_utils import _lock
from ansible_collections.graceful.wsgi.plugins.module_utils import _proc
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi

LOCK_DIRS = ('/run/lock', '/var/lock', '/tmp')
STATS_TIMEOUT = 2.0
SEND_TIMEOUT = 2.0


class Fleet(object):
    """The Emperor, its FastRouter and the vassal configs, as read from the host."""

    def __init__(self, module):
        params = module.params
        self.module = module
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
        # While the stats cannot be read: since when (epoch seconds, monotonic seconds).
        self.unreadable_since = None

    def load_configs(self):
        if not os.path.isdir(self.emperor_dir):
            self.module.fail_json(msg='emperor_dir=%s is not a directory' % self.emperor_dir)
        try:
            self.configs = _emperor.vassal_configs(os.listdir(self.emperor_dir), self.suffix)
        except OSError as exc:
            self.module.fail_json(msg='emperor_dir=%s cannot be listed: %s' % (self.emperor_dir, exc.strerror))
        if not self.configs:
            self.module.fail_json(msg='emperor_dir=%s holds no vassal config ending with vassal_suffix=%s'
                                  % (self.emperor_dir, self.suffix))
        for config in self.configs:
            text = _proc.read_text(self.path(config))
            self.addresses[config] = _emperor.subscription_addresses(text)
            self.servers[config] = _emperor.subscription_servers(text)

    def path(self, config):
        return os.path.join(self.emperor_dir, config)

    def read(self):
        """Both stats documents checked, or UwsgiError / EmperorError."""
        emperor = _uwsgi.read_json_document(self.emperor_address, STATS_TIMEOUT, self.emperor_label)
        _emperor.check_emperor_document(emperor, self.emperor_label, self.emperor_dir)
        router = _uwsgi.read_json_document(self.router_address, STATS_TIMEOUT, self.router_label)
        _emperor.check_fastrouter_document(router, self.router_label)
        return emperor, router

    def observe(self):
        """The state of every vassal, or None (with last_error kept) when the stats cannot be read."""
        attempted = (time.time(), time.monotonic())
        try:
            emperor, router = self.read()
        except (_uwsgi.UwsgiError, _emperor.EmperorError) as exc:
            self.last_error = str(exc)
            if self.unreadable_since is None:
                self.unreadable_since = attempted
            return None
        self.unreadable_since = None
        return _emperor.observe(emperor, router, self.addresses, self.suffix)

    def unreadable(self):
        """Since when and why the stats cannot be read, or None while they can."""
        if self.unreadable_since is None:
            return None
        epoch, clock = self.unreadable_since
        since = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
        return 'the stats could not be read since %s (%.1fs): %s' % (since, time.monotonic() - clock, self.last_error)

    def unsubscribe(self, config, node):
        """Ask each subscription server the vassal announces to to drop its node (as the vassal itself does on a
        graceful reload); returns the errors, one per server that could not be sent to."""
        packet = _emperor.subscription_packet(node.get('key') or '', node['name'], _emperor.UNSUBSCRIBE)
        errors = []
        for server in self.servers[config]:
            family, target = _uwsgi.socket_target(_uwsgi.parse_stats_address(server))
            sock = socket.socket(family, socket.SOCK_DGRAM)
            # A unix datagram blocks its sender while the receiver's queue is full (a router that reads nothing).
            sock.settimeout(SEND_TIMEOUT)
            try:
                sock.sendto(packet, target)
            except socket.timeout:
                errors.append('%s: no room to send within %.1fs (the subscription server reads nothing)'
                              % (server, SEND_TIMEOUT))
            except (IOError, OSError) as exc:
                errors.append('%s: %s' % (server, exc.strerror or exc))
            finally:
                sock.close()
        return errors

    def touch(self, config, entry):
        """Move the config's mtime past what the Emperor saw; returns the mtime set. A config that leads to no
        regular file (a FIFO), or through a symlink of another user, stops the run, naming it, with nothing touched."""
        try:
            mtime = _emperor.touch_config(self.path(config), (entry or {}).get('last_mod'), time.time())
        except _emperor.EmperorError as exc:
            self.module.fail_json(msg='%s; the run stopped before reloading it' % exc)
        return mtime


def workers_of(entry):
    if not entry or not entry.get('pid'):
        return []
    return _proc.child_pids(int(entry['pid']))


def lock_path(emperor_dir):
    directory = next((d for d in LOCK_DIRS if os.path.isdir(d) and os.access(d, os.W_OK)), LOCK_DIRS[-1])
    return os.path.join(directory, _emperor.lock_name(os.path.realpath(emperor_dir)))


def vassal_result(fleet, vassal, before, after):
    entry_before, entry_after = before['entry'], (after or {}).get('entry')
    result = {
        'name': _emperor.config_stem(vassal.config, fleet.suffix),
        'config': fleet.path(vassal.config),
        'state': vassal.state,
        'was_active': vassal.was_active,
        'pid_before': (entry_before or {}).get('pid') or None,
        'pid_after': (entry_after or {}).get('pid') or None,
        'workers_before': before['workers'],
        'workers_after': workers_of(entry_after),
        'seconds': vassal.seconds(),
        'drain_seconds': vassal.drain_seconds(),
    }
    if vassal.state == _emperor.TIMEOUT and vassal.awaiting_spawn:
        result['why'] = _emperor.why_not_active(vassal.config, after or before, fleet.addresses[vassal.config]) + \
            ' (not touched: the Emperor spawns a vassal it does not run on its own schedule; the run waited for it)'
    elif vassal.state == _emperor.TIMEOUT and vassal.touched_mtime is None and after is None:
        result['why'] = ('%s: never seen drained, so never touched; the stats could not be read to tell why (its old '
                         'code still serves once it announces itself again)' % vassal.config)
    elif vassal.state == _emperor.TIMEOUT and vassal.touched_mtime is None:
        node = (after or {}).get('node') or {}
        result['why'] = ('%s: never drained, so never touched: the FastRouter still had %s request(s) in flight to it '
                         '(its old code still serves once it announces itself again)'
                         % (vassal.config, node.get('ref', 'unknown')))
    elif vassal.state != _emperor.RELOADED and after is not None and not after['active']:
        result['why'] = _emperor.why_not_active(vassal.config, after, fleet.addresses[vassal.config])
    return result


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            emperor_dir=dict(type='path', required=True),
            emperor_stats=dict(type='str', required=True),
            fastrouter_stats=dict(type='str', required=True),
            vassal_suffix=dict(type='str', default='.ini'),
            min_active=dict(type='int', default=1),
            timeout=dict(type='float', default=60),
            poll_interval=dict(type='float', default=0.1),
            vassals=dict(type='list', elements='str'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for option, least in (('min_active', 1), ('timeout', 0.1), ('poll_interval', 0.01)):
        if params[option] < least:
            module.fail_json(msg='%s=%s: must be at least %s' % (option, params[option], least))
    if params['poll_interval'] > params['timeout']:
        module.fail_json(msg='poll_interval=%s is longer than timeout=%s' % (params['poll_interval'], params['timeout']))
    if not params['vassal_suffix']:
        module.fail_json(msg='vassal_suffix must not be empty')

    fleet = Fleet(module)
    fleet.load_configs()
    try:
        targets = _emperor.select_vassals(fleet.configs, params['vassals'], fleet.suffix, fleet.emperor_dir)
    except _emperor.EmperorError as exc:
        module.fail_json(msg=str(exc))
    shared = _emperor.shared_files(dict((c, os.path.realpath(fleet.path(c))) for c in fleet.configs))
    clash = [group for group in shared if set(group) & set(targets)]
    if clash:
        module.fail_json(msg='emperor_dir=%s: %s are one file (symlinks to it); the Emperor would reload them together. '
                         'Give each vassal its own config file.'
                         % (fleet.emperor_dir, '; '.join(' and '.join(group) for group in clash)))

    path = lock_path(fleet.emperor_dir)
    holder = {'pid': os.getpid(), 'started_at': round(time.time(), 3), 'emperor_dir': fleet.emperor_dir}

    def refuse_held(held):
        module.fail_json(msg='another uwsgi_vassals_reload run holds the lock of emperor_dir=%s (%s): %s'
                         % (fleet.emperor_dir, path, _lock.describe_holder(held)), lock_path=path)

    lock_fd = None
    if module.check_mode:
        try:
            held = _lock.flock_is_held(path)
        except _lock.LockError as exc:
            module.fail_json(msg=str(exc), lock_path=path)
        if held is not None:
            refuse_held(held)
    else:
        try:
            lock_fd = _lock.flock_acquire(path, holder)
        except _lock.LockHeld as exc:
            refuse_held(exc.holder)
        except _lock.LockError as exc:
            module.fail_json(msg=str(exc), lock_path=path)
    try:
        reload_vassals(module, fleet, targets, path)
    finally:
        if lock_fd is not None:
            _lock.flock_release(lock_fd)


def reload_vassals(module, fleet, targets, path):
    params = module.params
    first = fleet.observe()
    if first is None:
        module.fail_json(msg=fleet.last_error, lock_path=path)
    reason = _emperor.refusal(first, targets, params['min_active'], fleet.emperor_dir)
    if reason:
        module.fail_json(msg=reason, lock_path=path,
                         stats=dict((c, first[c]) for c in fleet.configs if not first[c]['active']))
    before = dict((config, dict(first[config], workers=workers_of(first[config]['entry']))) for config in targets)
    plan = _emperor.Plan(targets, first, params['min_active'], params['timeout'])
    active_before = _emperor.serving_count(first)

    if module.check_mode:
        wave = set(plan.to_start(first))
        results = []
        for config in plan.order:
            vassal = plan.vassals[config]
            vassal.state = 'would_reload' if config in wave else 'pending'
            results.append(vassal_result(fleet, vassal, before[config], first[config]))
        now = time.time()
        module.exit_json(changed=bool(targets), vassals=results, reloaded=[], timed_out=[], active_before=active_before,
                         active_after=active_before, min_active_observed=active_before, parallel_max=len(wave),
                         elapsed=0.0, started_at=now, completed_at=now, lock_path=path)

    started_at = time.time()
    started_order = []
    draining = {}
    drain_errors = {}
    observation = first
    while True:
        now = time.monotonic()
        plan.update(observation, now)
        if plan.done():
            break
        if observation is not None:
            for config in plan.to_start(observation):
                plan.started(config, time.time(), time.monotonic(), observation)
                started_order.append(config)
                state = observation[config]
                if state['active'] and fleet.servers[config]:
                    draining[config] = state['node']
            for vassal in plan.in_flight():
                config = vassal.config
                # Until the Emperor asked the vassal to reload, its periodic announce may subscribe it again.
                if config in draining and _emperor.node_live(observation[config]['node']) and (
                        vassal.draining or not _emperor.noticed(vassal, observation[config])):
                    errors = fleet.unsubscribe(config, draining[config])
                    if errors:
                        drain_errors[config] = errors
                        del draining[config]
            for config in plan.to_touch(observation, lambda config: config in draining):
                mtime = fleet.touch(config, observation[config]['entry'])
                plan.touched(config, time.time(), time.monotonic(), mtime, config in draining)
        time.sleep(params['poll_interval'])
        observation = fleet.observe()

    # Read before the last look below, which may succeed again.
    unreadable = fleet.unreadable()
    last = fleet.observe()
    completed_at = time.time()
    order = started_order + [config for config in plan.order if config not in started_order]
    results = [vassal_result(fleet, plan.vassals[config], before[config], (last or {}).get(config)) for config in order]
    for result, config in zip(results, order):
        if config in drain_errors:
            result['drain_errors'] = drain_errors[config]
    outcome = dict(
        changed=bool(started_order),
        vassals=results,
        reloaded=[r['name'] for r in results if r['state'] == _emperor.RELOADED],
        timed_out=[r['name'] for r in results if r['state'] == _emperor.TIMEOUT],
        active_before=active_before,
        active_after=_emperor.serving_count(last) if last is not None else None,
        min_active_observed=plan.lowest_active,
        parallel_max=plan.parallel_max,
        elapsed=round(completed_at - started_at, 3),
        started_at=round(started_at, 3),
        completed_at=round(completed_at, 3),
        lock_path=path,
    )
    if outcome['timed_out'] or any(r['state'] == _emperor.NOT_STARTED for r in results):
        module.fail_json(msg=failure_message(fleet, params, results, last, plan, unreadable),
                         stats=failure_stats(results, last), **outcome)
    module.exit_json(**outcome)


def failure_message(fleet, params, results, last, plan, unreadable):
    """``unreadable`` says since when and why the stats could not be read, when they could not as the run ended."""
    timed_out = [r for r in results if r['state'] == _emperor.TIMEOUT]
    skipped = [r['name'] for r in results if r['state'] == _emperor.NOT_STARTED]
    reloaded = [r['name'] for r in results if r['state'] == _emperor.RELOADED]
    unseen = '%s: unknown, the stats could not be read' if last is None else '%s: serving again, but only after its timeout'
    parts = []
    if timed_out:
        parts.append('%d vassal(s) of emperor_dir=%s did not come back within timeout=%ss: %s.'
                     % (len(timed_out), fleet.emperor_dir, params['timeout'], ', '.join(r['name'] for r in timed_out)))
        parts.extend((r.get('why') or unseen % r['name']) + '.' for r in timed_out)
    elif plan.gave_up and unreadable:
        parts.append('waited %ss, with no vassal of emperor_dir=%s in flight, for the stats to be read again to go on '
                     'with the reload.' % (params['timeout'], fleet.emperor_dir))
    elif plan.gave_up:
        parts.append('waited %ss for min_active=%d vassals of emperor_dir=%s to serve besides the one to reload: '
                     'a vassal that served went down during the run.'
                     % (params['timeout'], params['min_active'], fleet.emperor_dir))
    if unreadable:
        parts.append('%s%s.' % (unreadable[0].upper(), unreadable[1:]))
    elif last is None and fleet.last_error:
        parts.append('last stats reading failed: %s' % fleet.last_error)
    if skipped:
        parts.append('Not touched%s: %s.' % ('' if unreadable else ', to keep the floor', ', '.join(skipped)))
    if reloaded:
        parts.append('Reloaded: %s.' % ', '.join(reloaded))
    return ' '.join(parts)


def failure_stats(results, last):
    stats = {}
    for result in results:
        if result['state'] == _emperor.RELOADED:
            continue
        config = os.path.basename(result['config'])
        state = (last or {}).get(config) or {}
        stats[result['name']] = {'emperor': state.get('entry') or state.get('blacklisted'),
                                 'fastrouter': state.get('node')}
    return stats


def main():
    run_module()


if __name__ == '__main__':
    main()

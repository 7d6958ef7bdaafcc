# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The uwsgi_vassals_reload driver: reload an Emperor's vassals while at least ``min_active`` of them serve.

Private to the collection: the interface may change without notice.
The Plan decides, from one observation of the vassals (_emperor.observe) after another, which vassal to take
down next, when a draining one may be touched, and when one came back or timed out; ``run`` holds the lock and
drives it: it unsubscribes a serving vassal from its FastRouter, touches its config once drained, and polls.
Facts relied on (uWSGI 2.0, core/emperor.c, core/master.c): see _emperor and _fastrouter, and

* a vassal with ``unsubscribe-on-graceful-reload`` unsubscribes before its graceful reload, but its periodic
  announce (``subscribe-freq``) subscribes it again until the Emperor asked it to reload;
* a touch that reaches a vassal still starting can leave it running but never subscribing again.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import re
import time

from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor
from ansible_collections.graceful.wsgi.plugins.module_utils import _fastrouter
from ansible_collections.graceful.wsgi.plugins.module_utils import _lock
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import ReloadFailed

# Where the lock of a run lives: a directory only the module's user may enter (see lock_directory).
ROOT_LOCK_DIR = '/run/graceful-wsgi'
USER_LOCK_DIRS = ('/run/user/{uid}/graceful-wsgi', '{home}/.graceful-wsgi')

RELOADED = 'reloaded'
TIMEOUT = 'timeout'
NOT_STARTED = 'not_started'
PENDING = 'pending'
IN_FLIGHT = 'in_flight'


# ---------------------------------------------------------------- the plan

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
    if not noticed(vassal, state) or not _fastrouter.node_live(state['node']):
        return False
    return vassal.seen_down or int(entry.get('last_accepting') or 0) > int(vassal.touched_at)


def spawned_since_start(vassal, state):
    """A vassal the Emperor did not run at its start now serves, spawned after the start (so with the code current
    then)."""
    entry = state['entry']
    if entry is None or not entry.get('pid') or not entry.get('accepting') or not _fastrouter.node_live(state['node']):
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
        self.lowest_active = _emperor.serving_count(observation)
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
            self.lowest_active = min(self.lowest_active, _emperor.serving_count(observation))
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


# ---------------------------------------------------------------- the run

def lock_directories(uid=None):
    """Where the lock may live for the user ``uid`` (the module's), most preferred first.

    Root: /run/graceful-wsgi, which only root can create (/run is root's, 0755), unlike a name in /run/lock or /tmp
    that any user could take first to deny every run. Another user: its runtime directory /run/user/UID (systemd's,
    the user's own, 0700), else its home; its lock then keeps out only runs of the same user.
    """
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return (ROOT_LOCK_DIR,)
    try:
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        home = None
    return tuple(template.format(uid=uid, home=home) for template in USER_LOCK_DIRS
                 if home or '{home}' not in template)


def lock_directory(create=True):
    """The private directory of the lock (see _lock.private_directory), created when missing and ``create``.

    The first candidate whose parent exists is the one: a candidate found wrong (another owner, a wider mode, a
    symlink) fails the run rather than sending it to another directory, where it would not keep out the runs
    that use the right one.
    """
    candidates = lock_directories()
    for directory in candidates:
        if os.path.isdir(os.path.dirname(directory)):
            return _lock.private_directory(directory, create) or directory
    raise _lock.LockError('no directory for the lock: none of %s has a parent directory (run the module as root)'
                          % ', '.join(candidates))


def lock_path(emperor_dir, create=True):
    return os.path.join(lock_directory(create), lock_name(os.path.realpath(emperor_dir)))


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
        'workers_after': _emperor.workers_of(entry_after),
        'seconds': vassal.seconds(),
        'drain_seconds': vassal.drain_seconds(),
    }
    if vassal.state == TIMEOUT and vassal.awaiting_spawn:
        result['why'] = _emperor.why_not_active(vassal.config, after or before, fleet.addresses[vassal.config]) + \
            ' (not touched: the Emperor spawns a vassal it does not run on its own schedule; the run waited for it)'
    elif vassal.state == TIMEOUT and vassal.touched_mtime is None and after is None:
        result['why'] = ('%s: never seen drained, so never touched; the stats could not be read to tell why (its old '
                         'code still serves once it announces itself again)' % vassal.config)
    elif vassal.state == TIMEOUT and vassal.touched_mtime is None:
        node = (after or {}).get('node') or {}
        result['why'] = ('%s: never drained, so never touched: the FastRouter still had %s request(s) in flight to it '
                         '(its old code still serves once it announces itself again)'
                         % (vassal.config, node.get('ref', 'unknown')))
    elif vassal.state != RELOADED and after is not None and not after['active']:
        result['why'] = _emperor.why_not_active(vassal.config, after, fleet.addresses[vassal.config])
    return result


def run(params, check_mode):
    """One uwsgi_vassals_reload run as ``params`` ask; returns the module's result. Raises ReloadFailed whose message
    is the task's and whose details are the other fields of its failed result (none, or lock_path, stats and the
    run's outcome)."""
    fleet = _emperor.Fleet(params)
    try:
        fleet.load_configs()
        targets = _emperor.select_vassals(fleet.configs, params['vassals'], fleet.suffix, fleet.emperor_dir)
    except _emperor.EmperorError as exc:
        raise ReloadFailed(str(exc))
    if any(os.path.islink(fleet.path(config)) for config in targets):
        symlinks_refusal(fleet, targets)

    try:
        path = lock_path(fleet.emperor_dir, create=not check_mode)
    except _lock.LockError as exc:
        raise ReloadFailed(str(exc))
    holder = {'pid': os.getpid(), 'started_at': round(time.time(), 3), 'emperor_dir': fleet.emperor_dir}

    def refuse_held(held):
        return ReloadFailed('another uwsgi_vassals_reload run holds the lock of emperor_dir=%s (%s): %s'
                            % (fleet.emperor_dir, path, _lock.describe_holder(held)), details=dict(lock_path=path))

    lock_fd = None
    if check_mode:
        try:
            held = _lock.flock_is_held(path)
        except _lock.LockError as exc:
            raise ReloadFailed(str(exc), details=dict(lock_path=path))
        if held is not None:
            raise refuse_held(held)
    else:
        try:
            lock_fd = _lock.flock_acquire(path, holder)
        except _lock.LockHeld as exc:
            raise refuse_held(exc.holder)
        except _lock.LockError as exc:
            raise ReloadFailed(str(exc), details=dict(lock_path=path))
    try:
        return reload_vassals(fleet, targets, params, check_mode, path)
    finally:
        if lock_fd is not None:
            _lock.flock_release(lock_fd)


def symlinks_refusal(fleet, targets):
    """Learn whether the Emperor follows the symlinks among the ``targets`` (fleet.nofollow); ReloadFailed when it
    does and some of them are one file, which it would reload together, or when that cannot be told."""
    try:
        emperor, _router = fleet.read()
    except (_uwsgi.UwsgiError, _emperor.EmperorError) as exc:
        raise ReloadFailed(str(exc))
    nofollow, why = _emperor.emperor_nofollow(emperor)
    fleet.nofollow = bool(nofollow)
    if nofollow:
        return
    shared = _emperor.shared_files(dict((c, os.path.realpath(fleet.path(c))) for c in fleet.configs))
    clash = '; '.join(' and '.join(group) for group in shared if set(group) & set(targets))
    if clash and nofollow is None:
        raise ReloadFailed('emperor_dir=%s: %s are one file (symlinks to it), and whether the Emperor follows them '
                           '(emperor-nofollow) cannot be told: %s. Following them, it would reload them together.'
                           % (fleet.emperor_dir, clash, why))
    if clash:
        raise ReloadFailed('emperor_dir=%s: %s are one file (symlinks to it), and the Emperor follows symlinks (%s): it '
                           'would reload them together. Run it with emperor-nofollow, which makes each link a vassal of '
                           'its own, or give each vassal its own config file.' % (fleet.emperor_dir, clash, why))


def reload_vassals(fleet, targets, params, check_mode, path):
    """The run, under its lock: the first observation, the refusal, then the loop until every target is done."""
    first = fleet.observe()
    if first is None:
        raise ReloadFailed(fleet.last_error, details=dict(lock_path=path))
    reason = refusal(first, targets, params['min_active'], fleet.emperor_dir)
    if reason:
        raise ReloadFailed(reason, details=dict(lock_path=path, stats=dict(
            (c, first[c]) for c in fleet.configs if not first[c]['active'])))
    before = dict((config, dict(first[config], workers=_emperor.workers_of(first[config]['entry']))) for config in targets)
    plan = Plan(targets, first, params['min_active'], params['timeout'])
    active_before = _emperor.serving_count(first)

    if check_mode:
        wave = set(plan.to_start(first))
        results = []
        for config in plan.order:
            vassal = plan.vassals[config]
            vassal.state = 'would_reload' if config in wave else 'pending'
            results.append(vassal_result(fleet, vassal, before[config], first[config]))
        now = time.time()
        return dict(changed=bool(targets), vassals=results, reloaded=[], timed_out=[], active_before=active_before,
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
                if config in draining and _fastrouter.node_live(observation[config]['node']) and (
                        vassal.draining or not noticed(vassal, observation[config])):
                    errors = fleet.unsubscribe(config, draining[config])
                    if errors:
                        drain_errors[config] = errors
                        del draining[config]
            for config in plan.to_touch(observation, lambda config: config in draining):
                try:
                    mtime = fleet.touch(config, observation[config]['entry'])
                except _emperor.EmperorError as exc:
                    raise ReloadFailed('%s; the run stopped before reloading it' % exc)
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
        reloaded=[r['name'] for r in results if r['state'] == RELOADED],
        timed_out=[r['name'] for r in results if r['state'] == TIMEOUT],
        active_before=active_before,
        active_after=_emperor.serving_count(last) if last is not None else None,
        min_active_observed=plan.lowest_active,
        parallel_max=plan.parallel_max,
        elapsed=round(completed_at - started_at, 3),
        started_at=round(started_at, 3),
        completed_at=round(completed_at, 3),
        lock_path=path,
    )
    if outcome['timed_out'] or any(r['state'] == NOT_STARTED for r in results):
        raise ReloadFailed(failure_message(fleet, params, results, last, plan, unreadable),
                           details=dict(stats=failure_stats(results, last), **outcome))
    return outcome


def failure_message(fleet, params, results, last, plan, unreadable):
    """``unreadable`` says since when and why the stats could not be read, when they could not as the run ended."""
    timed_out = [r for r in results if r['state'] == TIMEOUT]
    skipped = [r['name'] for r in results if r['state'] == NOT_STARTED]
    reloaded = [r['name'] for r in results if r['state'] == RELOADED]
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
        if result['state'] == RELOADED:
            continue
        config = os.path.basename(result['config'])
        state = (last or {}).get(config) or {}
        stats[result['name']] = {'emperor': state.get('entry') or state.get('blacklisted'),
                                 'fastrouter': state.get('node')}
    return stats

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: uwsgi_reload
short_description: Reload one uWSGI instance and wait for proof that every worker runs the new code
version_added: 0.1.0
description:
  - Triggers a reload of one uWSGI instance through its master FIFO, a touch file, its pidfile,
    or (mode C(rolling)) by replacing workers itself, then watches the stats server until every
    worker present before the reload runs under a new PID, has its application loaded and accepts
    requests.
  - A new worker that comes up without its application (the release fails to import) or keeps
    respawning fails the task at once, naming the worker, its respawn count and carrying the last
    stats snapshot. uWSGI's own chain reload carries on through such a release; use O(mode=rolling)
    so that at most O(max_unavailable) workers are exposed to it.
  - Never signals a process that C(/proc) does not show to be the instance's uWSGI master or one of
    its workers.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.linux
  - graceful.wsgi.uwsgi
attributes:
  check_mode:
    support: full
    details:
      - Validates the paths and reads the stats server, then reports what it would send; sends nothing.
  diff_mode:
    support: none
options:
  master_fifo:
    description:
      - Path of the instance's master FIFO (its C(master-fifo) option). Supports every O(mode).
      - Preferred over O(touch_file) and O(pidfile) when several are given.
      - Opened without blocking, so an instance that is down fails at once.
    type: path
  touch_file:
    description:
      - A file the instance watches; the module updates its mtime.
      - It must be the file of the instance's C(touch-chain-reload) for O(mode=chain), C(touch-reload)
        for O(mode=graceful), C(touch-workers-reload) for O(mode=workers). uWSGI gives no sign that a
        touch was noticed, so a file it does not watch shows up as a timeout with every worker on its old PID.
    type: path
  pidfile:
    description:
      - The instance's pidfile. Sends SIGHUP to the master for O(mode=graceful) after proving the PID is
        a live uWSGI master (and, with O(stats), the one serving the stats).
      - With another transport it is used only to cross-check the master's identity.
    type: path
  stats:
    description:
      - Needed when O(wait=true) and for O(mode=rolling).
  mode:
    description:
      - V(chain) replaces workers one at a time by uWSGI's chain reload (FIFO C(c) or C(touch-chain-reload)).
        Needs C(lazy-apps).
      - V(rolling) replaces at most O(max_unavailable) workers at a time by sending SIGHUP to each
        (a worker finishes its requests, then exits; the master respawns it), and signals the next only
        when the replacements accept; idle workers go before busy ones. Stops at the first broken replacement.
        Needs C(lazy-apps) and O(stats).
      - V(graceful) reloads the whole instance, master included (FIFO C(r), C(touch-reload) or SIGHUP to the
        master); requests wait in the listen queue while no worker runs.
      - V(workers) gracefully reloads all workers at once (FIFO C(w) or C(touch-workers-reload)).
      - V(brutal) reloads the instance killing workers at once (FIFO C(R)); requests being served are lost.
    type: str
    choices: [chain, rolling, graceful, workers, brutal]
    default: chain
  max_unavailable:
    description:
      - For O(mode=rolling), how many workers may be out of service at once.
      - An integer, or a percentage of the workers such as V(50%) (rounded down, at least 1).
    type: raw
    default: 1
  wait:
    description:
      - Wait until the reload is proven complete. With V(false) the module triggers the reload and returns.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the proof. Should exceed the time the longest request takes (workers finish
        their requests before they are replaced) plus the application's start-up time per step.
    type: float
    default: 300
  poll_interval:
    description:
      - Seconds between two reads of the stats server while waiting.
    type: float
    default: 0.1
notes:
  - C(lazy-apps) is what makes workers import the code again; it is read from the master's command line,
    environment and ini files. Without it O(mode=chain) and O(mode=rolling) fail, because their new workers
    would be forked from a master that still holds the old code.
  - Root needs no C(CAP_SYS_PTRACE) to read the master's environment and working directory. What C(/proc)
    denies root is read by a child process that takes the master's user and group (no capabilities), within
    5 seconds. When they cannot be read at all, lazy-apps counts as unconfirmed (a warning), not as absent.
  - Do not combine C(need-app) with C(lazy-apps) on an instance you reload. uWSGI destroys the whole
    instance when one new worker fails to load the app.
seealso:
  - module: graceful.wsgi.uwsgi_info
  - name: uWSGI graceful reloading
    description: The reload mechanisms this module drives.
    link: https://uwsgi-docs.readthedocs.io/en/latest/articles/TheArtOfGracefulReloading.html
'''

EXAMPLES = r'''
- name: Chain-reload the app through its master FIFO and wait for every worker
  graceful.wsgi.uwsgi_reload:
    master_fifo: /run/myapp/master.fifo
    stats: /run/myapp/stats.sock

- name: Replace two workers at a time, stopping at the first that cannot load the release
  graceful.wsgi.uwsgi_reload:
    master_fifo: /run/myapp/master.fifo
    stats: /run/myapp/stats.sock
    mode: rolling
    max_unavailable: 2
    timeout: 120

- name: Touch the chain-reload file and return at once
  graceful.wsgi.uwsgi_reload:
    touch_file: /srv/myapp/reload.touch
    wait: false

- name: Reload the whole instance through its pidfile
  graceful.wsgi.uwsgi_reload:
    pidfile: /run/myapp/uwsgi.pid
    stats: 127.0.0.1:9191
    mode: graceful
'''

RETURN = r'''
mode:
  description: The reload mode used.
  returned: always
  type: str
  sample: chain
method:
  description: How the reload was triggered.
  returned: always
  type: str
  sample: "master_fifo /run/myapp/master.fifo: 'c'"
master_pid:
  description: PID of the master before the reload (graceful and brutal reloads keep it).
  returned: when O(stats) is set
  type: int
  sample: 4120
workers_before:
  description: The workers before the reload.
  returned: when O(stats) is set
  type: list
  elements: dict
  contains:
    id:
      description: uWSGI's worker id (1-based slot).
      type: int
    pid:
      description: The worker's process id.
      type: int
    accepting:
      description: Whether the worker accepts requests.
      type: bool
    requests:
      description: Requests served by the worker.
      type: int
  sample: [{"id": 1, "pid": 4121, "accepting": true, "requests": 5120}]
workers_after:
  description: The workers when the module returned; same fields as RV(workers_before).
  returned: when O(stats) is set
  type: list
  elements: dict
  sample: [{"id": 1, "pid": 4398, "accepting": true, "requests": 12}]
elapsed:
  description: Seconds from the trigger to the proof of completion.
  returned: always
  type: float
  sample: 2.41
min_accepting:
  description: Lowest number of workers serving at any poll during the wait (workers told to stop are not counted).
  returned: when O(wait=true)
  type: int
  sample: 3
completed_at:
  description: Epoch time at which the proof was observed.
  returned: when O(wait=true)
  type: float
  sample: 1795343405.18
snapshot:
  description: The last stats document read, returned when the reload failed.
  returned: on failure after the reload began
  type: dict
msg:
  description: What happened.
  returned: always
  type: str
  sample: chain reload complete, 4 workers replaced in 2.41s
'''

import errno
import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _proc
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline, WaitTimeout, poll

# The master recreates its FIFO after every writer closes it; a reader may be missing for a moment.
FIFO_RETRY_SECONDS = 0.5


class ReloadFailed(Exception):
    def __init__(self, message, snapshot=None):
        super(ReloadFailed, self).__init__(message)
        self.snapshot = snapshot


def transport_for(params):
    """('master_fifo'|'touch_file'|'pidfile'|'worker_signals', path) that triggers this mode, or None."""
    mode = params['mode']
    if mode == 'rolling':
        return ('worker_signals', None)
    if params['master_fifo']:
        return ('master_fifo', params['master_fifo'])
    if params['touch_file'] and mode in _uwsgi.TOUCH_OPTIONS:
        return ('touch_file', params['touch_file'])
    if params['pidfile'] and mode == 'graceful':
        return ('pidfile', params['pidfile'])
    return None


def describe_method(transport, mode, batch):
    kind, path = transport
    if kind == 'master_fifo':
        return "master_fifo %s: '%s'" % (path, _uwsgi.FIFO_COMMANDS[mode])
    if kind == 'touch_file':
        return 'touch_file %s (%s)' % (path, _uwsgi.TOUCH_OPTIONS[mode])
    if kind == 'pidfile':
        return 'SIGHUP to the master named by pidfile %s' % path
    return 'SIGHUP to each worker, at most %d at a time' % batch


def identify_master(params, before):
    """The master's ProcessInfo, proven from /proc (and the pidfile, when given), or None if not visible."""
    stats_pid = before.get('pid') if before else None
    pidfile_pid = None
    if params['pidfile']:
        try:
            pidfile_pid = _proc.read_pidfile(params['pidfile'])
        except (IOError, OSError) as exc:
            reason = 'permission denied' if exc.errno in (errno.EACCES, errno.EPERM) else (exc.strerror or str(exc))
            raise ReloadFailed('pidfile=%s: cannot be read: %s' % (params['pidfile'], reason))
        except ValueError as exc:
            raise ReloadFailed('pidfile=%s: %s' % (params['pidfile'], exc))
        if stats_pid and pidfile_pid != stats_pid:
            raise ReloadFailed('pidfile=%s names pid %d, but the master answering stats=%s is pid %d: '
                               'stale pidfile or another instance' % (params['pidfile'], pidfile_pid, params['stats'], stats_pid))
    pid = pidfile_pid or stats_pid
    if not pid:
        return None
    info = _proc.read_process(pid)
    if info is None:
        if pidfile_pid:
            raise ReloadFailed('pidfile=%s names pid %d, which is not running (stale pidfile)' % (params['pidfile'], pid))
        return None
    if not _uwsgi.looks_like_uwsgi(info) and not _uwsgi.looks_like_uwsgi(info, master_exe(pid)):
        source = 'pidfile=%s' % params['pidfile'] if pidfile_pid else 'stats=%s' % params['stats']
        raise ReloadFailed('%s names %s, which is not a uWSGI process; nothing was signalled' % (source, info.describe()))
    return info


def master_exe(pid):
    """The executable of ``pid`` (read as its owner when root may not), or None: then the other evidence counts."""
    try:
        return _proc.read_guarded(pid, 'exe', lambda: _proc.read_link_or_raise(pid, 'exe'))
    except (OSError, _proc.OwnerReadError):
        return None


def check_lazy_apps(module, mode, master):
    """Refuse modes whose respawned workers would keep the old code; warn when it cannot be told."""
    if mode not in ('chain', 'rolling', 'workers'):
        return
    if master is None:
        module.warn('cannot see the uWSGI master in /proc, so lazy-apps could not be confirmed; without it '
                    'mode=%s respawns workers with the code the master loaded' % mode)
        return
    hidden = None
    try:
        cwd, environ = _proc.read_guarded(master.pid, 'cwd and environ', lambda: [
            _proc.read_link_or_raise(master.pid, 'cwd'), _proc.read_environ_or_raise(master.pid)])
    except _proc.OwnerReadError as exc:
        cwd, environ, hidden = None, None, str(exc)
    except OSError as exc:
        cwd, environ, hidden = None, None, 'cannot read /proc/%d/cwd and environ: %s' % (master.pid, exc.strerror or exc)
    declared = _uwsgi.lazy_apps_declared(master.cmdline, environ or {}, cwd, _proc.read_text)
    if hidden and not declared:
        # What the environment or a relative config path would say is unknown: no refusal on a guess.
        module.warn('could not confirm lazy-apps for %s (%s); without it mode=%s respawns workers with the code '
                    'the master loaded' % (master.describe(), hidden, mode))
    elif declared is None:
        module.warn('could not confirm lazy-apps from the configuration of %s; without it mode=%s respawns '
                    'workers with the code the master loaded' % (master.describe(), mode))
    elif not declared and mode in ('chain', 'rolling'):
        raise ReloadFailed('mode=%s needs lazy-apps, but %s does not set lazy-apps: its new workers would be '
                           'forked from a master holding the old code. Set lazy-apps = true or use mode=graceful'
                           % (mode, master.describe()))
    elif not declared:
        module.warn('%s does not set lazy-apps: mode=workers re-forks workers from the master, which keeps '
                    'the old code; use mode=graceful to load new code' % master.describe())


def validate_transport(transport):
    kind, path = transport
    try:
        if kind == 'master_fifo':
            _uwsgi.check_fifo(path)
        elif kind == 'touch_file':
            _uwsgi.check_touch_file(path)
    except _uwsgi.UwsgiError as exc:
        raise ReloadFailed(str(exc))


def send_fifo(path, command):
    deadline = Deadline(FIFO_RETRY_SECONDS)
    while True:
        try:
            return _uwsgi.fifo_command(path, command)
        except _uwsgi.UwsgiError:
            if deadline.expired():
                raise
            time.sleep(0.05)


def trigger(transport, mode, master):
    kind, path = transport
    if kind == 'master_fifo':
        send_fifo(path, _uwsgi.FIFO_COMMANDS[mode])
    elif kind == 'touch_file':
        _uwsgi.touch(path)
    elif kind == 'pidfile':
        os.kill(master.pid, signal.SIGHUP)


class Waiter:
    """Polls the stats server until the tracker proves completion; drives the rolling replacement."""

    def __init__(self, address, before, master, mode, batch):
        self.address = address
        self.mode = mode
        self.batch = batch
        self.master = master
        self.tracker = _uwsgi.ReloadTracker(before)
        self.signalled = {}
        self.queue = list(self.tracker.targets) if mode == 'rolling' else []
        self.unreachable = None

    def draining(self):
        """Workers told to stop but not yet replaced: uWSGI still lists them as accepting."""
        pending = self.tracker.pending
        if self.mode == 'rolling':
            return set(self.signalled) & set(pending)
        if self.mode == 'chain':
            return set(pending[:1])
        return set(pending)

    def probe(self):
        try:
            document = _uwsgi.read_stats(self.address)
        except _uwsgi.UwsgiError as exc:
            if self.master is not None and not _proc.is_alive(self.master.pid):
                raise ReloadFailed('the uWSGI master (pid %d) died during the reload; the instance is down '
                                   '(last error: %s)' % (self.master.pid, exc), self.tracker.last)
            # A re-executing master is briefly unreachable; the deadline bounds how long we accept it.
            self.unreachable = str(exc)
            return None
        self.unreachable = None
        verdict, message = self.tracker.observe(document, self.draining())
        if verdict == 'broken':
            if self.queue:
                message += '; stopped before replacing workers %s, which still serve the old code' % (
                    ', '.join(str(w) for w in self.queue))
            raise ReloadFailed(message, document)
        if verdict == 'done':
            return document
        if self.mode == 'rolling':
            self.replace_next(document)
        return None

    def replace_next(self, document):
        in_flight = [wid for wid in self.signalled if wid in self.tracker.pending]
        by_id = dict((w.get('id'), w) for w in document.get('workers', []))
        # Idle workers first: they exit at once, while a busy one holds its slot until its requests end.
        self.queue.sort(key=lambda wid: (by_id.get(wid, {}).get('status') == 'busy', wid))
        while self.queue and len(in_flight) < self.batch:
            wid = self.queue.pop(0)
            worker = by_id.get(wid, {})
            pid = worker.get('pid', 0)
            if pid not in self.tracker.old_pids:
                continue  # already replaced by something else; the tracker still checks it
            info = _proc.read_process(pid)
            if info is None or info.ppid != self.tracker.master_pid:
                raise ReloadFailed('worker %s: pid %d is %s, not a child of the uWSGI master %d; nothing signalled'
                                   % (wid, pid, info.describe() if info else 'gone', self.tracker.master_pid), document)
            os.kill(pid, signal.SIGHUP)
            self.signalled[wid] = pid
            in_flight.append(wid)

    def describe_timeout(self):
        if self.unreachable:
            return 'the stats server did not answer again: %s' % self.unreachable
        return self.tracker.describe_pending(self.tracker.last)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            master_fifo=dict(type='path'),
            touch_file=dict(type='path'),
            pidfile=dict(type='path'),
            stats=dict(type='str'),
            mode=dict(type='str', default='chain', choices=['chain', 'rolling', 'graceful', 'workers', 'brutal']),
            max_unavailable=dict(type='raw', default=1),
            wait=dict(type='bool', default=True),
            timeout=dict(type='float', default=300),
            poll_interval=dict(type='float', default=0.1),
        ),
        required_one_of=[('master_fifo', 'touch_file', 'pidfile')],
        required_if=[
            ('wait', True, ('stats',)),
            ('mode', 'rolling', ('stats',)),
            ('mode', 'brutal', ('master_fifo',)),
            ('mode', 'chain', ('master_fifo', 'touch_file'), True),
            ('mode', 'workers', ('master_fifo', 'touch_file'), True),
        ],
        supports_check_mode=True,
    )
    params = module.params
    mode = params['mode']
    result = dict(changed=False, mode=mode)
    if params['timeout'] <= 0:
        module.fail_json(msg='timeout=%s: must be positive' % params['timeout'], **result)
    if params['poll_interval'] <= 0:
        module.fail_json(msg='poll_interval=%s: must be positive' % params['poll_interval'], **result)

    transport = transport_for(params)
    if transport is None:
        module.fail_json(msg='mode=%s cannot be triggered through %s: use master_fifo (any mode), touch_file '
                             '(chain, graceful, workers) or pidfile (graceful)'
                             % (mode, 'touch_file=%s' % params['touch_file'] if params['touch_file'] else 'pidfile=%s' % params['pidfile']),
                         **result)
    if mode == 'rolling' and not params['wait']:
        module.fail_json(msg='mode=rolling is driven by the module itself and cannot run with wait=false', **result)

    try:
        address = _uwsgi.parse_stats_address(params['stats']) if params['stats'] else None
        before = _uwsgi.read_stats(address) if address else None
        batch = 1
        if before is not None:
            result['master_pid'] = before.get('pid')
            result['workers_before'] = _uwsgi.workers_summary(before)
            if not _uwsgi.live_workers(before):
                raise ReloadFailed('stats=%s: the instance reports no running worker; nothing to reload' % params['stats'])
        if mode == 'rolling':
            batch = _uwsgi.resolve_max_unavailable(params['max_unavailable'], len(_uwsgi.live_workers(before)))
        result['method'] = describe_method(transport, mode, batch)
        master = identify_master(params, before)
        if master is None and transport[0] in ('pidfile', 'worker_signals'):
            raise ReloadFailed('cannot find the uWSGI master (pid %s from stats=%s) in /proc: the module must run on '
                               'the instance\'s host to signal it' % (before.get('pid'), params['stats']))
        validate_transport(transport)
        check_lazy_apps(module, mode, master)
    except (_uwsgi.UwsgiError, ValueError, ReloadFailed) as exc:
        module.fail_json(msg=str(exc), **result)

    result['changed'] = True
    if module.check_mode:
        result['elapsed'] = 0.0
        result['msg'] = 'would reload (%s) via %s%s' % (mode, result['method'], ' and wait for proof' if params['wait'] else '')
        module.exit_json(**result)

    started = Deadline(params['timeout'])
    waiter = None
    try:
        if transport[0] != 'worker_signals':
            trigger(transport, mode, master)
        if not params['wait']:
            result['elapsed'] = round(started.elapsed(), 3)
            result['msg'] = '%s reload triggered via %s; not waiting for proof' % (mode, result['method'])
            module.exit_json(**result)
        waiter = Waiter(address, before, master, mode, batch)
        final = poll(waiter.probe, started, params['poll_interval'], describe=waiter.describe_timeout)
    except ReloadFailed as exc:
        result.update(elapsed=round(started.elapsed(), 3), snapshot=exc.snapshot or {})
        if exc.snapshot:
            result['workers_after'] = _uwsgi.workers_summary(exc.snapshot)
        module.fail_json(msg='%s reload failed after %.1fs: %s' % (mode, started.elapsed(), exc), **result)
    except WaitTimeout as exc:
        last = waiter.tracker.last
        result.update(elapsed=round(started.elapsed(), 3), snapshot=last, workers_after=_uwsgi.workers_summary(last))
        module.fail_json(msg='%s reload not complete after timeout=%ss: %s' % (mode, params['timeout'], exc), **result)
    except (_uwsgi.UwsgiError, OSError) as exc:
        result['elapsed'] = round(started.elapsed(), 3)
        module.fail_json(msg='%s reload could not be triggered: %s' % (mode, exc), **result)

    elapsed = started.elapsed()
    result.update(
        elapsed=round(elapsed, 3),
        completed_at=time.time(),
        min_accepting=waiter.tracker.min_accepting,
        workers_after=_uwsgi.workers_summary(final),
        msg='%s reload complete: %d workers replaced in %.2fs' % (mode, len(waiter.tracker.targets), elapsed),
    )
    module.exit_json(**result)


if __name__ == '__main__':
    main()

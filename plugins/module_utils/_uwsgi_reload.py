# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The uwsgi_reload driver: trigger one instance's reload, drive a rolling one, and prove it finished.

Private to the collection: the interface may change without notice.
The uWSGI protocol (stats server, master FIFO, touch files, the proof over stats snapshots) is in _uwsgi, what
the instance's configuration declares in _uwsgi_config; this module decides which process it may signal, from
/proc, whose control files it trusts, and runs the reload on them.

Whose control files: root's, and those of the instance's user. That user is the one the uWSGI master runs as, when
the master is proven (the process serving the stats socket and named by its answer, or named by a pidfile of its
own user or of root's, and a uWSGI process in /proc). Without a proven master (no stats and no pidfile given, or the
master not in this host's /proc) it is the owner of the directory holding the FIFO or touch file: that user can
already replace anything in it, so trusting a file of theirs gives them nothing, while the file of a third user (a
hard link, or a directory shared with others) is refused.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import signal
import time

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi_config
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi_helpers
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline, ReloadFailed, WaitTimeout, poll

# The master recreates its FIFO after every writer closes it; a reader may be missing for a moment.
FIFO_RETRY_SECONDS = 0.5

# Why mode=fork is refused; tests/integration/test_uwsgi_fork_master.py shows each point on uWSGI 2.0.
FORK_REFUSAL = (
    "mode=fork is refused: uWSGI's fork-master (FIFO 'f') cannot carry a deploy with proof. The forked master "
    "re-executes as a reload, which does not write the pidfile, so the pidfile goes on naming the old master. With "
    "vacuum (which the uwsgi role sets), the old master's exit removes the pidfile, the stats socket and every unix "
    "socket the new master inherited, leaving the new master unprovable and a unix-socket app unreachable. Under "
    "systemd the old master is the unit's main process, so its exit stops the unit. Use mode=chain or mode=rolling; "
    "nothing was signalled")


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
    pidfile_pid = pidfile_owner = None
    if params['pidfile']:
        try:
            pidfile_pid, pidfile_owner = _proc.read_pidfile_and_owner(params['pidfile'])
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
    if pidfile_pid:
        check_pidfile_owner(params['pidfile'], pidfile_owner, info)
    return info


def check_pidfile_owner(path, owner, master):
    """Refuse a pidfile that names a master of another user than its owner, unless root wrote it.

    uWSGI writes ``pidfile`` as the user it started as (root, before it takes its configured user) and ``pidfile2``
    as the master's user; a pidfile of the app user's naming a master of root's or of another user's was written to
    have root signal that master.
    """
    running_as = _proc.process_owner(master.pid)
    if running_as is None:
        raise ReloadFailed('pidfile=%s names pid %d, which is not running (stale pidfile)' % (path, master.pid))
    if owner not in (0, running_as[0]):
        raise ReloadFailed('pidfile=%s is owned by %s but names %s, a uWSGI master running as %s: a pidfile names a '
                           'master of its own user, or is root\'s; nothing was signalled'
                           % (path, _uwsgi.describe_uid(owner), master.describe(), _uwsgi.describe_uid(running_as[0])))


def service_user(transport, master):
    """The ServiceUser whose FIFO or touch file is trusted besides root's (see the module's docstring)."""
    if master is not None:
        owner = _proc.process_owner(master.pid)
        if owner is not None:
            return _uwsgi.ServiceUser(owner[0], 'the user of the uWSGI master, pid %d' % master.pid)
    kind, path = transport
    directory = os.path.dirname(os.path.abspath(path))
    try:
        uid = os.stat(directory).st_uid
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ReloadFailed('%s=%s: permission denied (a directory on the way is closed to this user)' % (kind, path))
        raise ReloadFailed('%s=%s: its directory %s cannot be read: %s' % (kind, path, directory, exc.strerror or exc))
    return _uwsgi.ServiceUser(uid, 'the owner of %s; with no uWSGI master proven through stats or pidfile, the '
                                   'directory\'s owner stands for the instance\'s user' % directory)


def master_exe(pid):
    """The executable of ``pid`` (read as its owner when root may not), or None: then the other evidence counts."""
    try:
        return _proc.read_guarded(pid, 'exe', lambda: _proc.read_link_or_raise(pid, 'exe'))
    except (OSError, _proc.OwnerReadError):
        return None


def master_setup(master):
    """(cwd, environ, hidden) of the proven master, what its relative config paths and UWSGI_* options need;
    ``hidden`` says why they could not be read (then both are None)."""
    try:
        cwd, environ = _proc.read_guarded(master.pid, 'cwd and environ', lambda: [
            _proc.read_link_or_raise(master.pid, 'cwd'), _proc.read_environ_or_raise(master.pid)])
    except _proc.OwnerReadError as exc:
        return None, None, str(exc)
    except OSError as exc:
        return None, None, 'cannot read /proc/%d/cwd and environ: %s' % (master.pid, exc.strerror or exc)
    return cwd, environ, None


def check_lazy_apps(warn, mode, master, setup):
    """Refuse modes whose respawned workers would keep the old code; warn when it cannot be told. ``setup`` is
    master_setup's answer (None without a master)."""
    if mode not in ('chain', 'rolling', 'workers'):
        return
    if master is None:
        warn('cannot see the uWSGI master in /proc, so lazy-apps could not be confirmed; without it '
             'mode=%s respawns workers with the code the master loaded' % mode)
        return
    cwd, environ, hidden = setup
    declared = _uwsgi_config.lazy_apps_declared(master.cmdline, environ or {}, cwd, _proc.read_text)
    if hidden and not declared:
        # What the environment or a relative config path would say is unknown: no refusal on a guess.
        warn('could not confirm lazy-apps for %s (%s); without it mode=%s respawns workers with the code '
             'the master loaded' % (master.describe(), hidden, mode))
    elif declared is None:
        warn('could not confirm lazy-apps from the configuration of %s; without it mode=%s respawns '
             'workers with the code the master loaded' % (master.describe(), mode))
    elif not declared and mode in ('chain', 'rolling'):
        raise ReloadFailed('mode=%s needs lazy-apps, but %s does not set lazy-apps: its new workers would be '
                           'forked from a master holding the old code. Set lazy-apps = true or use mode=graceful'
                           % (mode, master.describe()))
    elif not declared:
        warn('%s does not set lazy-apps: mode=workers re-forks workers from the master, which keeps '
             'the old code; use mode=graceful to load new code' % master.describe())


def validate_transport(transport, service):
    kind, path = transport
    try:
        if kind == 'master_fifo':
            _uwsgi.check_fifo(path, service)
        elif kind == 'touch_file':
            _uwsgi.check_touch_file(path, service)
    except _uwsgi.UwsgiError as exc:
        raise ReloadFailed(str(exc))


def send_fifo(path, command, service):
    """Write ``command``, trying again for a moment only while the FIFO is missing or unread (the master
    recreates it after every writer): a FIFO that fails a check is refused at once."""
    deadline = Deadline(FIFO_RETRY_SECONDS)
    while True:
        try:
            return _uwsgi.fifo_command(path, command, service)
        except _uwsgi.NotReady:
            if deadline.expired():
                raise
            time.sleep(0.05)


def trigger(transport, mode, master, service):
    kind, path = transport
    if kind == 'master_fifo':
        send_fifo(path, _uwsgi.FIFO_COMMANDS[mode], service)
    elif kind == 'touch_file':
        _uwsgi.touch(path, service)
    elif kind == 'pidfile':
        os.kill(master.pid, signal.SIGHUP)


class Waiter:
    """Polls the stats server until the tracker proves completion; drives the rolling replacement.

    ``probe()`` raises ReloadFailed with the stats document it judged (or the last one read) as details.
    """

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
                                   '(last error: %s)' % (self.master.pid, exc), details=self.tracker.last)
            # A re-executing master is briefly unreachable; the deadline bounds how long we accept it.
            self.unreachable = str(exc)
            return None
        self.unreachable = None
        verdict, message = self.tracker.observe(document, self.draining())
        if verdict == 'broken':
            if self.queue:
                message += '; stopped before replacing workers %s, which still serve the old code' % (
                    ', '.join(str(w) for w in self.queue))
            raise ReloadFailed(message, details=document)
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
                                   % (wid, pid, info.describe() if info else 'gone', self.tracker.master_pid),
                                   details=document)
            os.kill(pid, signal.SIGHUP)
            self.signalled[wid] = pid
            in_flight.append(wid)

    def describe_timeout(self):
        if self.unreachable:
            return 'the stats server did not answer again: %s' % self.unreachable
        return self.tracker.describe_pending(self.tracker.last)


# The modes that replace the workers only: the mules and spoolers are then replaced by the module.
WORKER_MODES = ('chain', 'rolling', 'workers')
# Between two looks at the helpers being replaced.
HELPER_POLL_SECONDS = 0.1


def find_helpers(master, before, setup):
    """{'mules': [pid], 'spoolers': {dir: pid}} of the instance, from the stats ``before``, /proc and the master's
    configuration (``setup``, master_setup's answer); ReloadFailed naming them when the mules cannot be told apart."""
    found = dict(mules=[], spoolers=_uwsgi_helpers.spoolers(before), options=[], unknown=False)
    if master is None:
        if found['spoolers']:
            raise ReloadFailed('the instance has spoolers (%s), but its master (pid %s) is not in this host\'s /proc: '
                               'the module must run on the instance\'s host to replace them'
                               % (', '.join(sorted(found['spoolers'])), before.get('pid')))
        return found
    cwd, environ, hidden = setup
    options, unknown = _uwsgi_config.declared_options(master.cmdline, environ or {}, cwd, _proc.read_text)
    # Kept to tell the replacements apart the same way.
    found.update(options=options, unknown=unknown or bool(hidden))
    try:
        found['mules'] = _uwsgi_helpers.find_mules(master.pid, before, options, found['unknown'])
    except _uwsgi_helpers.HelperError as exc:
        raise ReloadFailed(str(exc))
    return found


def describe_helpers(helpers):
    """'2 mules and 1 spooler', or '' when there are none."""
    parts = []
    for count, name in ((len(helpers['mules']), 'mule'), (len(helpers['spoolers']), 'spooler')):
        if count:
            parts.append('%d %s%s' % (count, name, '' if count == 1 else 's'))
    return ' and '.join(parts)


class HelperWaiter:
    """Replaces the mules and spoolers after the workers (only for WORKER_MODES: a reload of the whole instance
    replaced them already), then proves it: each old PID gone, each replacement up for SETTLE_SECONDS.

    A mule gets SIGHUP at once. A spooler gets SIGTERM once the stats show it running no task, so that no task is
    cut short. ``probe()`` returns the last stats document once done.
    """

    def __init__(self, address, master, helpers, mode, clock=time.monotonic):
        self.address = address
        self.master = master
        self.helpers = helpers
        self.signal = mode in WORKER_MODES
        self.mules = _uwsgi_helpers.Replacement(helpers['mules'], clock)
        self.spoolers = dict((directory, _uwsgi_helpers.Replacement([pid] if pid else [], clock))
                             for directory, pid in helpers['spoolers'].items())
        # A spooler being respawned (pid 0) starts with the code on disk anyway.
        self.unsignalled = dict((d, pid) for d, pid in helpers['spoolers'].items() if pid) if self.signal else {}
        self.last = None
        self.mules_now = []

    def start(self):
        """Send each mule its SIGHUP; the spoolers get theirs from probe(), each once it is idle."""
        if self.signal:
            for pid in self.helpers['mules']:
                self.send(pid, signal.SIGHUP, 'mule')

    def send(self, pid, signum, kind):
        info = _proc.read_process(pid)
        if info is None:
            return  # gone already: the master forks its replacement anyway
        if info.ppid != self.master.pid:
            raise ReloadFailed('%s pid %d is %s, no longer a child of the uWSGI master %d; nothing signalled'
                               % (kind, pid, info.describe(), self.master.pid))
        os.kill(pid, signum)

    def probe(self):
        try:
            document = _uwsgi.read_stats(self.address)
        except _uwsgi.UwsgiError:
            return None
        self.last = document
        busy = _uwsgi_helpers.busy_spoolers(document)
        for directory, pid in list(self.unsignalled.items()):
            if directory not in busy:
                self.send(pid, signal.SIGTERM, 'spooler %s' % directory)
                del self.unsignalled[directory]
        current = _uwsgi_helpers.spoolers(document)
        spoolers_done = all(replacement.settled([current.get(directory, 0)])
                            for directory, replacement in self.spoolers.items())
        if self.helpers['mules']:
            try:
                self.mules_now = _uwsgi_helpers.find_mules(self.master.pid, document, self.helpers['options'],
                                                           self.helpers['unknown'])
            except _uwsgi_helpers.HelperError:
                self.mules_now = []  # a gateway respawning meanwhile: look again
        mules_done = self.mules.settled(self.mules_now)
        return document if spoolers_done and mules_done and not self.unsignalled else None

    def after(self):
        """The mules and spoolers as last seen."""
        return dict(mules_after=sorted(self.mules_now),
                    spoolers_after=_uwsgi_helpers.spoolers(self.last or {}))

    def describe_timeout(self):
        waiting = []
        for directory in sorted(self.unsignalled):
            waiting.append('spooler %s (pid %d) never stopped running a task, so it was not stopped'
                           % (directory, self.unsignalled[directory]))
        current = _uwsgi_helpers.spoolers(self.last or {})
        for directory, replacement in sorted(self.spoolers.items()):
            if directory not in self.unsignalled and not replacement.settled([current.get(directory, 0)]):
                waiting.append('spooler %s: pid %s now, not a replacement that stayed up'
                               % (directory, current.get(directory) or 'none'))
        if not self.mules.settled(self.mules_now):
            waiting.append('mules %s replaced by %s, not all of them up for %.0f s (a mule whose code fails exits '
                           'and is forked again: see the uWSGI log)'
                           % (', '.join(str(pid) for pid in sorted(self.mules.old)),
                              ', '.join(str(pid) for pid in sorted(self.mules_now)) or 'none',
                              _uwsgi_helpers.SETTLE_SECONDS))
        return '; '.join(waiting) or 'the stats server did not answer'


def reload_instance(params, warn, check_mode):
    """Trigger one reload as uwsgi_reload's ``params`` ask and, with ``wait``, prove it; returns the module's result.

    ``warn(text)`` reports what could not be confirmed. Raises ReloadFailed whose message is the task's and whose
    details are the other fields of its failed result.
    """
    mode = params['mode']
    result = dict(changed=False, mode=mode)
    if mode == 'fork':
        raise ReloadFailed(FORK_REFUSAL, details=result)
    transport = transport_for(params)
    if transport is None:
        raise ReloadFailed('mode=%s cannot be triggered through %s: use master_fifo (any mode), touch_file '
                           '(chain, graceful, workers) or pidfile (graceful)'
                           % (mode, 'touch_file=%s' % params['touch_file'] if params['touch_file'] else 'pidfile=%s' % params['pidfile']),
                           details=result)
    if mode == 'rolling' and not params['wait']:
        raise ReloadFailed('mode=rolling is driven by the module itself and cannot run with wait=false', details=result)

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
        service = service_user(transport, master) if transport[0] in ('master_fifo', 'touch_file') else None
        validate_transport(transport, service)
        # Read once: as root without CAP_SYS_PTRACE each read forks a child that takes the master's user.
        setup = master_setup(master) if master is not None else None
        check_lazy_apps(warn, mode, master, setup)
        helpers = (find_helpers(master, before, setup) if before is not None
                   else dict(mules=[], spoolers={}, options=[], unknown=False))
        if master is None and mode in WORKER_MODES:
            warn('cannot see the uWSGI master in /proc, so its mules could not be looked for; mode=%s does not '
                 'replace mules' % mode)
        if describe_helpers(helpers) and mode in WORKER_MODES and not params['wait']:
            raise ReloadFailed('mode=%s replaces the workers only; the instance\'s %s would keep the old code. The '
                               'module replaces them once the workers are proven, which needs wait=true; nothing was '
                               'sent' % (mode, describe_helpers(helpers)))
    except (_uwsgi.UwsgiError, ValueError, ReloadFailed) as exc:
        raise ReloadFailed(str(exc), details=result)
    result.update(mules_before=helpers['mules'], spoolers_before=helpers['spoolers'])

    result['changed'] = True
    if check_mode:
        result['elapsed'] = 0.0
        result['msg'] = 'would reload (%s) via %s%s' % (mode, result['method'], ' and wait for proof' if params['wait'] else '')
        if describe_helpers(helpers):
            result['msg'] += ', then %s the %s' % ('replace' if mode in WORKER_MODES else 'prove new', describe_helpers(helpers))
        return result

    started = Deadline(params['timeout'])
    waiter = None
    try:
        if transport[0] != 'worker_signals':
            trigger(transport, mode, master, service)
        if not params['wait']:
            result['elapsed'] = round(started.elapsed(), 3)
            result['msg'] = '%s reload triggered via %s; not waiting for proof' % (mode, result['method'])
            return result
        waiter = Waiter(address, before, master, mode, batch)
        final = poll(waiter.probe, started, params['poll_interval'], describe=waiter.describe_timeout)
    except ReloadFailed as exc:
        snapshot = exc.details
        result.update(elapsed=round(started.elapsed(), 3), snapshot=snapshot or {})
        if snapshot:
            result['workers_after'] = _uwsgi.workers_summary(snapshot)
        raise ReloadFailed('%s reload failed after %.1fs: %s' % (mode, started.elapsed(), exc), details=result)
    except WaitTimeout as exc:
        last = waiter.tracker.last
        result.update(elapsed=round(started.elapsed(), 3), snapshot=last, workers_after=_uwsgi.workers_summary(last))
        raise ReloadFailed('%s reload not complete after timeout=%ss: %s' % (mode, params['timeout'], exc), details=result)
    except (_uwsgi.UwsgiError, OSError) as exc:
        result['elapsed'] = round(started.elapsed(), 3)
        raise ReloadFailed('%s reload could not be triggered: %s' % (mode, exc), details=result)

    result.update(min_accepting=waiter.tracker.min_accepting, workers_after=_uwsgi.workers_summary(final))
    helpers_said = ''
    if describe_helpers(helpers):
        replacing = HelperWaiter(address, master, helpers, mode)
        try:
            replacing.start()
            poll(replacing.probe, started, HELPER_POLL_SECONDS, describe=replacing.describe_timeout)
        except WaitTimeout as exc:
            result.update(elapsed=round(started.elapsed(), 3), **replacing.after())
            raise ReloadFailed('%s reload replaced the workers, but not the %s within timeout=%ss: %s; the instance '
                               'runs mixed code' % (mode, describe_helpers(helpers), params['timeout'], exc),
                               details=result)
        except (ReloadFailed, OSError) as exc:
            result.update(elapsed=round(started.elapsed(), 3), **replacing.after())
            raise ReloadFailed('%s reload replaced the workers, but not the %s: %s; the instance runs mixed code'
                               % (mode, describe_helpers(helpers), exc), details=result)
        result.update(replacing.after())
        helpers_said = ', then its %s' % describe_helpers(helpers)
    elapsed = started.elapsed()
    result.update(
        elapsed=round(elapsed, 3),
        completed_at=time.time(),
        msg='%s reload complete: %d workers replaced%s in %.2fs' % (
            mode, len(waiter.tracker.targets), helpers_said, elapsed),
    )
    return result

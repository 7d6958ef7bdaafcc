# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The gunicorn_reload driver: HUP, or an upgrade (USR2) to its proof, settling an upgrade left pending first.

Private to the collection: the interface may change without notice.
The module gives its options and what it needs of Ansible (the paths of systemctl and journalctl, where warnings
go) to run(), and reports what run() returns. Every signal goes only to a master _gunicorn proved.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import signal
import time

from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _proc, _systemd
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import (
    Deadline, ReloadFailed, WaitTimeout, poll, timing_error)

# spawn_workers sleeps up to 0.1 s between forks: a worker set unchanged this long is complete.
SETTLE_SECONDS = 1.0
# How long an aborted new master gets to stop its workers before QUIT (gunicorn's default graceful_timeout is 30).
ABORT_GRACE_SECONDS = 35.0
ABORT_QUIT_SECONDS = 5.0
LOG_TAIL_LINES = 20
# systemd re-reads PIDFile= when it reaps the old master; the module may see the master gone a little earlier.
SYSTEMD_GRACE_SECONDS = 10.0
SYSTEMD_POLL_SECONDS = 0.2
# journald receives a dead master's last lines a little after its exit.
JOURNAL_SETTLE_SECONDS = 1.5
JOURNAL_LINES = 400
# journalctl only explains a failure: a journal that takes longer is given up on, so the failure is reported.
JOURNAL_COMMAND_SECONDS = 10.0
SYSTEMD_PROPERTIES = ('MainPID', 'NRestarts', 'ActiveState', 'PIDFile')


class PidfileHandoverFailed(Exception):
    """The pidfile could not be rewritten: the upgrade is aborted before the old master is stopped."""


class SystemdUnit:
    """The system service the old master runs in, as ``systemctl show`` reports it."""

    def __init__(self, name, systemctl):
        self.name = name
        self.systemctl = systemctl

    def show(self):
        """{property: value} for SYSTEMD_PROPERTIES; SystemdError when systemctl fails or does not answer in time."""
        return _systemd.show(self.systemctl, self.name, SYSTEMD_PROPERTIES)


class JournalWatch:
    """The journal of the master's unit from now on: where a gunicorn under systemd logs (stderr, no log file)."""

    def __init__(self, unit, journalctl):
        self.unit = unit
        self.journalctl = journalctl
        self.error = None
        out = self.journal([journalctl, '--unit', unit, '--no-pager', '--quiet', '--lines=0', '--show-cursor'])
        self.cursor = _systemd.cursor_from(out)

    def new_lines(self):
        command = [self.journalctl, '--unit', self.unit, '--no-pager', '--quiet', '--output=cat']
        command += ['--after-cursor', self.cursor] if self.cursor else ['--lines=%d' % JOURNAL_LINES]
        return self.journal(command).splitlines()[-JOURNAL_LINES:]

    def journal(self, command):
        """journalctl's output, '' when it fails; a journalctl that timed out once is not run again (each run would
        wait as long)."""
        if self.error is not None:
            return ''
        try:
            rc, out, err = _systemd.run(command, JOURNAL_COMMAND_SECONDS)
        except _systemd.SystemdError as exc:
            self.error = str(exc)
            return ''
        return out if rc == 0 else ''


def service_of(pid):
    """The system service (``NAME.service``) process ``pid`` runs in, from its cgroup, or None."""
    return _systemd.unit_from_cgroup(_proc.read_cgroup(pid))


class Settings:
    """What a driver needs from the module: its options, the programs it may run, where its warnings go.

    ``systemctl`` and ``journalctl`` are paths, None when the program is missing (the systemd proof, or the journal
    as the cause of a failure, is then skipped); ``warn(text)`` takes a warning for the task's result. ``expected``
    (a _gunicorn.Expected) says whom the pidfile may name; its unit, when given, is the master's unit.
    """

    def __init__(self, pidfile, timeout, poll_interval, systemctl=None, journalctl=None, warn=None, expected=None):
        self.pidfile = pidfile
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.systemctl = systemctl
        self.journalctl = journalctl
        self.warn = warn if warn is not None else (lambda text: None)
        self.expected = expected if expected is not None else _gunicorn.Expected()

    def unit_of(self, master):
        """The system service the master runs in: the ``unit`` option, which identify_master proved, else the one its
        cgroup names (None when none)."""
        return self.expected.unit or service_of(master.pid)


class Reload:
    """Drives one reload: sends signals only to processes proven to be the masters involved."""

    def __init__(self, master, settings):
        self.settings = settings
        self.pidfile = settings.pidfile
        self.timeout = settings.timeout
        self.poll_interval = settings.poll_interval
        self.warn = settings.warn
        self.before = master
        self.old_workers = sorted(master.workers)
        self.signals = []
        self.log = _gunicorn.LogWatch(_gunicorn.written_files(master.pid))
        self.systemd_unit = settings.unit_of(master)
        self.journal = self.unit_journal() if not self.log.offsets else None
        self.listeners = _gunicorn.socket_inodes(master.pid)
        self.last = master
        self.deadline = None
        self.seen_workers = None    # the last worker set of the new generation looked at, and since when it is
        self.stable_since = None

    # ------------------------------------------------------------ helpers

    def whole_generation(self, workers, booted):
        """Whether ``workers`` (a frozenset, ``booted`` of them booted) is the whole new generation. A worker the
        master has not forked yet is in no listing: as many workers as before, or a set that stayed the same for
        SETTLE_SECONDS (the master may have read a smaller workers setting), is the whole generation."""
        if workers != self.seen_workers:
            self.seen_workers = workers
            self.stable_since = time.monotonic()
        if not workers or booted != len(workers):
            return False
        return len(workers) >= len(self.old_workers) or time.monotonic() - self.stable_since >= SETTLE_SECONDS

    def send(self, master, sig, prepare=None):
        """Signal ``master`` if its PID still names it; ``prepare()`` runs between that check and the signal."""
        if not _gunicorn.same_process(master):
            raise ReloadFailed('pid %d is no longer the gunicorn master inspected before (%s); %s not sent'
                               % (master.pid, master.describe(), sig.name))
        if prepare is not None:
            prepare()
        try:
            os.kill(master.pid, sig)
        except OSError as exc:
            if exc.errno == errno.EPERM:
                raise ReloadFailed('not permitted to signal gunicorn master %d (pidfile=%s): run the module as the '
                                   'user gunicorn runs as, or as root' % (master.pid, self.pidfile))
            raise
        self.signals.append('%s %d' % (sig.name[3:], master.pid))

    def unit_journal(self):
        """A JournalWatch when the master runs in a systemd unit, whose journal gets its stderr; else None."""
        journalctl = self.settings.journalctl if self.systemd_unit else None
        return JournalWatch(self.systemd_unit, journalctl) if journalctl else None

    def log_lines(self):
        return self.log.new_lines()

    def named_by(self, path):
        """The PID the pidfile ``path`` names; _proc.PidfileError saying why none, or that it belongs to neither the
        proven master's user nor root."""
        return _proc.read_pidfile(path, 'pidfile', _gunicorn.not_running(path), _gunicorn.master_owners(self.before))

    def failure_lines(self):
        """The log lines that explain a failure: the log files', or the unit journal's once it shows a cause."""
        lines = self.log_lines()
        if self.journal is None:
            return lines
        settle = Deadline(JOURNAL_SETTLE_SECONDS)
        while True:
            journal = self.journal.new_lines()
            if _gunicorn.summarize_log(journal)[1] or settle.expired() or self.journal.error:
                return lines + journal
            time.sleep(0.1)

    def log_verdict(self):
        """(exit_code, cause) from the log lines written since the first signal."""
        return _gunicorn.summarize_log(self.log_lines())

    def failure_details(self):
        lines = self.failure_lines()
        exit_code, cause = _gunicorn.summarize_log(lines)
        details = {}
        if exit_code is not None:
            details['exit_code'] = exit_code
        if self.log.offsets or self.journal is not None:
            details['log_tail'] = lines[-LOG_TAIL_LINES:]
        return details, cause

    def cause_text(self, cause):
        if cause:
            return cause
        if self.log.offsets:
            return 'none shown in %s' % ', '.join(sorted(self.log.offsets))
        if self.journal is not None and self.journal.error:
            return 'unknown: the journal of %s could not be read (%s)' % (self.journal.unit, self.journal.error)
        if self.journal is not None:
            return 'none shown in the journal of %s' % self.journal.unit
        return 'unknown: the master writes no log file and runs in no systemd unit (syslog?)'

    def poll(self, probe, describe):
        return poll(probe, self.deadline, self.poll_interval, describe=describe)


class HupReload(Reload):

    def run(self, wait):
        self.deadline = Deadline(self.timeout)
        self.send(self.before, signal.SIGHUP)
        if not wait:
            return None
        return self.poll(self.probe, self.describe_timeout)

    def down(self, how):
        details, cause = self.failure_details()
        message = ('after HUP the gunicorn master %d %s: the service is DOWN, no gunicorn serves pidfile=%s. Cause: %s. '
                   'gunicorn halts when new workers cannot boot; deploy code with mode=upgrade, which keeps the old '
                   'master serving' % (self.before.pid, how, self.pidfile, self.cause_text(cause)))
        raise ReloadFailed(message, details)

    def probe(self):
        current = _gunicorn.reinspect(self.before)
        if current is None:
            self.down('exited')
        if self.listeners and not (self.listeners & _gunicorn.socket_inodes(self.before.pid)):
            self.down('closed its listening sockets and is shutting down')
        exit_code, _cause = self.log_verdict()
        if exit_code in _gunicorn.EXIT_REASONS:
            self.down('is halting (workers exited with code %d)' % exit_code)
        self.last = current
        workers = frozenset(current.workers)
        if set(self.old_workers) & workers:
            return None
        return current if self.whole_generation(workers, len(current.booted())) else None

    def describe_timeout(self):
        current = self.last
        old_left = sorted(set(self.old_workers) & set(current.workers))
        waiting = sorted(pid for pid, ready in current.workers.items() if not ready)
        return 'old workers still running: %s; new workers not booted: %s' % (old_left or 'none', waiting or 'none')


class UpgradeReload(Reload):

    def __init__(self, master, settings):
        super(UpgradeReload, self).__init__(master, settings)
        self.new_pid = None
        self.new = None
        self.pidfile_handover = False
        self.unit = None            # a SystemdUnit once systemd answered about it before USR2
        self.systemd_before = {}
        self.systemd_main_pid = None

    def run(self, wait):
        self.watch_systemd()
        self.deadline = Deadline(self.timeout)
        self.send(self.before, signal.SIGUSR2)
        self.new_pid = self.poll(self.probe_new_master, self.describe_no_new_master)
        try:
            self.new = self.poll(self.probe_new_ready, self.describe_new_not_ready)
        except WaitTimeout as exc:
            self.abort('its workers did not all boot within timeout=%ss (%s)' % (self.timeout, exc))
        try:
            self.send(self.before, signal.SIGTERM, prepare=self.hand_over_pidfile)
        except PidfileHandoverFailed as exc:
            self.abort(str(exc))
        if not wait:
            return self.new
        promoted = self.poll(self.probe_promoted, self.describe_not_promoted)
        if self.unit is not None:
            self.wait_systemd_follows(promoted)
        return promoted

    # ------------------------------------------------------------ the pidfile, and systemd that reads it

    def hand_over_pidfile(self):
        """Make the pidfile name the new master before the old one is told to stop (gunicorn issue 2856)."""
        try:
            named = self.named_by(self.pidfile)
            problem = 'pidfile=%s names pid %d, not the old master %d,' % (self.pidfile, named, self.before.pid)
        except _proc.PidfileError as exc:
            named, problem = None, str(exc)
        if named != self.before.pid:
            raise ReloadFailed(
                '%s just before the old master was to be stopped: the pidfile was not handed over and nothing was '
                'stopped. The new master %d (%s.2) runs beside the old master %d: write %d to pidfile=%s and stop '
                '%d to finish the upgrade, or stop %d to abort it'
                % (problem, self.new_pid, self.pidfile, self.before.pid, self.new_pid, self.pidfile,
                   self.before.pid, self.new_pid))
        try:
            _gunicorn.hand_over_pidfile(self.pidfile, self.new_pid)
        except (IOError, OSError) as exc:
            raise PidfileHandoverFailed('cannot hand pidfile=%s over to it (%s), so the old master %d was not stopped'
                                        % (self.pidfile, exc, self.before.pid))
        self.pidfile_handover = True

    def watch_systemd(self):
        """Before USR2: what systemd says about the old master's unit, to compare with afterwards."""
        if self.systemd_unit is None:
            return
        systemctl = self.settings.systemctl
        if not systemctl:
            return
        unit = SystemdUnit(self.systemd_unit, systemctl)
        try:
            before = unit.show()
        except _systemd.SystemdError as exc:
            self.warn('gunicorn master %d runs in %s, but systemd cannot be asked about it (%s): not checking '
                      'that systemd follows the upgrade' % (self.before.pid, self.systemd_unit, exc))
            return
        state = before.get('ActiveState') or 'unknown'
        if state != 'active':
            self.warn('gunicorn master %d runs in %s, which systemd reports as ActiveState=%s: not checking '
                      'that systemd follows the upgrade' % (self.before.pid, self.systemd_unit, state))
            return
        self.unit = unit
        self.systemd_before = before

    @property
    def systemd_tracks_master(self):
        """Whether systemd's MainPID was the old master (not a wrapper that started it)."""
        return _systemd.int_property(self.systemd_before, 'MainPID') == self.before.pid

    def wait_systemd_follows(self, new):
        """Fail unless systemd made the new master the unit's main process, without restarting the unit."""
        deadline = Deadline(max(self.deadline.remaining(), SYSTEMD_GRACE_SECONDS))
        try:
            poll(lambda: self.probe_systemd(new), deadline, max(self.poll_interval, SYSTEMD_POLL_SECONDS),
                 describe=lambda: 'systemd still reports the old master %d as MainPID of %s'
                 % (self.before.pid, self.systemd_unit))
        except WaitTimeout as exc:
            raise ReloadFailed('%s after the upgrade; %s' % (exc, self.not_followed_hint()))

    def probe_systemd(self, new):
        try:
            now = self.unit.show()
        except _systemd.SystemdError as exc:
            raise ReloadFailed('the new master %d serves, but systemd cannot be asked whether it follows it: %s'
                               % (new.pid, exc))
        self.systemd_main_pid = _systemd.int_property(now, 'MainPID')
        state = now.get('ActiveState')
        if self.restarts(now) is None:
            if self.systemd_tracks_master and self.systemd_main_pid == self.before.pid and state == 'active':
                return None  # systemd has not reaped the old master yet
            if state == 'active' and (self.systemd_main_pid == new.pid or not self.systemd_tracks_master):
                return now
        raise ReloadFailed(self.not_followed(now))

    def restarts(self, now):
        """'N -> M' when the unit's NRestarts grew since before USR2, else None."""
        before = _systemd.int_property(self.systemd_before, 'NRestarts')
        after = _systemd.int_property(now, 'NRestarts')
        if before is not None and after is not None and after > before:
            return '%d -> %d' % (before, after)
        return None

    def not_followed(self, now):
        return ('systemd did not follow the new master %d: unit %s reports MainPID=%s, ActiveState=%s%s; %s'
                % (self.new_pid, self.systemd_unit, now.get('MainPID') or '?', now.get('ActiveState') or '?',
                   ', NRestarts %s (systemd restarted the unit)' % self.restarts(now) if self.restarts(now) else '',
                   self.not_followed_hint(now.get('PIDFile'))))

    def not_followed_hint(self, configured=None):
        configured = configured if configured is not None else self.systemd_before.get('PIDFile')
        if configured and os.path.realpath(configured) == os.path.realpath(self.pidfile):
            return ('the unit has PIDFile=%s as it needs; it also needs Type=notify or Type=forking; check the '
                    'service' % configured)
        return ('the unit needs PIDFile=%s (it has %s) and Type=notify or Type=forking; check the service'
                % (self.pidfile, 'PIDFile=%s' % configured if configured else 'no PIDFile='))

    def systemd_summary(self):
        """For the success message: what systemd was seen to do."""
        if self.unit is None:
            return ''
        if self.systemd_tracks_master:
            return '; systemd unit %s follows it (MainPID %d, not restarted)' % (
                self.systemd_unit, self.systemd_main_pid)
        return ('; systemd unit %s active and not restarted (its MainPID %s is not a gunicorn master)'
                % (self.systemd_unit, self.systemd_main_pid))

    def systemd_hint(self):
        """What systemd says, when the new master vanished after the old master was told to stop."""
        if self.unit is None:
            return ''
        try:
            now = self.unit.show()
        except _systemd.SystemdError:
            return ''
        self.systemd_main_pid = _systemd.int_property(now, 'MainPID')
        return '. %s' % self.not_followed(now)

    # ------------------------------------------------------------ phase 1: the new master appears

    def probe_new_master(self):
        current = self.old_master_view()
        if current.upgrade_children:
            return current.upgrade_children[0]
        if any('USR2 signal ignored' in line for line in self.log_lines()):
            raise ReloadFailed('gunicorn master %d ignored USR2 (its log says so): an upgrade is already under '
                               'way' % self.before.pid, self.failure_details()[0])
        if _gunicorn.shows_exit(self.log_lines()):
            self.fail_new_generation('exited before it could be inspected')
        return None

    def describe_no_new_master(self):
        return 'no new master appeared as a child of master %d after USR2' % self.before.pid

    # ------------------------------------------------------------ phase 2: its workers boot

    def probe_new_ready(self):
        self.old_master_view()
        new = _gunicorn.inspect_master(self.new_pid)
        if new is None or new.info.ppid != self.before.pid:
            self.fail_new_generation('exited before its workers booted')
        exit_code, _cause = self.log_verdict()
        if exit_code in _gunicorn.EXIT_REASONS:
            self.abort('its workers exited with code %d' % exit_code)
        self.new = new
        return new if self.whole_generation(frozenset(new.workers), len(new.booted())) else None

    def describe_new_not_ready(self):
        if self.new is None:
            return 'new master %d has no workers yet' % self.new_pid
        waiting = sorted(pid for pid, ready in self.new.workers.items() if not ready)
        return 'new master %d: workers not booted: %s' % (self.new_pid, waiting or 'none started')

    # ------------------------------------------------------------ phase 3: the old master leaves, the new one is promoted

    def probe_promoted(self):
        new = _gunicorn.inspect_master(self.new_pid)
        if new is None or not _gunicorn.same_process(self.new):
            details, cause = self.failure_details()
            raise ReloadFailed('the new master %d exited after the old master %d was told to stop: check the '
                               'service, it may be down. Cause: %s%s'
                               % (self.new_pid, self.before.pid, self.cause_text(cause), self.systemd_hint()),
                               details)
        self.new = new
        if not _gunicorn.is_gone(self.before):
            return None
        try:
            named = self.named_by(self.pidfile)
        except _proc.PidfileError:
            return None  # between the old master's unlink and the new master's rename
        if named != self.new_pid or os.path.exists(self.pidfile + '.2'):
            return None
        if not new.workers or len(new.booted()) != len(new.workers):
            return None
        return new

    def describe_not_promoted(self):
        if not _gunicorn.is_gone(self.before):
            return ('old master %d is still stopping (its workers finish their requests, up to gunicorn\'s '
                    'graceful_timeout); the new master %d serves' % (self.before.pid, self.new_pid))
        return 'new master %d not promoted: pidfile=%s does not name it yet' % (self.new_pid, self.pidfile)

    # ------------------------------------------------------------ failure handling

    def old_master_view(self):
        current = _gunicorn.reinspect(self.before)
        if current is None:
            details, cause = self.failure_details()
            raise ReloadFailed('the old gunicorn master %d exited during the upgrade; check the service. Cause: %s'
                               % (self.before.pid, self.cause_text(cause)), details)
        self.last = current
        return current

    def fail_new_generation(self, how):
        """The new master is gone: make sure the old one still serves, and fail with the cause."""
        details, cause = self.failure_details()
        old = self.old_master_view()
        raise ReloadFailed(
            'upgrade failed: the new master%s %s%s. Cause: %s. The old master %d still serves with workers %s; '
            'nothing was replaced' % (' %d' % self.new_pid if self.new_pid else '', how, self.clear_upgrade_pidfile(),
                                      self.cause_text(cause), old.pid, sorted(old.workers)),
            details)

    def clear_upgrade_pidfile(self):
        """Remove ``<pidfile>.2`` left by a dead new master (gunicorn crashes while halting and leaves it)."""
        path = self.pidfile + '.2'
        try:
            named = self.named_by(path)
        except _proc.PidfileError:
            return ''
        if _gunicorn.is_running(named) or (self.new_pid and named != self.new_pid):
            return ''
        try:
            os.unlink(path)
        except OSError:
            return ''
        return '; removed %s, left behind by the dead new master %d' % (path, named)

    def abort(self, why):
        """Stop the new generation (TERM, then QUIT), keep the old master, and fail."""
        stopped = self.stop_new_generation(self.new or _gunicorn.inspect_master(self.new_pid))
        details, cause = self.failure_details()
        old = self.old_master_view()
        raise ReloadFailed(
            'upgrade aborted, new master %d: %s; %s%s. Cause: %s. The old master %d still serves with workers %s'
            % (self.new_pid, why, stopped, self.clear_upgrade_pidfile(), self.cause_text(cause),
               old.pid, sorted(old.workers)),
            details)

    def stop_new_generation(self, new):
        """TERM the new master ``new`` (a Master, None once gone), QUIT when it outlives ABORT_GRACE_SECONDS;
        says how it went. gunicorn's master stops its workers before it exits."""
        if new is None or new.info.ppid != self.before.pid or not self.signal_unless_gone(new, signal.SIGTERM):
            return 'it had exited'
        if wait_gone(new, ABORT_GRACE_SECONDS, self.poll_interval) or not self.signal_unless_gone(new, signal.SIGQUIT):
            return 'stopped it (TERM)'
        if wait_gone(new, ABORT_QUIT_SECONDS, self.poll_interval):
            return 'stopped it (TERM, then QUIT after %ds)' % ABORT_GRACE_SECONDS
        return 'told it to stop (TERM, QUIT) but it is still running'

    def signal_unless_gone(self, new, sig):
        """Signal the new master ``new``; False when it exited by itself first. A new master that cannot boot its
        workers does exit, and may do so between a look at it and the signal: send then no longer proves its PID,
        or the signal finds no such process. Gone is what stopping it wanted."""
        try:
            self.send(new, sig)
        except (ReloadFailed, OSError) as exc:
            if (isinstance(exc, OSError) and exc.errno != errno.ESRCH) or _gunicorn.same_process(new):
                raise
            return False
        return True


class PendingAborted(Exception):
    """The new generation of a pending upgrade cannot be finished; the message says why."""


class SettlePending(UpgradeReload):
    """Settles an upgrade an earlier run left pending (USR2 sent, the old master not stopped, or not gone yet).

    Finishes it when the new master's workers all boot within the timeout (the readiness proof of an upgrade),
    else aborts it. Finishing is the upgrade's own completion: the pidfile names the new master, the old master
    gets TERM, the new one is promoted, systemd follows it. Aborting makes the pidfile name the old master again,
    stops the new generation (TERM) and removes ``<pidfile>.2``; the old master keeps serving. An old master that
    was already told to stop leaves finishing as the only choice. Signals go only to the two masters
    _gunicorn.find_pending_upgrade proved, each checked again just before (same PID, same start time).
    """

    def __init__(self, pending, settings):
        super(SettlePending, self).__init__(pending.old, settings)
        self.pending = pending
        self.proven_new = pending.new
        self.new_pid = pending.new.pid
        self.new = pending.new

    def settle(self):
        """('finished' or 'aborted', a sentence, the Master serving afterwards). ReloadFailed or WaitTimeout when
        neither could be proven; the message names the step."""
        self.watch_systemd()
        self.deadline = Deadline(self.timeout)
        if self.pending.old_stopping:
            return self.finish_pending('the old master %d had already been told to stop (it closed its listening '
                                       'sockets), so only finishing leaves a master' % self.before.pid)
        try:
            ready = self.poll(self.probe_new_ready, self.describe_new_not_ready)
        except WaitTimeout as exc:
            return self.abort_pending('its workers did not all boot within timeout=%ss (%s)'
                                      % (self.timeout, exc))
        except PendingAborted as exc:
            return self.abort_pending(str(exc))
        self.new = ready
        return self.finish_pending('all %d of its workers booted' % len(ready.workers))

    # ------------------------------------------------------------ deciding: the readiness proof of an upgrade

    def probe_new_ready(self):
        if not _gunicorn.same_process(self.proven_new):
            self.fail_new_generation('exited before its workers booted')
        return super(SettlePending, self).probe_new_ready()

    def fail_new_generation(self, how):
        raise PendingAborted('it %s' % how)

    def abort(self, why):
        raise PendingAborted(why)

    # ------------------------------------------------------------ finishing

    def finish_pending(self, why):
        if self.pending.old_stopping:
            told = 'the old master %d had been told to stop before' % self.before.pid
            try:
                if self.pidfile_names() == self.before.pid:
                    self.hand_over_pidfile()
            except (ReloadFailed, PidfileHandoverFailed) as exc:
                self.warn('the old master %d is stopping and pidfile=%s could not be handed over to the new '
                          'master %d: %s' % (self.before.pid, self.pidfile, self.new_pid, exc))
        else:
            told = 'sent TERM to the old master %d' % self.before.pid
            try:
                self.send(self.before, signal.SIGTERM, prepare=self.name_new_master)
            except PidfileHandoverFailed as exc:
                return self.abort_pending(str(exc))
        try:
            promoted = self.poll(self.probe_promoted, self.describe_not_promoted)
        except WaitTimeout as exc:
            raise ReloadFailed('finishing it, the new master %d was not promoted within timeout=%ss: %s'
                               % (self.new_pid, self.timeout, exc))
        if self.unit is not None:
            self.wait_systemd_follows(promoted)
        return 'finished', ('finished the pending upgrade: new master %d (%s); %s%s, which exited; the new master '
                            'was promoted and serves with %d workers%s'
                            % (self.new_pid, why, 'handed pidfile=%s over to it, ' % self.pidfile
                               if self.pidfile_handover else '', told, len(promoted.workers),
                               self.systemd_summary())), promoted

    def pidfile_names(self):
        try:
            return self.named_by(self.pidfile)
        except _proc.PidfileError:
            return None

    def name_new_master(self):
        """Just before TERM to the old master: the pidfile names the new one (handed over by an earlier run, or
        now)."""
        if self.pidfile_names() != self.new_pid:
            self.hand_over_pidfile()

    # ------------------------------------------------------------ aborting

    def abort_pending(self, why):
        restored = self.restore_pidfile()
        new = _gunicorn.reinspect(self.proven_new)
        workers = dict((pid, _proc.start_ticks(pid)) for pid in (new.workers if new else ()))
        stopped = self.stop_new_generation(new)
        if new is not None and not _gunicorn.is_gone(new):
            raise ReloadFailed('aborting it, new master %d: %s; %s' % (self.new_pid, why, stopped))
        self.wait_workers_gone(workers)
        cleared = self.clear_upgrade_pidfile()
        _exit_code, cause = self.log_verdict()
        old = self.old_master_view()
        return 'aborted', ('aborted the pending upgrade: new master %d: %s%s; %s%s%s. The old master %d serves with '
                           'workers %s' % (self.new_pid, why, '. Cause: %s' % cause if cause else '', restored,
                                           stopped, cleared, old.pid, sorted(old.workers))), old

    def restore_pidfile(self):
        """Before the new master is stopped: the pidfile names the old master, again if an earlier run had handed
        it over."""
        named = self.pidfile_names()
        if named == self.before.pid:
            return ''
        if named != self.new_pid:
            raise ReloadFailed('aborting it, pidfile=%s names %s, neither the old master %d nor the new master %d; '
                               'nothing was stopped' % (self.pidfile, 'pid %d' % named if named else 'no PID',
                                                        self.before.pid, self.new_pid))
        try:
            _gunicorn.hand_over_pidfile(self.pidfile, self.before.pid)
        except (IOError, OSError) as exc:
            raise ReloadFailed('aborting it, pidfile=%s could not be made to name the old master %d again (%s), so '
                               'the new master %d was not stopped' % (self.pidfile, self.before.pid, exc, self.new_pid))
        return 'pidfile=%s names the old master %d again, ' % (self.pidfile, self.before.pid)

    def wait_workers_gone(self, workers):
        """Wait until the workers of the stopped new master ({pid: start ticks}) are gone too."""
        def left():
            return sorted(pid for pid, started in workers.items()
                          if _gunicorn.is_running(pid) and _proc.start_ticks(pid) == started)

        try:
            poll(lambda: None if left() else True, Deadline(ABORT_QUIT_SECONDS), self.poll_interval,
                 describe=lambda: 'workers %s of the stopped new master %d still run' % (left(), self.new_pid))
        except WaitTimeout as exc:
            raise ReloadFailed('aborting it, %s %gs after it exited' % (exc, ABORT_QUIT_SECONDS))


def predict_settle(pending, pidfile, timeout):
    """Check mode: ('finished' or 'aborted', a sentence) from one look, signalling nothing."""
    old, new = pending.old, pending.new
    if pending.old_stopping:
        return 'finished', ('would finish the pending upgrade: the old master %d has already been told to stop, so '
                            'only finishing leaves a master; would wait for the new master %d to be promoted'
                            % (old.pid, new.pid))
    booted, total = len(new.booted()), len(new.workers)
    if total and booted == total:
        return 'finished', ('would finish the pending upgrade: new master %d booted all %d of its workers; would '
                            '%ssend TERM to the old master %d and wait for the promotion'
                            % (new.pid, total, 'hand pidfile=%s over to it, ' % pidfile if pending.named == old.pid
                               else '', old.pid))
    return 'aborted', ('would abort the pending upgrade unless the workers of new master %d all boot within '
                       'timeout=%ss (%d of %d booted now): would %ssend TERM to the new master and keep the old '
                       'master %d'
                       % (new.pid, timeout, booted, total, 'make pidfile=%s name the old master again, ' % pidfile
                          if pending.named == new.pid else '', old.pid))


def wait_gone(master, seconds, interval):
    deadline = Deadline(seconds)
    while not _gunicorn.is_gone(master):
        if deadline.expired():
            return False
        time.sleep(min(interval, deadline.remaining()))
    return True


# ---------------------------------------------------------------- the module's run

class Failed(Exception):
    """Ends run(): the task fails with this message and the result gathered so far."""


def run(params, check_mode, systemctl=None, journalctl=None, warn=None):
    """gunicorn_reload with the module's ``params``, in check mode or not: (failed, result), its ``msg`` included.

    ``systemctl`` and ``journalctl`` are the programs' paths, None when missing; ``warn(text)`` takes the warnings
    (see Settings).
    """
    mode = params['mode']
    result = dict(changed=False, mode=mode, signals=[], elapsed=0.0, pending_settled=None, pending_detail=None)
    if mode == 'upgrade':
        result['pidfile_handover'] = False
    settings = Settings(params['pidfile'], params['timeout'], params['poll_interval'], systemctl, journalctl, warn)
    try:
        result['msg'] = _run(params, check_mode, settings, result)
    except Failed as exc:
        result['msg'] = str(exc)
        return True, result
    return False, result


def _run(params, check_mode, settings, result):
    """The message of a reload that succeeded; Failed otherwise. ``result`` gets what was seen and done."""
    mode = params['mode']
    pidfile = params['pidfile']
    error = timing_error(params['timeout'], params['poll_interval'])
    if error:
        raise Failed(error)

    pending = refusal = None
    try:
        settings.expected = _gunicorn.Expected.from_options(params.get('unit'), params.get('expected_user'),
                                                            settings.systemctl)
        master = _gunicorn.identify_master(pidfile, expected=settings.expected)
        describe_master(result, master, mode, settings)
        refusal = _gunicorn.pending_upgrade(master, pidfile)
        if refusal and params['pending_upgrade'] == 'fail':
            raise _gunicorn.GunicornError(refusal)
        if refusal:
            pending = _gunicorn.find_pending_upgrade(master, pidfile)
            if pending is None:
                raise _gunicorn.GunicornError(refusal)
    except _gunicorn.GunicornError as exc:
        raise Failed('%s%s; nothing was signalled' % ('cannot settle the pending upgrade: '
                                                      if params['pending_upgrade'] == 'settle' and refusal
                                                      else '', exc))

    settled = ([], 0.0)  # the signals and seconds of settling a pending upgrade
    if pending is not None:
        master, settled = settle_pending(pending, settings, check_mode, result)
    # Every message after settling starts with what settling did.
    said = (lambda text: '%s; then %s' % (result['pending_detail'], text)) if pending is not None else (lambda text: text)
    if mode == 'none':
        return result['pending_detail'] or ('gunicorn master %d (pidfile=%s) has no upgrade pending; mode=none: '
                                            'nothing to do' % (master.pid, pidfile))

    try:
        if pending is not None and not check_mode:
            # The master that serves now: the new one when the upgrade was finished, the old one when aborted.
            master = _gunicorn.identify_master(pidfile, expected=settings.expected)
            describe_master(result, master, mode, settings)
            refusal = _gunicorn.pending_upgrade(master, pidfile)
            if refusal:
                raise _gunicorn.GunicornError(refusal)
        if mode == 'upgrade' and not (pending is not None and check_mode):
            stale = _gunicorn.stale_upgrade_pidfile(pidfile, owners=_gunicorn.master_owners(master))
            if stale:
                raise _gunicorn.GunicornError(stale)
        if not master.workers:
            raise _gunicorn.GunicornError('pidfile=%s names %s, a gunicorn master without workers (starting or '
                                          'stopping)' % (pidfile, master.describe()))
        if mode == 'hup':
            refusal = hup_refusal(master, pidfile)
            if refusal:
                raise _gunicorn.GunicornError(refusal)
    except _gunicorn.GunicornError as exc:
        raise Failed(said('%s; no %s signal was sent' % (exc, mode) if pending is not None
                          else '%s; nothing was signalled' % exc))

    result['changed'] = True
    signal_name = 'USR2' if mode == 'upgrade' else 'HUP'
    if check_mode:
        steps = ['send %s to gunicorn master %d (pidfile=%s)' % (signal_name, master.pid, pidfile)]
        if mode == 'upgrade':
            steps.append('once the new workers booted, hand the pidfile over to the new master and send TERM to '
                         'the old one')
        if params['wait']:
            steps.append('wait for proof')
        return said('would %s' % ', then '.join(steps))

    try:
        driver = (UpgradeReload if mode == 'upgrade' else HupReload)(master, settings)
    except _gunicorn.GunicornError as exc:
        result['changed'] = pending is not None
        raise Failed(said('%s; no %s signal was sent' % (exc, mode) if pending is not None
                          else '%s; nothing was signalled' % exc))
    try:
        final = driver.run(params['wait'])
    except ReloadFailed as exc:
        finish(result, driver, settled)
        result.update(exc.details or {})
        raise Failed(said('%s failed after %.1fs: %s' % (mode, result['elapsed'], exc)))
    except WaitTimeout as exc:
        finish(result, driver, settled)
        details, _cause = driver.failure_details()
        result.update(details)
        raise Failed(said('%s not complete after timeout=%ss: %s' % (mode, params['timeout'], exc)))
    except (OSError, _gunicorn.GunicornError) as exc:
        finish(result, driver, settled)
        raise Failed(said('%s failed after %.1fs: %s' % (mode, result['elapsed'], exc)))

    finish(result, driver, settled)
    if final is None:
        return said('HUP sent to gunicorn master %d; not waiting for proof' % master.pid)
    if not params['wait']:
        result.update(master_pid=final.pid, workers_after=sorted(final.workers))
        return said('new master %d booted %d workers; TERM sent to the old master %d; not waiting for it to drain '
                    'and for the promotion' % (final.pid, len(final.workers), master.pid))
    result.update(master_pid=final.pid, workers_after=sorted(final.workers), completed_at=time.time())
    if mode == 'upgrade':
        return said('upgrade complete, master %d -> %d, %d workers booted in %.2fs%s' % (
            master.pid, final.pid, len(final.workers), result['elapsed'] - settled[1], driver.systemd_summary()))
    return said('hup complete, master %d, %d workers replaced and booted in %.2fs' % (
        final.pid, len(final.workers), result['elapsed'] - settled[1]))


def hup_refusal(master, pidfile):
    """Why HUP cannot load new code into ``master``, or None: a master that preloaded the application forks its
    new workers from the code it holds, and gunicorn never imports it again (its signals documentation, and
    gunicorn issue 2449)."""
    preload = _gunicorn.find_preload(master)
    if preload.value is False:
        return None
    if preload.value:
        return ('gunicorn master %d (pidfile=%s) preloads the application (preload_app, from %s): after HUP its new '
                'workers would serve the code it loaded at start, not the release; use mode=upgrade'
                % (master.pid, pidfile, preload.source))
    return ('cannot tell whether gunicorn master %d (pidfile=%s) preloads the application: %s; with preload_app, '
            'HUP keeps the old code serving, so it is not sent; use mode=upgrade' % (master.pid, pidfile, preload.source))


def describe_master(result, master, mode, settings):
    result.update(master_pid_before=master.pid, master_pid=master.pid, workers_before=sorted(master.workers))
    if mode == 'upgrade':
        result.update(systemd_unit=settings.unit_of(master), systemd_main_pid=None)


def settle_pending(pending, settings, check_mode, result):
    """Settle the pending upgrade (SettlePending), or in check mode say how, signalling nothing.

    Returns the master serving afterwards (in check mode, the one that would) and (signals, seconds) of settling;
    Failed when settling cannot be proven.
    """
    result.update(changed=True, pending_masters=dict(old=pending.old.pid, new=pending.new.pid))
    if check_mode:
        decision, detail = predict_settle(pending, settings.pidfile, settings.timeout)
        result.update(pending_settled=decision, pending_detail=detail)
        return (pending.new if decision == 'finished' else pending.old), ([], 0.0)
    try:
        driver = SettlePending(pending, settings)
    except _gunicorn.GunicornError as exc:
        result['changed'] = False
        raise Failed('cannot settle the pending upgrade: %s; nothing was signalled' % exc)
    failure = None
    try:
        decision, detail, serving = driver.settle()
    except ReloadFailed as exc:
        result.update(exc.details or {})
        failure = str(exc)
    except (WaitTimeout, OSError, _gunicorn.GunicornError) as exc:
        failure = str(exc)
    result['signals'] = list(driver.signals)
    result['elapsed'] = round(driver.deadline.elapsed(), 3) if driver.deadline else 0.0
    if failure is not None:
        result['changed'] = bool(driver.signals) or driver.pidfile_handover
        raise Failed('settling the pending upgrade (old master %d, new master %d) failed after %.1fs: %s'
                     % (pending.old.pid, pending.new.pid, result['elapsed'], failure))
    result.update(pending_settled=decision, pending_detail=detail, master_pid=serving.pid)
    return serving, (list(driver.signals), result['elapsed'])


def finish(result, driver, settled=([], 0.0)):
    result['signals'] = settled[0] + list(driver.signals)
    result['elapsed'] = round(settled[1] + (driver.deadline.elapsed() if driver.deadline else 0.0), 3)
    if isinstance(driver, UpgradeReload):
        result.update(pidfile_handover=driver.pidfile_handover, systemd_unit=driver.systemd_unit,
                      systemd_main_pid=driver.systemd_main_pid)

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: gunicorn_reload
short_description: Reload or upgrade one gunicorn master and wait for proof that every worker booted the new code
version_added: 0.1.0
description:
  - Proves from C(/proc) that the PID in O(pidfile) is a live gunicorn master (command line, parent, and the
    heartbeat files its workers share with it) before sending any signal. A stale pidfile, a reused PID or a
    worker's PID fails the task naming the pidfile and what the PID really is, and nothing is signalled.
  - O(mode=upgrade) sends C(USR2). gunicorn starts a new master beside the old one, with its own workers
    importing the release. Once all of them booted, the module sends C(TERM) to the old master, which lets
    its workers finish their requests and exits; the new master is then promoted and the pidfile names it.
    A release that cannot boot never replaces the old master. The module stops what is left of the new
    generation, the old master keeps serving, and the task fails with the cause from gunicorn's log.
  - Just before that C(TERM), O(mode=upgrade) hands the pidfile over to the new master. It writes a file
    naming the new master beside O(pidfile), with the old file's owner and group and mode C(0644), and renames
    it over O(pidfile), so that no reader ever sees the pidfile missing. The owner must be kept (the module
    runs as root or as the user gunicorn runs as); a group that cannot be kept is left as it comes. This is
    done only when O(pidfile) still names the old master, otherwise the task fails and nothing is stopped. If
    the file cannot be written, the upgrade is aborted like one whose release cannot boot. The old master
    then leaves the pidfile alone (gunicorn removes it only when it names the master that exits), and the
    promoted master finds its own PID there and keeps it.
  - The handover is what lets systemd follow the upgrade (gunicorn issue 2856). When the main process of a
    unit exits, systemd re-reads the unit's C(PIDFile=) and makes the PID it names the new main process. If
    the pidfile still named the old master, or the unit had no C(PIDFile=), systemd would treat the service
    as dead, kill the new master with the rest of the unit, and restart it.
  - Proof under systemd. Before C(USR2) the module reads C(/proc/PID/cgroup) of the old master. When the master
    runs in a system service (C(NAME.service)) and C(systemctl) is available, it records the unit's
    C(NRestarts). After the upgrade it waits until systemd reports the new master as C(MainPID), the unit
    C(active), and no restart. Otherwise the task fails saying that systemd did not follow the new master.
  - O(mode=hup) sends C(HUP). The master reloads its configuration, starts new workers and stops the old ones
    gracefully. A release that cannot boot makes gunicorn halt the master, and the service goes down. The
    module detects it at once and fails saying so. Deploy code with O(mode=upgrade).
  - A worker counts as booted when it has touched its heartbeat file, which gunicorn workers do only from
    their request loop, after the application loaded and C(post_worker_init) ran. This works on every
    gunicorn version from 20.1 to 27 and needs no hook or setting. gunicorn 27's control socket is not used.
    Its default path is shared by every master of a user, including the two of an upgrade, and its C(booted)
    flag reads false for sync workers that serve.
  - An upgrade an earlier run left pending (C(USR2) sent, the new master running beside the old one, which was
    not stopped or has not exited yet) makes the task fail, naming both masters, unless
    O(pending_upgrade=settle). The module then settles it before the reload O(mode) asks for. It finishes the
    upgrade when every worker of the new master boots within O(timeout), which is the proof an upgrade waits
    for, and aborts it otherwise. Finishing is the upgrade's own end. The pidfile is handed over to the new
    master (unless the earlier run did so), the old master gets C(TERM), the module waits for it to exit and
    for the new master's promotion, and under systemd for C(MainPID) to name the new master. Aborting makes the
    pidfile name the old master again (when the earlier run had handed it over), sends C(TERM) to the new
    master, waits for it and its workers to exit (C(QUIT) after 35 seconds, as an aborted upgrade does) and
    removes C(<pidfile>.2). The old master keeps serving untouched.
  - An old master that was already told to stop (it closed the listening sockets it shares with the new
    master) leaves finishing as the only choice, whatever the new workers do.
  - Before settling, the new master is proven from both sides. It must be a live gunicorn process, a child of
    the old master, exec'd with C(GUNICORN_PID) naming it, and C(<pidfile>.2) must name it. Otherwise the task
    fails and nothing is signalled. Each signal goes only to a master whose PID still has the start time it had
    when it was proven.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.linux
attributes:
  check_mode:
    support: full
    details:
      - Proves the master's identity and checks for a pending upgrade, then reports the signal it would send;
        sends nothing and writes nothing (no pidfile handover).
      - With O(pending_upgrade=settle) and an upgrade pending, it reports whether it would finish or abort that
        upgrade, from one look at the new master's workers (RV(pending_settled), RV(pending_detail)). A new
        master whose workers have not all booted yet is reported as to be aborted unless they boot within
        O(timeout).
  diff_mode:
    support: none
options:
  pidfile:
    description:
      - The master's pidfile (gunicorn's C(--pid)). During an upgrade gunicorn writes the new master's PID to
        this path with C(.2) appended and renames that file when the new master is promoted.
    type: path
    required: true
  mode:
    description:
      - V(hup) reloads the configuration and replaces all workers (C(HUP)). Old workers are told to stop as soon
        as the new ones are forked, so requests wait in the listen queue while the new ones import the code. A
        release that cannot boot takes the service down.
      - V(upgrade) starts a new master and workers beside the old ones (C(USR2)), stops the old master
        (C(TERM)) only when every new worker booted, and waits until the new master is promoted. It serves with
        the old workers until the new ones are ready and keeps the old master when the release is broken.
      - V(none) sends no reload signal. With O(pending_upgrade=settle) the module settles a pending upgrade and
        stops there; otherwise it only proves the master's identity.
    type: str
    choices: [hup, upgrade, none]
    default: hup
  pending_upgrade:
    description:
      - What to do when an upgrade is pending, started by C(USR2) and neither finished nor aborted (an earlier run
        was interrupted, or someone sent C(USR2) by hand).
      - V(fail) fails the task naming both masters and signals nothing.
      - V(settle) finishes that upgrade when every worker of the new master boots within O(timeout), and aborts it
        otherwise (see the description). Then the reload O(mode) asks for runs on the master that serves, as
        usual, with a timeout of its own; with O(mode=none) nothing more is done.
      - Settling always waits for its proof, whatever O(wait) says. A reload cannot begin before one master is
        proven.
    type: str
    choices: [fail, settle]
    default: fail
  wait:
    description:
      - Wait for the proof. With V(false) and O(mode=hup) the module returns once C(HUP) is sent.
      - With V(false) and O(mode=upgrade) the module still waits for the new workers to boot (stopping the old
        master earlier would be unsafe), hands the pidfile over, sends C(TERM) to the old master, and returns
        without waiting for it to drain, for the promotion and for systemd.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the proof. It should exceed the application's start-up time plus the longest
        request (old workers finish their requests before they exit).
      - For O(mode=upgrade), a new generation not ready within it is stopped and the old master kept.
    type: float
    default: 300
  poll_interval:
    description:
      - Seconds between two looks at C(/proc) while waiting.
    type: float
    default: 0.1
notes:
  - The module must run on the host of the master, as the user gunicorn runs as or as root, to read C(/proc)
    and send signals.
  - Root needs no C(CAP_SYS_PTRACE), which containers drop by default. When C(/proc) denies root the
    descriptors, environment or working directory of a gunicorn process, a child process that takes that
    process's user and group (no other groups, no capabilities) reads them and is killed after 5 seconds at
    most. That works for a gunicorn started as its user, for example with systemd C(User=). Workers that
    gunicorn switches to another user itself (its C(user) setting) are not dumpable, and only
    C(CAP_SYS_PTRACE) lets root read them; the task fails saying so.
  - gunicorn's C(graceful_timeout) (default 30 seconds) bounds how long old workers may finish their requests;
    requests running longer are killed by gunicorn, whatever the module waits.
  - With C(preload_app), C(HUP) does not load new code (the master holds it); use O(mode=upgrade).
  - Under systemd, O(mode=upgrade) needs a unit with C(Type=notify) (gunicorn notifies readiness; keep the
    default C(NotifyAccess=main)) or C(Type=forking), and C(PIDFile=) set to the same path as gunicorn's
    C(pidfile) and O(pidfile). The handover was verified with systemd 252 (Debian 12) and gunicorn 27.
    Without C(PIDFile=) the unit is restarted at every upgrade, which the module reports as a failure. The
    collection's gunicorn role provides such a unit.
  - The systemd proof is skipped when the master runs outside a system service (no service in its cgroup, a
    user manager's unit, a container without systemd), when C(systemctl) is missing, when it cannot read
    the unit before C(USR2) (a warning says so), and with O(wait=false). When systemd's C(MainPID) was not
    the old master before the upgrade, for example with a wrapper script, only C(ActiveState) and
    C(NRestarts) are checked.
  - Each C(systemctl) run is given 30 seconds and each C(journalctl) run 10; the command is then killed. A
    C(systemctl) that does not answer before C(USR2) skips the systemd proof with a warning, and afterwards fails
    the task naming the command. A C(journalctl) that does not answer leaves the cause of a failure unknown.
  - The cause of a failure comes from the files the master writes its log to, found in C(/proc), or, for a
    master in a systemd service that writes no log file (gunicorn's default C(errorlog) is stderr, which
    systemd sends to the journal), from the unit's journal since the first signal (C(journalctl --unit)).
    A master logging to syslog gives only the exit code.
seealso:
  - module: graceful.wsgi.gunicorn_info
  - name: gunicorn signal handling
    description: The signals this module sends and what gunicorn does with them.
    link: https://docs.gunicorn.org/en/stable/signals.html
'''

EXAMPLES = r'''
- name: Deploy new code - new master beside the old one, old one stopped once the new workers booted
  graceful.wsgi.gunicorn_reload:
    pidfile: /run/myapp/gunicorn.pid
    mode: upgrade
    timeout: 120

- name: Reload the configuration only (the code must be able to boot, or gunicorn halts)
  graceful.wsgi.gunicorn_reload:
    pidfile: /run/myapp/gunicorn.pid
    mode: hup

- name: Finish or abort an upgrade an interrupted run left pending, then upgrade to the current release
  graceful.wsgi.gunicorn_reload:
    pidfile: /run/myapp/gunicorn.pid
    mode: upgrade
    pending_upgrade: settle
    timeout: 120

- name: Only settle a pending upgrade, if there is one
  graceful.wsgi.gunicorn_reload:
    pidfile: /run/myapp/gunicorn.pid
    mode: none
    pending_upgrade: settle

- name: Send HUP and return at once
  graceful.wsgi.gunicorn_reload:
    pidfile: /run/myapp/gunicorn.pid
    wait: false
'''

RETURN = r'''
mode:
  description: The mode used.
  returned: always
  type: str
  sample: upgrade
master_pid_before:
  description: PID of the master the pidfile named before the reload; after settling a pending upgrade, the master
    that served once it was settled.
  returned: when the master was identified
  type: int
  sample: 4120
master_pid:
  description: PID of the master serving when the module returned; the new master after an upgrade.
  returned: when the master was identified
  type: int
  sample: 4398
workers_before:
  description: PIDs of the master's workers before the reload.
  returned: when the master was identified
  type: list
  elements: int
  sample: [4121, 4122, 4123, 4124]
workers_after:
  description: PIDs of the serving master's workers when the module returned, every one of them booted on success.
  returned: when the module waited
  type: list
  elements: int
  sample: [4399, 4400, 4401, 4402]
elapsed:
  description: Seconds from the first signal to the proof of completion (or to the failure). Settling a pending
    upgrade counts from the start of settling, its wait for the new workers included.
  returned: always
  type: float
  sample: 3.2
completed_at:
  description: Epoch time at which the proof was observed.
  returned: on success with O(wait=true)
  type: float
  sample: 1795343405.18
signals:
  description: The signals sent, in order, as C(SIGNAL pid), those of settling a pending upgrade first.
  returned: always
  type: list
  elements: str
  sample: ["USR2 4120", "TERM 4120"]
pidfile_handover:
  description: Whether the module rewrote O(pidfile) to name the new master just before stopping the old one.
  returned: when O(mode=upgrade)
  type: bool
  sample: true
systemd_unit:
  description: The system service the old master ran in, read from its C(/proc/PID/cgroup); null when none.
  returned: when O(mode=upgrade) and the master was identified
  type: str
  sample: myapp.service
systemd_main_pid:
  description: The C(MainPID) systemd reported for RV(systemd_unit) after the upgrade; null when it was not asked.
  returned: when O(mode=upgrade) and the master was identified
  type: int
  sample: 4398
pending_settled:
  description:
    - V(finished) or V(aborted) when a pending upgrade was settled (O(pending_upgrade=settle)); null when none was
      pending or settling failed.
    - In check mode, what the module would do.
  returned: always
  type: str
  sample: finished
pending_detail:
  description: What settling the pending upgrade did (or, in check mode, would do), in one sentence; null when none
    was pending.
  returned: always
  type: str
  sample: "finished the pending upgrade: new master 4398 (all 4 of its workers booted); handed pidfile=/run/myapp/gunicorn.pid
    over to it, sent TERM to the old master 4120, which exited; the new master was promoted and serves with 4 workers"
pending_masters:
  description: The two masters of the pending upgrade found, as proven before anything was signalled.
  returned: when an upgrade was pending and O(pending_upgrade=settle)
  type: dict
  contains:
    old:
      description: PID of the old master.
      type: int
    new:
      description: PID of the new master started by C(USR2).
      type: int
  sample: {"old": 4120, "new": 4398}
exit_code:
  description: Exit code of the workers that failed to boot, read from gunicorn's log (3 worker boot error,
    4 application import error).
  returned: on failure, when the log shows it
  type: int
  sample: 3
log_tail:
  description: The last lines the master's log files got after the first signal.
  returned: on failure, when a log file is known
  type: list
  elements: str
msg:
  description: What happened.
  returned: always
  type: str
  sample: upgrade complete, master 4120 -> 4398, 4 workers booted in 3.20s; systemd unit myapp.service follows it
    (MainPID 4398, not restarted)
'''

import errno
import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _proc, _systemd
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline, WaitTimeout, poll

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


class ReloadFailed(Exception):
    pass


class PidfileHandoverFailed(Exception):
    """The pidfile could not be rewritten: the upgrade is aborted before the old master is stopped."""


class SystemdUnit:
    """The system service the old master runs in, as ``systemctl show`` reports it."""

    def __init__(self, name, systemctl):
        self.name = name
        self.systemctl = systemctl

    def show(self):
        """{property: value} for SYSTEMD_PROPERTIES; SystemdError when systemctl fails or does not answer in time."""
        command = [self.systemctl, 'show', '--property=%s' % ','.join(SYSTEMD_PROPERTIES), self.name]
        rc, out, err = _systemd.run(command)
        if rc != 0:
            raise _systemd.SystemdError('%s failed (rc=%d): %s' % (' '.join(command), rc, (err or out or '').strip()))
        return _systemd.parse_show(out)


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
    return _systemd.unit_from_cgroup(_proc.read_text(os.path.join(_gunicorn.PROC, str(pid), 'cgroup')))


class Reload:
    """Drives one reload: sends signals only to processes proven to be the masters involved."""

    def __init__(self, module, master):
        self.module = module
        self.params = module.params
        self.pidfile = module.params['pidfile']
        self.poll_interval = module.params['poll_interval']
        self.before = master
        self.old_workers = sorted(master.workers)
        self.signals = []
        self.log = _gunicorn.LogWatch(_gunicorn.written_files(master.pid))
        self.systemd_unit = service_of(master.pid)
        self.journal = self.unit_journal() if not self.log.offsets else None
        self.listeners = _gunicorn.socket_inodes(master.pid)
        self.last = master
        self.deadline = None

    # ------------------------------------------------------------ helpers

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
        journalctl = self.module.get_bin_path('journalctl') if self.systemd_unit else None
        return JournalWatch(self.systemd_unit, journalctl) if journalctl else None

    def log_lines(self):
        return self.log.new_lines()

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
        self.deadline = Deadline(self.params['timeout'])
        self.send(self.before, signal.SIGHUP)
        if not wait:
            return None
        return self.poll(self.probe, self.describe_timeout)

    def down(self, how):
        details, cause = self.failure_details()
        message = ('after HUP the gunicorn master %d %s: the service is DOWN, no gunicorn serves pidfile=%s. Cause: %s. '
                   'gunicorn halts when new workers cannot boot; deploy code with mode=upgrade, which keeps the old '
                   'master serving' % (self.before.pid, how, self.pidfile, self.cause_text(cause)))
        raise ReloadFailedWith(message, details)

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
        old_left = set(self.old_workers) & set(current.workers)
        if not old_left and current.workers and len(current.booted()) == len(current.workers):
            return current
        return None

    def describe_timeout(self):
        current = self.last
        old_left = sorted(set(self.old_workers) & set(current.workers))
        waiting = sorted(pid for pid, ready in current.workers.items() if not ready)
        return 'old workers still running: %s; new workers not booted: %s' % (old_left or 'none', waiting or 'none')


class UpgradeReload(Reload):

    def __init__(self, module, master):
        super(UpgradeReload, self).__init__(module, master)
        self.new_pid = None
        self.new = None
        self.stable_since = None
        self.seen_workers = None
        self.pidfile_handover = False
        self.unit = None            # a SystemdUnit once systemd answered about it before USR2
        self.systemd_before = {}
        self.systemd_main_pid = None

    def run(self, wait):
        self.watch_systemd()
        self.deadline = Deadline(self.params['timeout'])
        self.send(self.before, signal.SIGUSR2)
        self.new_pid = self.poll(self.probe_new_master, self.describe_no_new_master)
        try:
            self.new = self.poll(self.probe_new_ready, self.describe_new_not_ready)
        except WaitTimeout as exc:
            self.abort('its workers did not all boot within timeout=%ss (%s)' % (self.params['timeout'], exc))
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
            named = _gunicorn.read_pidfile('pidfile', self.pidfile)
            problem = 'pidfile=%s names pid %d, not the old master %d,' % (self.pidfile, named, self.before.pid)
        except _gunicorn.GunicornError as exc:
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
        systemctl = self.module.get_bin_path('systemctl')
        if not systemctl:
            return
        unit = SystemdUnit(self.systemd_unit, systemctl)
        try:
            before = unit.show()
        except _systemd.SystemdError as exc:
            self.module.warn('gunicorn master %d runs in %s, but systemd cannot be asked about it (%s): not checking '
                             'that systemd follows the upgrade' % (self.before.pid, self.systemd_unit, exc))
            return
        state = before.get('ActiveState') or 'unknown'
        if state != 'active':
            self.module.warn('gunicorn master %d runs in %s, which systemd reports as ActiveState=%s: not checking '
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
            raise ReloadFailedWith('gunicorn master %d ignored USR2 (its log says so): an upgrade is already under '
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
        workers = frozenset(new.workers)
        if workers != self.seen_workers:
            self.seen_workers = workers
            self.stable_since = time.monotonic()
        if not workers or len(new.booted()) != len(workers):
            return None
        if len(workers) >= len(self.old_workers) or time.monotonic() - self.stable_since >= SETTLE_SECONDS:
            return new
        return None

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
            raise ReloadFailedWith('the new master %d exited after the old master %d was told to stop: check the '
                                   'service, it may be down. Cause: %s%s'
                                   % (self.new_pid, self.before.pid, self.cause_text(cause), self.systemd_hint()),
                                   details)
        self.new = new
        if not _gunicorn.is_gone(self.before):
            return None
        try:
            named = _gunicorn.read_pidfile('pidfile', self.pidfile)
        except _gunicorn.GunicornError:
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
            raise ReloadFailedWith('the old gunicorn master %d exited during the upgrade; check the service. Cause: %s'
                                   % (self.before.pid, self.cause_text(cause)), details)
        self.last = current
        return current

    def fail_new_generation(self, how):
        """The new master is gone: make sure the old one still serves, and fail with the cause."""
        details, cause = self.failure_details()
        old = self.old_master_view()
        raise ReloadFailedWith(
            'upgrade failed: the new master%s %s%s. Cause: %s. The old master %d still serves with workers %s; '
            'nothing was replaced' % (' %d' % self.new_pid if self.new_pid else '', how, self.clear_upgrade_pidfile(),
                                      self.cause_text(cause), old.pid, sorted(old.workers)),
            details)

    def clear_upgrade_pidfile(self):
        """Remove ``<pidfile>.2`` left by a dead new master (gunicorn crashes while halting and leaves it)."""
        path = self.pidfile + '.2'
        try:
            named = _gunicorn.read_pidfile('pidfile', path)
        except _gunicorn.GunicornError:
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
        raise ReloadFailedWith(
            'upgrade aborted, new master %d: %s; %s%s. Cause: %s. The old master %d still serves with workers %s'
            % (self.new_pid, why, stopped, self.clear_upgrade_pidfile(), self.cause_text(cause),
               old.pid, sorted(old.workers)),
            details)

    def stop_new_generation(self, new):
        """TERM the new master ``new`` (a Master, None once gone), QUIT when it outlives ABORT_GRACE_SECONDS;
        says how it went. gunicorn's master stops its workers before it exits."""
        if new is None or new.info.ppid != self.before.pid:
            return 'it had exited'
        self.send(new, signal.SIGTERM)
        if wait_gone(new, ABORT_GRACE_SECONDS, self.poll_interval):
            return 'stopped it (TERM)'
        self.send(new, signal.SIGQUIT)
        if wait_gone(new, ABORT_QUIT_SECONDS, self.poll_interval):
            return 'stopped it (TERM, then QUIT after %ds)' % ABORT_GRACE_SECONDS
        return 'told it to stop (TERM, QUIT) but it is still running'


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

    def __init__(self, module, pending):
        super(SettlePending, self).__init__(module, pending.old)
        self.pending = pending
        self.proven_new = pending.new
        self.new_pid = pending.new.pid
        self.new = pending.new

    def settle(self):
        """('finished' or 'aborted', a sentence, the Master serving afterwards). ReloadFailed or WaitTimeout when
        neither could be proven; the message names the step."""
        self.watch_systemd()
        self.deadline = Deadline(self.params['timeout'])
        if self.pending.old_stopping:
            return self.finish_pending('the old master %d had already been told to stop (it closed its listening '
                                       'sockets), so only finishing leaves a master' % self.before.pid)
        try:
            ready = self.poll(self.probe_new_ready, self.describe_new_not_ready)
        except WaitTimeout as exc:
            return self.abort_pending('its workers did not all boot within timeout=%ss (%s)'
                                      % (self.params['timeout'], exc))
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
                self.module.warn('the old master %d is stopping and pidfile=%s could not be handed over to the new '
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
                               % (self.new_pid, self.params['timeout'], exc))
        if self.unit is not None:
            self.wait_systemd_follows(promoted)
        return 'finished', ('finished the pending upgrade: new master %d (%s); %s%s, which exited; the new master '
                            'was promoted and serves with %d workers%s'
                            % (self.new_pid, why, 'handed pidfile=%s over to it, ' % self.pidfile
                               if self.pidfile_handover else '', told, len(promoted.workers),
                               self.systemd_summary())), promoted

    def pidfile_names(self):
        try:
            return _gunicorn.read_pidfile('pidfile', self.pidfile)
        except _gunicorn.GunicornError:
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
        workers = dict((pid, _gunicorn.start_ticks(pid)) for pid in (new.workers if new else ()))
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
                          if _gunicorn.is_running(pid) and _gunicorn.start_ticks(pid) == started)

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


class ReloadFailedWith(ReloadFailed):
    def __init__(self, message, details):
        super(ReloadFailedWith, self).__init__(message)
        self.details = details


def wait_gone(master, seconds, interval):
    deadline = Deadline(seconds)
    while not _gunicorn.is_gone(master):
        if deadline.expired():
            return False
        time.sleep(min(interval, deadline.remaining()))
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pidfile=dict(type='path', required=True),
            mode=dict(type='str', default='hup', choices=['hup', 'upgrade', 'none']),
            pending_upgrade=dict(type='str', default='fail', choices=['fail', 'settle']),
            wait=dict(type='bool', default=True),
            timeout=dict(type='float', default=300),
            poll_interval=dict(type='float', default=0.1),
        ),
        supports_check_mode=True,
    )
    params = module.params
    mode = params['mode']
    pidfile = params['pidfile']
    result = dict(changed=False, mode=mode, signals=[], elapsed=0.0, pending_settled=None, pending_detail=None)
    if mode == 'upgrade':
        result['pidfile_handover'] = False
    if params['timeout'] <= 0:
        module.fail_json(msg='timeout=%s: must be positive' % params['timeout'], **result)
    if params['poll_interval'] <= 0:
        module.fail_json(msg='poll_interval=%s: must be positive' % params['poll_interval'], **result)

    pending = refusal = None
    try:
        master = _gunicorn.identify_master(pidfile)
        describe_master(result, master, mode)
        refusal = _gunicorn.pending_upgrade(master, pidfile)
        if refusal and params['pending_upgrade'] == 'fail':
            raise _gunicorn.GunicornError(refusal)
        if refusal:
            pending = _gunicorn.find_pending_upgrade(master, pidfile)
            if pending is None:
                raise _gunicorn.GunicornError(refusal)
    except _gunicorn.GunicornError as exc:
        module.fail_json(msg='%s%s; nothing was signalled' % ('cannot settle the pending upgrade: '
                                                              if params['pending_upgrade'] == 'settle' and refusal
                                                              else '', exc), **result)

    settled = ([], 0.0)  # the signals and seconds of settling a pending upgrade
    if pending is not None:
        master, settled = settle_pending(module, pending, result)
    # Every message after settling starts with what settling did.
    said = (lambda text: '%s; then %s' % (result['pending_detail'], text)) if pending is not None else (lambda text: text)
    if mode == 'none':
        result['msg'] = result['pending_detail'] or ('gunicorn master %d (pidfile=%s) has no upgrade pending; mode=none: '
                                                     'nothing to do' % (master.pid, pidfile))
        module.exit_json(**result)

    try:
        if pending is not None and not module.check_mode:
            # The master that serves now: the new one when the upgrade was finished, the old one when aborted.
            master = _gunicorn.identify_master(pidfile)
            describe_master(result, master, mode)
            refusal = _gunicorn.pending_upgrade(master, pidfile)
            if refusal:
                raise _gunicorn.GunicornError(refusal)
        if mode == 'upgrade' and not (pending is not None and module.check_mode):
            stale = _gunicorn.stale_upgrade_pidfile(pidfile)
            if stale:
                raise _gunicorn.GunicornError(stale)
        if not master.workers:
            raise _gunicorn.GunicornError('pidfile=%s names %s, a gunicorn master without workers (starting or '
                                          'stopping)' % (pidfile, master.describe()))
    except _gunicorn.GunicornError as exc:
        module.fail_json(msg=said('%s; no %s signal was sent' % (exc, mode) if pending is not None
                                  else '%s; nothing was signalled' % exc), **result)

    result['changed'] = True
    signal_name = 'USR2' if mode == 'upgrade' else 'HUP'
    if module.check_mode:
        steps = ['send %s to gunicorn master %d (pidfile=%s)' % (signal_name, master.pid, pidfile)]
        if mode == 'upgrade':
            steps.append('once the new workers booted, hand the pidfile over to the new master and send TERM to '
                         'the old one')
        if params['wait']:
            steps.append('wait for proof')
        result['msg'] = said('would %s' % ', then '.join(steps))
        module.exit_json(**result)

    try:
        driver = (UpgradeReload if mode == 'upgrade' else HupReload)(module, master)
    except _gunicorn.GunicornError as exc:
        result['changed'] = pending is not None
        module.fail_json(msg=said('%s; no %s signal was sent' % (exc, mode) if pending is not None
                                  else '%s; nothing was signalled' % exc), **result)
    try:
        final = driver.run(params['wait'])
    except ReloadFailedWith as exc:
        finish(result, driver, settled)
        result.update(exc.details)
        module.fail_json(msg=said('%s failed after %.1fs: %s' % (mode, result['elapsed'], exc)), **result)
    except ReloadFailed as exc:
        finish(result, driver, settled)
        module.fail_json(msg=said('%s failed after %.1fs: %s' % (mode, result['elapsed'], exc)), **result)
    except WaitTimeout as exc:
        finish(result, driver, settled)
        details, _cause = driver.failure_details()
        result.update(details)
        module.fail_json(msg=said('%s not complete after timeout=%ss: %s' % (mode, params['timeout'], exc)), **result)
    except (OSError, _gunicorn.GunicornError) as exc:
        finish(result, driver, settled)
        module.fail_json(msg=said('%s failed after %.1fs: %s' % (mode, result['elapsed'], exc)), **result)

    finish(result, driver, settled)
    if final is None:
        result['msg'] = 'HUP sent to gunicorn master %d; not waiting for proof' % master.pid
    elif not params['wait']:
        result.update(master_pid=final.pid, workers_after=sorted(final.workers))
        result['msg'] = ('new master %d booted %d workers; TERM sent to the old master %d; not waiting for it to '
                         'drain and for the promotion' % (final.pid, len(final.workers), master.pid))
    else:
        result.update(master_pid=final.pid, workers_after=sorted(final.workers), completed_at=time.time())
        if mode == 'upgrade':
            result['msg'] = 'upgrade complete, master %d -> %d, %d workers booted in %.2fs%s' % (
                master.pid, final.pid, len(final.workers), result['elapsed'] - settled[1], driver.systemd_summary())
        else:
            result['msg'] = 'hup complete, master %d, %d workers replaced and booted in %.2fs' % (
                final.pid, len(final.workers), result['elapsed'] - settled[1])
    result['msg'] = said(result['msg'])
    module.exit_json(**result)


def describe_master(result, master, mode):
    result.update(master_pid_before=master.pid, master_pid=master.pid, workers_before=sorted(master.workers))
    if mode == 'upgrade':
        result.update(systemd_unit=service_of(master.pid), systemd_main_pid=None)


def settle_pending(module, pending, result):
    """Settle the pending upgrade (SettlePending), or in check mode say how, signalling nothing.

    Returns the master serving afterwards (in check mode, the one that would) and (signals, seconds) of settling;
    fails the module when settling cannot be proven.
    """
    params = module.params
    result.update(changed=True, pending_masters=dict(old=pending.old.pid, new=pending.new.pid))
    if module.check_mode:
        decision, detail = predict_settle(pending, params['pidfile'], params['timeout'])
        result.update(pending_settled=decision, pending_detail=detail)
        return (pending.new if decision == 'finished' else pending.old), ([], 0.0)
    try:
        driver = SettlePending(module, pending)
    except _gunicorn.GunicornError as exc:
        result['changed'] = False
        module.fail_json(msg='cannot settle the pending upgrade: %s; nothing was signalled' % exc, **result)
    failure = None
    try:
        decision, detail, serving = driver.settle()
    except ReloadFailedWith as exc:
        result.update(exc.details)
        failure = str(exc)
    except (ReloadFailed, WaitTimeout, OSError, _gunicorn.GunicornError) as exc:
        failure = str(exc)
    result['signals'] = list(driver.signals)
    result['elapsed'] = round(driver.deadline.elapsed(), 3) if driver.deadline else 0.0
    if failure is not None:
        result['changed'] = bool(driver.signals) or driver.pidfile_handover
        module.fail_json(msg='settling the pending upgrade (old master %d, new master %d) failed after %.1fs: %s'
                         % (pending.old.pid, pending.new.pid, result['elapsed'], failure), **result)
    result.update(pending_settled=decision, pending_detail=detail, master_pid=serving.pid)
    return serving, (list(driver.signals), result['elapsed'])


def finish(result, driver, settled=([], 0.0)):
    result['signals'] = settled[0] + list(driver.signals)
    result['elapsed'] = round(settled[1] + (driver.deadline.elapsed() if driver.deadline else 0.0), 3)
    if isinstance(driver, UpgradeReload):
        result.update(pidfile_handover=driver.pidfile_handover, systemd_unit=driver.systemd_unit,
                      systemd_main_pid=driver.systemd_main_pid)


if __name__ == '__main__':
    main()

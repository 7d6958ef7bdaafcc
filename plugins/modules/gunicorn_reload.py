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
  - Whom the pidfile may name. The directory of the pidfile usually belongs to the application's user, who can
    write any PID into it, such as the master of another application. With O(unit) the master must be the main
    process systemd reports for that unit (C(MainPID)), or the new master of an upgrade of it (its child, started
    by C(USR2)), and it must run in the unit's cgroup. The master must run as O(expected_user) when it is given;
    otherwise as the unit's main process does, and without O(unit) as the user who owns the pidfile. The pidfile
    must belong to that user or to root, and one that does not is not read. Otherwise the task
    fails, naming the pidfile, the process it names, the user that process runs as and whom it should have named,
    and nothing is signalled. Only O(unit) tells apart two applications run by the same user.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.linux
  - graceful.wsgi.timing
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
        Refused, before any signal, on a master that preloaded the application (C(preload_app)), or when that
        cannot be told, since its new workers would serve the code it loaded at start.
      - V(upgrade) starts a new master and workers beside the old ones (C(USR2)), stops the old master
        (C(TERM)) only when every new worker booted, and waits until the new master is promoted. It serves with
        the old workers until the new ones are ready and keeps the old master when the release is broken.
      - V(none) sends no reload signal. With O(pending_upgrade=settle) the module settles a pending upgrade and
        stops there; otherwise it only proves the master's identity.
    type: str
    choices: [hup, upgrade, none]
    default: hup
  unit:
    description:
      - The systemd service the master runs in, with or without C(.service), for example V(myapp). The master is
        then the one systemd knows, not merely a gunicorn process. The pidfile must name the unit's C(MainPID) (or
        the new master of an upgrade it started) and that process must run in the unit's cgroup. Recommended
        whenever gunicorn runs under systemd; the collection's gunicorn role sets it.
      - Needs C(systemctl) on the host; each identification asks C(systemctl show) once (within 30 seconds).
      - Only ASCII letters, digits, a backslash and the characters C(:_.@-) are allowed, and no leading C(-).
    type: str
  expected_user:
    description:
      - The user (a name or a uid) the master runs as. Without it, the user of the unit's main process with
        O(unit), else the user who owns O(pidfile).
      - Give it when the pidfile belongs to root, or with O(unit) to require a user as well.
    type: str
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
    default: 300
notes:
  - O(timeout) bounds the wait for the proof. It should exceed the application's start-up time plus the longest
    request (old workers finish their requests before they exit). For O(mode=upgrade), a new generation not ready
    within it is stopped and the old master kept. While waiting, the module looks at C(/proc) every
    O(poll_interval) seconds.
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
  - With C(preload_app), C(HUP) does not load new code. The master holds it, and forks the new workers from it.
    O(mode=hup) is therefore refused before any signal when the master preloaded the application, and when that
    cannot be told. The message names where it was read, or why it cannot be told (see
    RV(graceful.wsgi.gunicorn_info#module:preload_app)), and points to O(mode=upgrade).
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

- name: Deploy new code to the master of the systemd unit myapp.service, and only to it
  graceful.wsgi.gunicorn_reload:
    pidfile: /run/myapp/gunicorn.pid
    unit: myapp
    mode: upgrade

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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn_reload


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pidfile=dict(type='path', required=True),
            mode=dict(type='str', default='hup', choices=['hup', 'upgrade', 'none']),
            unit=dict(type='str'),
            expected_user=dict(type='str'),
            pending_upgrade=dict(type='str', default='fail', choices=['fail', 'settle']),
            wait=dict(type='bool', default=True),
            timeout=dict(type='float', default=300),
            poll_interval=dict(type='float', default=0.1),
        ),
        supports_check_mode=True,
    )
    failed, result = _gunicorn_reload.run(module.params, module.check_mode,
                                          systemctl=module.get_bin_path('systemctl'),
                                          journalctl=module.get_bin_path('journalctl'), warn=module.warn)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

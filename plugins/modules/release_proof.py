#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: release_proof
short_description: Prove from /proc that every worker of a WSGI server runs the release C(current) points to
version_added: 0.1.0
description:
  - Proves, without the application's help, that every worker of a uWSGI or gunicorn master runs the release
    that C(<app_root>/current) points to. Only C(/proc) and the filesystem are read; nothing is signalled.
  - A worker is every child process of the master. It passes when its working directory (C(/proc/PID/cwd)) is
    the release directory C(current) resolves to, it started after C(current) was switched (the lstat mtime
    of the symlink, to one clock tick), and it maps no file (C(/proc/PID/maps)) from another release under
    C(<app_root>/releases/), such as a C extension or an interpreter in an older release's venv.
  - Re-checks until the proof holds or O(timeout) passes, since the old workers of a graceful reload may still
    finish their requests as children of the master. On failure the message names the master, the expected
    release directory and what each offending worker runs.
  - Fails at once, naming the path, when C(current) is missing or not a symlink, when it does not point to
    O(release), when the master named by O(master_pid) does not exist, and when a worker's C(/proc) entries
    cannot be read by this user.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.info_module
  - graceful.wsgi.attributes.linux
  - graceful.wsgi.timing
attributes:
  platform:
    details:
      - Needs a Linux C(/proc) to read each worker's C(cwd), C(maps) and start time.
options:
  app_root:
    description:
      - The directory holding the C(current) symlink and the C(releases/) directory, as laid out by the
        collection's C(release) role.
    type: path
    required: true
  service:
    description:
      - The systemd unit whose main process (C(MainPID)) is the server's master, read with C(systemctl show)
        at every check.
      - While the unit has no main process the proof does not hold, until O(timeout).
      - A C(systemctl) that fails, or does not answer within 30 seconds (it is then killed), fails the task at once.
      - Exactly one of O(service) and O(master_pid) is required.
    type: str
  master_pid:
    description:
      - PID of the server's master.
      - Exactly one of O(service) and O(master_pid) is required.
    type: int
  release:
    description:
      - Name of the release expected in C(<app_root>/releases/). When given, the task fails at once unless
        C(current) resolves to it.
    type: str
  min_workers:
    description:
      - The fewest workers the master must have for the proof to hold.
    type: int
    default: 1
  timeout:
    description:
      - Seconds to keep re-checking before failing. V(0) checks once.
      - Must not be negative; unless V(0), at least O(poll_interval).
    default: 30
  poll_interval:
    default: 0.5
  health:
    description:
      - A health gate to pass before the proof, run as M(graceful.wsgi.health_gate) runs it, with its options.
        The gate and the proof then cost one task and one connection to the host, as a rollout's verification
        of each host wants.
      - When the gate fails, the proof is not tried and the task fails with the gate's message.
      - The gate's O(health.timeout) is its own; O(timeout) bounds the proof after it.
    type: dict
    suboptions:
      url:
        description: The URL to GET, as O(graceful.wsgi.health_gate#module:url).
        type: str
        required: true
      successes:
        description: Good answers in a row that pass the gate, as O(graceful.wsgi.health_gate#module:successes).
        type: int
        default: 3
      timeout:
        description: Seconds the gate may take in all, as O(graceful.wsgi.health_gate#module:timeout).
        type: float
        default: 60
      interval:
        description: Seconds between two requests, as O(graceful.wsgi.health_gate#module:interval).
        type: float
        default: 0.5
      request_timeout:
        description: Seconds one request may take, as O(graceful.wsgi.health_gate#module:request_timeout).
        type: float
        default: 5
      status_code:
        description: The statuses that count as good, as O(graceful.wsgi.health_gate#module:status_code).
        type: list
        elements: int
        default: [200]
      body_regex:
        description: A regular expression a good body contains, as O(graceful.wsgi.health_gate#module:body_regex).
        type: str
      headers:
        description: Headers sent with every request, as O(graceful.wsgi.health_gate#module:headers).
        type: dict
        default: {}
      validate_certs:
        description: Verify the server's TLS certificate, as O(graceful.wsgi.health_gate#module:validate_certs).
        type: bool
        default: true
notes:
  - The proof relies on every worker changing into C(<app_root>/current) when it loads the application, as the
    collection's server roles configure it. gunicorn with C(chdir) set to C(<app_root>/current) and
    C(preload_app) off; the master changes into it at start and at each C(HUP) and forks the new workers
    there. uWSGI with C(lazy-apps) and C(chdir2) set to C(<app_root>/current), done by each worker after it
    loaded its apps. With gunicorn's C(preload_app) the workers fork from a master holding the code it loaded
    at start, and the working directory proves nothing.
  - Pure Python modules are read into memory and leave no trace in C(/proc/PID/maps). A worker importing an
    older release's code through another path than its working directory is not found by the C(maps) check.
  - Every child of the master counts as a worker. A uWSGI mule, spooler or C(http) router would be judged too.
  - Start times have the resolution of a clock tick (usually 10 ms). A worker started in the same tick as the
    switch passes.
  - The module must run on the server's host, as the user the server runs as or as root, to read
    C(/proc/PID/cwd) and C(/proc/PID/maps).
  - Root needs no C(CAP_SYS_PTRACE), which containers drop by default. When C(/proc) denies root a worker's
    entries, a child process that takes the worker's user and group (no other groups, no capabilities) reads
    them and is killed after 5 seconds at most. That works for the workers of a server started as its user,
    for example with systemd C(User=). A server that switches to its user itself after it started is not
    dumpable, and only C(CAP_SYS_PTRACE) lets root read it; the task fails saying so.
seealso:
  - module: graceful.wsgi.gunicorn_reload
  - module: graceful.wsgi.uwsgi_reload
'''

EXAMPLES = r'''
- name: Prove that every worker of the app's gunicorn runs the release just switched to
  graceful.wsgi.release_proof:
    app_root: /srv/demo
    service: demo.service
    release: v2
    min_workers: 4
    timeout: 60

- name: Pass the health gate, then prove the release, in one task
  graceful.wsgi.release_proof:
    app_root: /srv/demo
    service: demo.service
    release: v2
    health:
      url: http://127.0.0.1:8000/healthz
      successes: 3
      timeout: 30
  register: demo_verified

- name: Prove a master started outside systemd, whatever current points to
  graceful.wsgi.release_proof:
    app_root: /srv/demo
    master_pid: "{{ demo_gunicorn.master_pid }}"
  register: demo_proof

- name: Show which release the workers run
  ansible.builtin.debug:
    msg: "{{ demo_proof.workers | length }} workers run {{ demo_proof.release }}"
'''

RETURN = r'''
release:
  description: Name of the release C(current) points to, the base name of RV(release_path).
  returned: when C(current) could be read
  type: str
  sample: v2
release_path:
  description: The release directory C(current) resolves to.
  returned: when C(current) could be read
  type: str
  sample: /srv/demo/releases/v2
switched_at:
  description: When C(current) was switched (the lstat mtime of the symlink), ISO 8601 in UTC.
  returned: when C(current) could be read
  type: str
  sample: "2026-11-22T16:20:01.482Z"
master_pid:
  description: PID of the master whose workers were judged; null when O(service) had no main process.
  returned: when C(current) could be read
  type: int
  sample: 812
workers:
  description: The master's workers at the last check.
  returned: when C(current) could be read
  type: list
  elements: dict
  contains:
    pid:
      description: Process id.
      type: int
    cwd:
      description: The worker's working directory, as C(/proc/PID/cwd) names it.
      type: str
    started_at:
      description: When the worker started, ISO 8601 in UTC, to a clock tick.
      type: str
    started_after_switch:
      description: Seconds from the switch to the worker's start; slightly negative (within a tick) for a
        worker started in the switch's tick.
      type: float
    stray_mapped_files:
      description: Files under C(<app_root>/releases/) outside the expected release that the worker maps.
      type: list
      elements: str
  sample: [{"pid": 901, "cwd": "/srv/demo/releases/v2", "started_at": "2026-11-22T16:20:02.310Z",
            "started_after_switch": 0.828, "stray_mapped_files": []}]
health:
  description:
    - The health gate's result, with the return values of M(graceful.wsgi.health_gate) (RV(graceful.wsgi.health_gate#module:url),
      RV(graceful.wsgi.health_gate#module:attempts), RV(graceful.wsgi.health_gate#module:consecutive),
      RV(graceful.wsgi.health_gate#module:elapsed), RV(graceful.wsgi.health_gate#module:status),
      RV(graceful.wsgi.health_gate#module:body), RV(graceful.wsgi.health_gate#module:failures),
      RV(graceful.wsgi.health_gate#module:last_failure)) and C(passed).
  returned: when O(health) is given
  type: dict
  sample: {"url": "http://127.0.0.1:8000/healthz", "passed": true, "attempts": 3, "consecutive": 3, "elapsed": 1.02,
           "status": 200, "body": "ok release v2", "failures": 0, "last_failure": null}
proven:
  description: Whether the proof holds; always true when the task succeeds.
  returned: always
  type: bool
  sample: true
elapsed:
  description: Seconds from the first check to the proof (or to the failure).
  returned: always
  type: float
  sample: 2.51
msg:
  description: What was proven, or what keeps the proof from holding.
  returned: always
  type: str
  sample: "release v2 proven for demo.service (master 812): 4 workers in /srv/demo/releases/v2, started after
    the switch at 2026-11-22T16:20:01.482Z, none mapping another release's files"
'''

import copy
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _health, _proc, _release, _systemd
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline, WaitTimeout, poll, timing_error


class Master:
    """The master to judge at each check: the given PID, or the unit's MainPID as systemd reports it now."""

    def __init__(self, module, service, pid):
        self.service = service
        self.pid = pid
        self.systemctl = module.get_bin_path('systemctl', required=True) if service else None
        self.state = None

    def refresh(self):
        """The master's PID, or None while the unit has no live main process; ReleaseError when it cannot be."""
        if self.service:
            try:
                properties = _systemd.show(self.systemctl, self.service, ('MainPID', 'ActiveState'))
            except _systemd.SystemdError as exc:
                raise _release.ReleaseError('service=%s: %s' % (self.service, exc))
            self.state = 'MainPID=%s, ActiveState=%s' % (properties.get('MainPID', '?'),
                                                         properties.get('ActiveState', '?'))
            self.pid = _systemd.int_property(properties, 'MainPID') or None
        if self.pid is not None and _proc.is_alive(self.pid):
            return self.pid
        if not self.service:
            raise _release.ReleaseError('master_pid=%d: no such process (or only a zombie)' % self.pid)
        # systemd may not have taken up the next main process yet (a gunicorn upgrade hands it over).
        self.pid = None
        return None

    def absent(self):
        return 'the unit has no live main process (%s)' % self.state

    def subject(self):
        if not self.service:
            return 'master %d' % self.pid
        if self.pid is None:
            return self.service
        return '%s (master %d)' % (self.service, self.pid)


class Proof:
    """One check after another, keeping what the last one saw for the result."""

    def __init__(self, params, master):
        self.master = master
        self.params = params
        self.tick = _proc.clock_tick()
        self.release_dir = None
        self.switched_at = None
        self.reports = []
        self.problems = []

    def check(self):
        """True when proven, None otherwise (poll's convention); ReleaseError when the proof cannot be made."""
        app_root = self.params['app_root']
        self.release_dir, self.switched_at = _release.read_current(app_root, self.params['release'])
        self.reports = []
        master_pid = self.master.refresh()
        if master_pid is None:
            self.problems = [self.master.absent()]
            return None
        # Read once per check, so every worker's start time is placed against the same boot time.
        boot = _proc.boot_time()
        workers = _release.workers_of(master_pid, boot)
        releases_root = _release.releases_dir(app_root)
        self.reports = [_release.worker_report(worker, self.release_dir, self.switched_at, releases_root)
                        for worker in sorted(workers, key=lambda item: item['pid'])]
        self.problems = _release.judge_workers(self.release_dir, self.switched_at, workers, releases_root, self.tick)
        too_few = _release.count_problem(master_pid, len(workers), self.params['min_workers'])
        if too_few:
            self.problems.insert(0, too_few)
        return None if self.problems else True

    def result(self):
        if self.release_dir is None:
            return {}
        return dict(
            release=os.path.basename(self.release_dir),
            release_path=self.release_dir,
            switched_at=_release.iso_utc(self.switched_at),
            master_pid=self.master.pid,
            workers=self.reports,
        )

    def failure(self):
        return _release.failure_message(self.master.subject(), self.release_dir, self.switched_at, self.problems)

    def success(self):
        return ("release %s proven for %s: %d worker%s in %s, started after the switch at %s, none mapping another "
                "release's files" % (os.path.basename(self.release_dir), self.master.subject(), len(self.reports),
                                     '' if len(self.reports) == 1 else 's', self.release_dir,
                                     _release.iso_utc(self.switched_at)))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type='path', required=True),
            service=dict(type='str'),
            master_pid=dict(type='int'),
            release=dict(type='str'),
            min_workers=dict(type='int', default=1),
            timeout=dict(type='float', default=30),
            poll_interval=dict(type='float', default=0.5),
            health=dict(type='dict', options=copy.deepcopy(_health.ARGUMENT_SPEC)),
        ),
        mutually_exclusive=[('service', 'master_pid')],
        required_one_of=[('service', 'master_pid')],
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False, proven=False, elapsed=0.0)
    if params['min_workers'] < 1:
        module.fail_json(msg='min_workers=%d: must be at least 1 (no worker proves nothing)' % params['min_workers'],
                         **result)
    error = timing_error(params['timeout'], params['poll_interval'], timeout_may_be_zero=True)
    if error:
        module.fail_json(msg=error, **result)
    if params['release'] is not None and (not params['release'] or '/' in params['release']
                                          or params['release'] in ('.', '..')):
        module.fail_json(msg='release=%s: must be the name of a directory in %s' % (
            params['release'], os.path.join(params['app_root'], 'releases')), **result)

    if params['health']:
        passed, health, msg = _health.gate(params['health'], option_prefix='health.')
        result['health'] = dict(health, passed=passed)
        if not passed:
            module.fail_json(msg=msg, **result)

    master = Master(module, params['service'], params['master_pid'])
    proof = Proof(params, master)
    deadline = Deadline(params['timeout'])
    try:
        poll(proof.check, deadline, params['poll_interval'], describe=proof.failure)
    except _release.ReleaseError as exc:
        result.update(proof.result(), elapsed=round(deadline.elapsed(), 2))
        module.fail_json(msg=str(exc), **result)
    except WaitTimeout as exc:
        result.update(proof.result(), elapsed=round(deadline.elapsed(), 2))
        module.fail_json(msg='%s; not proven within timeout=%ss' % (exc, params['timeout']), **result)
    result.update(proof.result(), proven=True, elapsed=round(deadline.elapsed(), 2))
    module.exit_json(msg=proof.success(), **result)


if __name__ == '__main__':
    main()

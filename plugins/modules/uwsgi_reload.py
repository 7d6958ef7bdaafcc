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
  - graceful.wsgi.timing
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
      - Written to only when what was opened is a FIFO (never through a symbolic link) with one link, owned by root
        or by the instance's user (see the notes); anything else fails the task naming the path, with nothing written.
    type: path
  touch_file:
    description:
      - A file the instance watches; the module updates its mtime.
      - It must be the file of the instance's C(touch-chain-reload) for O(mode=chain), C(touch-reload)
        for O(mode=graceful), C(touch-workers-reload) for O(mode=workers). uWSGI gives no sign that a
        touch was noticed, so a file it does not watch shows up as a timeout with every worker on its old PID.
      - Touched only when what was opened is a regular file (never through a symbolic link) with one link, owned by
        root or by the instance's user (see the notes).
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
      - V(fork) (uWSGI's fork-master, FIFO C(f)) is refused before anything is sent. The forked master does not
        write the pidfile. With C(vacuum), the old master's exit removes the new master's pidfile, stats socket
        and unix sockets, and under systemd it ends the unit. See the README, which cites the test that shows it.
    type: str
    choices: [chain, rolling, graceful, workers, brutal, fork]
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
    type: float
    default: 300
notes:
  - O(timeout) bounds the wait for the proof, from the trigger on. It should exceed the time the longest request
    takes (workers finish their requests before they are replaced) plus the application's start-up time per step.
    O(poll_interval) is the time between two reads of the stats server while waiting.
  - C(lazy-apps) is what makes workers import the code again; it is read from the master's command line,
    environment and ini files. Without it O(mode=chain) and O(mode=rolling) fail, because their new workers
    would be forked from a master that still holds the old code.
  - Root needs no C(CAP_SYS_PTRACE) to read the master's environment and working directory. What C(/proc)
    denies root is read by a child process that takes the master's user and group (no capabilities), within
    5 seconds. When they cannot be read at all, lazy-apps counts as unconfirmed (a warning), not as absent.
  - Do not combine C(need-app) with C(lazy-apps) on an instance you reload. uWSGI destroys the whole
    instance when one new worker fails to load the app.
  - Mules and spoolers. O(mode=chain), O(mode=rolling) and O(mode=workers) replace uWSGI's workers only; its
    mules and spoolers would go on with the old code (uWSGI issue 915). Once the workers are proven, the module
    replaces them the way uWSGI's C(touch-mules-reload) and C(touch-spoolers-reload) do. A mule gets C(SIGHUP) at
    once. A spooler gets C(SIGTERM) once the stats show it running no task (it ignores C(SIGHUP)), so no task
    is cut short, and a task found later in its directory runs in the new spooler. Each must be replaced by a
    new process that stays up for a second, within O(timeout). Otherwise the task fails, naming them and saying
    that the instance runs mixed code. O(mode=graceful) and O(mode=brutal) replace them with the whole
    instance, which is proven the same way.
  - The spoolers come from the stats. A mule is a child of the master that is no worker, spooler or daemon.
    It is told apart from a gateway (C(http), C(fastrouter) and the like) by its title C(uWSGI mule N) with
    C(auto-procname), or else by the configuration, which must declare mules and no gateway. When they cannot
    be told apart, the task fails before anything is sent, naming the processes. With O(wait=false), a reload
    of the workers only on an instance with mules or spoolers is refused, because they would keep the old code.
  - The control paths usually sit in a directory of the instance's user, who may put anything there. The
    instance's user is the user the uWSGI master runs as, once the master is proven. With O(stats) on a unix socket,
    it is the process the kernel says serves the socket, which must own the socket file and be the master its answer
    names. With O(pidfile), it is the process the pidfile names, and the pidfile must be root's or that process's
    user's. The master must also be a uWSGI process in C(/proc). Without a proven master (neither O(stats) nor
    O(pidfile), or a master outside this host's C(/proc)), the owner of the directory holding the FIFO or touch
    file stands for the instance's user.
  - A stats socket that is a symbolic link, is not a socket, has a second hard link, or is served by another user
    than its owner is refused without being read.
  - A TCP O(stats) address carries no proof of the process answering on it. Where other users run code on the
    host, use a unix socket, or give O(pidfile) too.
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
mules_before:
  description: PIDs of the instance's mules before the reload.
  returned: when O(stats) is set
  type: list
  elements: int
  sample: [4125, 4126]
mules_after:
  description: PIDs of the mules that replaced them.
  returned: when the instance has mules or spoolers and the workers were proven
  type: list
  elements: int
  sample: [4410, 4411]
spoolers_before:
  description: The instance's spoolers before the reload, their PID by spool directory.
  returned: when O(stats) is set
  type: dict
  sample: {"/var/spool/myapp": 4127}
spoolers_after:
  description: The spoolers that replaced them, their PID by spool directory.
  returned: when the instance has mules or spoolers and the workers were proven
  type: dict
  sample: {"/var/spool/myapp": 4412}
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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi_reload
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import ReloadFailed, timing_error


def main():
    module = AnsibleModule(
        argument_spec=dict(
            master_fifo=dict(type='path'),
            touch_file=dict(type='path'),
            pidfile=dict(type='path'),
            stats=dict(type='str'),
            mode=dict(type='str', default='chain', choices=['chain', 'rolling', 'graceful', 'workers', 'brutal', 'fork']),
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
    error = timing_error(params['timeout'], params['poll_interval'])
    if error:
        module.fail_json(msg=error, changed=False, mode=params['mode'])
    try:
        result = _uwsgi_reload.reload_instance(params, module.warn, module.check_mode)
    except ReloadFailed as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

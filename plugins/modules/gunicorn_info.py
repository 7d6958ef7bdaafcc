#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: gunicorn_info
short_description: Report one gunicorn master, its workers, a pending upgrade and the gunicorn version
version_added: 0.1.0
description:
  - Reads the master's pidfile and C(/proc) (never the application, never a signal). It reports the master,
    its workers with their age and whether they booted, the state of an upgrade (a new master started by
    C(USR2) that is not promoted yet), and the gunicorn version the master imports.
  - Fails, naming the pidfile, when it does not lead to a live gunicorn master, or to one that O(unit) or
    O(expected_user) does not allow. The master is identified as M(graceful.wsgi.gunicorn_reload) identifies it.
    With O(unit) it must be the unit's main process (C(MainPID)), or the new master of an upgrade of it, and run in
    the unit's cgroup. It must run as O(expected_user) when given, otherwise as the unit's main process does, and
    without O(unit) as the user who owns the pidfile. The pidfile must belong to that user or root.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.info_module
  - graceful.wsgi.attributes.linux
options:
  pidfile:
    description:
      - The master's pidfile (gunicorn's C(--pid)). C(<pidfile>.2) is read as well.
    type: path
    required: true
  unit:
    description:
      - The systemd service the master runs in, with or without C(.service); see M(graceful.wsgi.gunicorn_reload).
        Needs C(systemctl) on the host.
    type: str
  expected_user:
    description:
      - The user (a name or a uid) the master runs as. Without it, the user of the unit's main process with
        O(unit), else the user who owns O(pidfile).
    type: str
notes:
  - A worker counts as booted once it has touched its heartbeat file, which gunicorn workers do only after
    loading the application; see M(graceful.wsgi.gunicorn_reload).
  - Run it as the user gunicorn runs as or as root. Root needs no C(CAP_SYS_PTRACE). What C(/proc) denies root
    is read by a child process that takes the user of the gunicorn process, as M(graceful.wsgi.gunicorn_reload)
    does.
seealso:
  - module: graceful.wsgi.gunicorn_reload
'''

EXAMPLES = r'''
- name: Read the state of the app's gunicorn
  graceful.wsgi.gunicorn_info:
    pidfile: /run/myapp/gunicorn.pid
    unit: myapp
  register: myapp_gunicorn

- name: Refuse to go on while an upgrade is half done
  ansible.builtin.assert:
    that: not myapp_gunicorn.upgrade.pending
    fail_msg: "new master {{ myapp_gunicorn.upgrade.new_master_pid }} is not promoted yet"
'''

RETURN = r'''
master_pid:
  description: PID of the master the pidfile names.
  returned: always
  type: int
  sample: 4120
master_age:
  description: Seconds since the master started.
  returned: always
  type: float
  sample: 8532.1
version:
  description: gunicorn version installed where the master imports it from; null when it cannot be found.
  returned: always
  type: str
  sample: 27.0.1
command_line:
  description: The master's command line.
  returned: always
  type: list
  elements: str
log_files:
  description: Regular files the master holds open for writing (its error and access logs).
  returned: always
  type: list
  elements: str
  sample: [/var/log/myapp/gunicorn.log]
workers:
  description: The master's workers.
  returned: always
  type: list
  elements: dict
  contains:
    pid:
      description: Process id.
      type: int
    age:
      description: Seconds since the worker started.
      type: float
    booted:
      description: Whether the worker loaded the application and entered its request loop.
      type: bool
  sample: [{"pid": 4121, "age": 8531.7, "booted": true}]
workers_booted:
  description: How many workers have booted.
  returned: always
  type: int
  sample: 4
preload_app:
  description:
    - Whether the master loaded the application before forking its workers (gunicorn's C(preload_app)). Such a
      master forks every new worker from the code it holds, so C(HUP) never loads a new release;
      M(graceful.wsgi.gunicorn_reload) refuses O(graceful.wsgi.gunicorn_reload#module:mode=hup) on it.
    - Read as gunicorn reads it at start, never by running anything. C(--preload) on the master's command line or in
      C(GUNICORN_CMD_ARGS) in its environment, else the last C(preload_app = <literal>) at the top level of its
      config file (C(-c)/C(--config) from either, else C(gunicorn.conf.py) in its working directory). The file is
      parsed, not run, and read as the master's user.
    - Null when it cannot be told, and RV(preload_app_source) says why. Examples are a config that sets it with an
      expression or inside a block, a C(python:) config module, or a command line replaced by C(setproctitle).
    - Without C(-c), gunicorn reads the C(gunicorn.conf.py) of the directory it was started in, before it applies
      C(--chdir). The master's working directory is that directory unless C(--chdir) moved it elsewhere; give
      C(-c) to such a master.
  returned: always
  type: bool
  sample: false
preload_app_source:
  description: Where RV(preload_app) was read, or why it cannot be told.
  returned: always
  type: str
  sample: /etc/graceful-wsgi/myapp/gunicorn.conf.py line 11
upgrade:
  description: The state of a C(USR2) upgrade.
  returned: always
  type: dict
  contains:
    pending:
      description: Whether a new master runs beside this one, not promoted yet.
      type: bool
    pidfile:
      description: Path of C(<pidfile>.2).
      type: str
    pidfile_present:
      description: Whether C(<pidfile>.2) exists.
      type: bool
    pidfile_pid:
      description: PID named by C(<pidfile>.2), or null.
      type: int
    pidfile_stale:
      description: Whether C(<pidfile>.2) exists but names no new master of this one, or belongs to neither the
        master's user nor root (then it is not read).
      type: bool
    new_master_pid:
      description: PID of the new master, or null.
      type: int
    new_workers:
      description: The new master's workers (pid, age, booted).
      type: list
      elements: dict
    upgrading_from:
      description: When the pidfile names a new master not yet promoted, the PID of its old master.
      type: int
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn
from ansible_collections.graceful.wsgi.plugins.module_utils import _proc


def describe_workers(master):
    return [
        {'pid': pid, 'age': _gunicorn.age_seconds(_proc.start_ticks(pid)), 'booted': booted}
        for pid, booted in sorted(master.workers.items())
    ]


def upgrade_state(master, pidfile):
    """What the proven ``master`` and ``<pidfile>.2`` say of an upgrade; a .2 of anyone but the master's user or
    root is stale, and not read."""
    path = pidfile + '.2'
    state = dict(pending=False, pidfile=path, pidfile_present=os.path.exists(path), pidfile_pid=None,
                 pidfile_stale=False, new_master_pid=None, new_workers=[], upgrading_from=master.upgrading_from)
    if state['pidfile_present']:
        try:
            state['pidfile_pid'] = _proc.read_pidfile(path, owners=_gunicorn.master_owners(master))
        except (IOError, OSError, ValueError):
            state['pidfile_stale'] = True
    if master.upgrade_children:
        new_pid = master.upgrade_children[0]
        new = _gunicorn.inspect_master(new_pid)
        state.update(pending=True, new_master_pid=new_pid, new_workers=describe_workers(new) if new else [])
    if state['pidfile_present'] and state['pidfile_pid'] not in (state['new_master_pid'], master.pid):
        state['pidfile_stale'] = True
    return state


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pidfile=dict(type='path', required=True),
            unit=dict(type='str'),
            expected_user=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    pidfile = module.params['pidfile']
    try:
        expected = _gunicorn.Expected.from_options(module.params['unit'], module.params['expected_user'],
                                                   module.get_bin_path('systemctl'))
        master = _gunicorn.identify_master(pidfile, expected=expected)
        # Each of these may read /proc as the master's owner, which can fail (GunicornError) like the above.
        preload = _gunicorn.find_preload(master)
        found = dict(version=_gunicorn.find_version(master), log_files=_gunicorn.written_files(master.pid),
                     upgrade=upgrade_state(master, pidfile), preload_app=preload.value,
                     preload_app_source=preload.source)
    except _gunicorn.GunicornError as exc:
        module.fail_json(msg=str(exc))
    workers = describe_workers(master)
    module.exit_json(
        changed=False,
        master_pid=master.pid,
        master_age=_gunicorn.age_seconds(master.started),
        command_line=master.info.cmdline,
        workers=workers,
        workers_booted=sum(1 for worker in workers if worker['booted']),
        **found
    )


if __name__ == '__main__':
    main()

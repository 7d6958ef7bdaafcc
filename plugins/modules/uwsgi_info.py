#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: uwsgi_info
short_description: Read the state of one uWSGI instance from its stats server
version_added: 0.1.0
description:
  - Reads the stats server of one uWSGI instance and returns its master PID, version, listen queue,
    sockets and workers, including which workers have their application loaded.
  - Read-only.
  - A unix socket is read only when it is a socket with one link (never through a symbolic link), served by the
    user that owns it, and answered by the master its answer names (the kernel's peer credentials). Anyone may
    run a server answering with the PID of another instance's master. A socket failing these checks fails the
    task naming it.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.info_module
  - graceful.wsgi.uwsgi
attributes:
  platform:
    platforms: posix
options:
  stats:
    required: true
  timeout:
    description:
      - Seconds the stats server has to answer in full, connect included.
    type: float
    default: 2
seealso:
  - module: graceful.wsgi.uwsgi_reload
'''

EXAMPLES = r'''
- name: Read the instance state
  graceful.wsgi.uwsgi_info:
    stats: /run/myapp/stats.sock
  register: app_state

- name: Fail when a worker runs without its application
  ansible.builtin.assert:
    that: app_state.workers | selectattr('apps_loaded', 'equalto', 0) | list | length == 0
'''

RETURN = r'''
master_pid:
  description: PID of the uWSGI master.
  returned: success
  type: int
  sample: 4120
version:
  description: uWSGI version.
  returned: success
  type: str
  sample: 2.0.31
listen_queue:
  description: Connections waiting in the listen queue.
  returned: success
  type: int
  sample: 0
listen_queue_errors:
  description: Connections refused because the listen queue was full.
  returned: success
  type: int
  sample: 0
load:
  description: Requests being served by the instance.
  returned: success
  type: int
  sample: 3
cwd:
  description: The master's working directory.
  returned: success
  type: str
uid:
  description: User id the instance runs as.
  returned: success
  type: int
gid:
  description: Group id the instance runs as.
  returned: success
  type: int
sockets:
  description: Listening sockets with their queue length and backlog limit.
  returned: success
  type: list
  elements: dict
  sample: [{"name": "127.0.0.1:8000", "proto": "http", "queue": 0, "max_queue": 100}]
workers:
  description: One entry per worker slot.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: Worker id (1-based slot).
      type: int
    pid:
      description: Process id, 0 when the slot is empty.
      type: int
    status:
      description: idle, busy, cheap, pause or sig.
      type: str
    accepting:
      description: Whether the worker accepts requests.
      type: bool
    requests:
      description: Requests served by this worker process.
      type: int
    exceptions:
      description: Exceptions raised in this worker.
      type: int
    respawn_count:
      description: How many times the slot was (re)spawned since the master started.
      type: int
    last_spawn:
      description: Epoch second of the last spawn.
      type: int
    running_time:
      description: Microseconds spent serving requests.
      type: int
    rss:
      description: Resident memory in bytes (0 unless memory reporting is on).
      type: int
    apps_loaded:
      description: Number of applications loaded; 0 means the worker answers every request with an error.
      type: int
    apps:
      description: The loaded applications (mountpoint, chdir, requests, exceptions, startup_time).
      type: list
      elements: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi


def main():
    module = AnsibleModule(
        argument_spec=dict(
            stats=dict(type='str', required=True),
            timeout=dict(type='float', default=2),
        ),
        supports_check_mode=True,
    )
    try:
        document = _uwsgi.read_stats(_uwsgi.parse_stats_address(module.params['stats']), module.params['timeout'])
    except _uwsgi.UwsgiError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **_uwsgi.instance_summary(document))


if __name__ == '__main__':
    main()

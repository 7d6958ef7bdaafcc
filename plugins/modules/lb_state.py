#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: lb_state
short_description: Report whether the load balancer sends each app server traffic (enabled or drained)
version_added: 0.1.0
description:
  - Runs on the load balancer host and reports, per app server, whether the load balancer sends it traffic,
    V(enabled), V(drained), or V(missing) when the load balancer does not know the server.
  - With O(lb=nginx), reads the server files of the role C(graceful.wsgi.lb_nginx),
    C(CONFIG_DIR/servers/SERVER.conf). A server whose line carries C(down) is drained. Only regular files owned
    by root are read, opened without following a symlink and without blocking; a file that fails a check fails
    the module, naming the path and never quoting the file.
  - With O(lb=haproxy), asks HAProxy's admin socket (C(show servers state BACKEND) and C(show stat) in one
    exchange). A server whose admin state is C(MAINT) or C(DRAIN), or whose weight was set to 0, is drained;
    C(community.general.haproxy) with C(state=disabled) and C(drain=true), as the role C(graceful.wsgi.lb_haproxy)
    drains, leaves it in C(MAINT). HAProxy's own status of the server (C(UP), C(DOWN), C(MAINT), C(no check)...)
    is returned too. The socket must be a socket owned by root, reached without following a symlink, and the
    whole exchange must finish within O(timeout).
  - Read-only. It runs the same in check mode.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.info_module
attributes:
  platform:
    platforms: posix
options:
  lb:
    description:
      - The load balancer in front of the app.
    type: str
    choices: [nginx, haproxy]
    required: true
  app:
    description:
      - The app, as the roles C(graceful.wsgi.lb_nginx) and C(graceful.wsgi.lb_haproxy) name it. It names the
        default O(config_dir) and O(backend).
      - Letters, digits, C(.), C(_) and C(-), starting with a letter or a digit.
    type: str
    required: true
  servers:
    description:
      - Report only these servers (the rollout passes the inventory names of the app hosts). A server the load
        balancer does not know is reported as V(missing).
      - Without it, every server the load balancer knows for the app is reported.
      - Each name is made of letters, digits, C(.), C(_) and C(-), starting with a letter or a digit.
    type: list
    elements: str
  config_dir:
    description:
      - With O(lb=nginx), the directory of the app's nginx configuration, holding C(servers/SERVER.conf).
      - Default C(/etc/nginx/graceful-wsgi/APP).
    type: path
  socket:
    description:
      - With O(lb=haproxy), HAProxy's admin socket (C(stats socket) in its global section).
      - Default C(/run/haproxy/admin.sock), as the role C(graceful.wsgi.lb_haproxy) configures it.
    type: path
  backend:
    description:
      - With O(lb=haproxy), the backend of the app's servers.
      - Default O(app), as the role C(graceful.wsgi.lb_haproxy) names it.
    type: str
  timeout:
    description:
      - With O(lb=haproxy), the seconds the exchange with the admin socket may take in all, connect and the
        whole answer included.
    type: float
    default: 5
notes:
  - Run it on the load balancer host, as root (for example with C(delegate_to) and C(run_once)).
seealso:
  - module: community.general.haproxy
'''

EXAMPLES = r'''
- name: Which app hosts does nginx send traffic?
  graceful.wsgi.lb_state:
    lb: nginx
    app: shop
    servers: "{{ groups['shop_app'] }}"
  delegate_to: "{{ groups['shop_lb'] | first }}"
  run_once: true
  register: shop_lb

- name: Show enabled or drained next to each host
  ansible.builtin.debug:
    msg: "{{ item }}: {{ shop_lb.servers[item].state }}"
  loop: "{{ groups['shop_app'] }}"

- name: Every server of the HAProxy backend
  graceful.wsgi.lb_state:
    lb: haproxy
    app: shop
    socket: /run/haproxy/admin.sock
    timeout: 2
  register: shop_haproxy

- name: Fail when a host is still drained after the rollout
  ansible.builtin.assert:
    that: shop_haproxy.drained | length == 0
    fail_msg: "still drained: {{ shop_haproxy.drained | join(', ') }}"
'''

RETURN = r'''
servers:
  description:
    - One entry per server. C(state) is V(enabled) (the load balancer sends it traffic), V(drained) (it does not,
      by an operator's or a deploy's choice) or V(missing) (the load balancer does not know it; only for servers
      named in O(servers)). C(detail) says why, in words.
    - C(address) is the server's address as the load balancer has it. With O(lb=nginx), C(path) is its file.
    - With O(lb=haproxy), C(admin) is HAProxy's admin state (C(READY), C(DRAIN), C(MAINT)), C(status) HAProxy's
      status of the server as the stats page shows it (C(UP), C(DOWN), C(MAINT), C(DRAIN), C(no check)...),
      C(weight) its current weight and C(sessions) its open sessions. An enabled server whose health check fails
      gets no traffic either, until it passes; its C(status) says so.
  returned: always
  type: dict
  sample: {"app1": {"state": "enabled", "detail": "ready (status UP, 3 open sessions)", "admin": "READY",
                    "status": "UP", "weight": 1, "sessions": 3, "address": "10.0.0.11:8000"},
           "app2": {"state": "drained", "detail": "in maintenance: disabled through the admin socket (status MAINT,
                    0 open sessions)", "admin": "MAINT", "status": "MAINT", "weight": 1, "sessions": 0,
                    "address": "10.0.0.12:8000"}}
enabled:
  description: The servers the load balancer sends traffic, sorted.
  returned: always
  type: list
  elements: str
  sample: [app1]
drained:
  description: The servers that are drained, sorted.
  returned: always
  type: list
  elements: str
  sample: [app2]
missing:
  description: The servers named in O(servers) that the load balancer does not know, sorted.
  returned: always
  type: list
  elements: str
  sample: []
msg:
  description: A one-line summary.
  returned: always
  type: str
  sample: "haproxy backend shop: 1 enabled (app1), 1 drained (app2)"
'''

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _haproxy, _nginx

# A name becomes part of a path (nginx) or of an admin socket command line (HAProxy): nothing else gets through.
NAME = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9._-]*\Z')
# HAProxy's own charset for a proxy name also allows ':'.
BACKEND = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9._:-]*\Z')

NGINX_DIR = '/etc/nginx/graceful-wsgi'
HAPROXY_SOCKET = '/run/haproxy/admin.sock'
ONLY_WITH = {'config_dir': 'nginx', 'socket': 'haproxy', 'backend': 'haproxy'}
STATES = ('enabled', 'drained', 'missing')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            lb=dict(type='str', required=True, choices=['nginx', 'haproxy']),
            app=dict(type='str', required=True),
            servers=dict(type='list', elements='str'),
            config_dir=dict(type='path'),
            socket=dict(type='path'),
            backend=dict(type='str'),
            timeout=dict(type='float', default=5),
        ),
        supports_check_mode=True,
    )
    params = module.params
    problem = check_params(params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    names = None if params['servers'] is None else sorted(set(params['servers']))
    try:
        if params['lb'] == 'nginx':
            config_dir = params['config_dir'] or '%s/%s' % (NGINX_DIR, params['app'])
            reports = _nginx.read_servers(config_dir, names)
            where = 'nginx %s' % config_dir
        else:
            backend = params['backend'] or params['app']
            reports = select(_haproxy.read_backend(params['socket'] or HAPROXY_SOCKET, backend, params['timeout']),
                             names, backend)
            where = 'haproxy backend %s' % backend
    except (_nginx.NginxError, _haproxy.HaproxyError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(changed=False, **summary(reports, where))


def check_params(params):
    """Why the parameters cannot be used, or None. What the argument spec cannot say: names that become paths or
    commands, options of the other load balancer, a timeout that is not positive."""
    if not NAME.match(params['app']):
        return 'app=%r: use letters, digits, ".", "_" and "-", starting with a letter or a digit' % params['app']
    for name in params['servers'] or []:
        if not NAME.match(name):
            return 'servers: %r: use letters, digits, ".", "_" and "-", starting with a letter or a digit' % name
    if params['backend'] is not None and not BACKEND.match(params['backend']):
        return ('backend=%r: use letters, digits, ".", "_", ":" and "-", starting with a letter or a digit'
                % params['backend'])
    for option, lb in sorted(ONLY_WITH.items()):
        if params[option] is not None and params['lb'] != lb:
            return '%s is an option of lb=%s, not of lb=%s' % (option, lb, params['lb'])
    if not params['timeout'] > 0:
        return 'timeout=%s: must be more than 0 seconds' % params['timeout']
    return None


def select(reports, names, backend):
    """The reports of ``names`` (all when None); a server the backend lacks is missing."""
    if names is None:
        return reports
    missing = dict(state='missing', detail='backend %s has no server of this name' % backend, admin=None,
                   status=None, weight=None, sessions=None, address=None)
    return dict((name, reports.get(name, dict(missing))) for name in names)


def summary(reports, where):
    """The module's result: servers, the sorted names per state and a one-line msg."""
    result = dict(servers=reports)
    words = []
    for state in STATES:
        result[state] = sorted(name for name, report in reports.items() if report['state'] == state)
        if result[state]:
            words.append('%d %s (%s)' % (len(result[state]), state, ', '.join(result[state])))
    result['msg'] = '%s: %s' % (where, ', '.join(words) if words else 'no servers')
    return result


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: nginx_server
short_description: Drain or enable one app server in nginx in one step, and wait until its requests are done
version_added: 0.1.0
description:
  - Writes the server file of one app server, C(CONFIG_DIR/servers/SERVER.conf) as the role C(graceful.wsgi.lb_nginx)
    lays it out, tests nginx's configuration (C(nginx -t)), reloads nginx (C(systemctl reload)) and, with
    O(wait_for_requests), waits until every nginx worker from before the reload has exited. Those workers finish
    the requests they proxy, to this server too, before they exit; once none is left, no request is on its way
    to a server the new file marks C(down).
  - One module call instead of a template, a test, a reload and a wait, each of them a round trip to the load
    balancer host. The rollout drains and enables hosts with it, on its critical path.
  - With O(servers) instead of O(server) and O(content), it writes the file of every server listed in one call, and
    with O(prune) removes the files of servers no longer listed; the role C(graceful.wsgi.lb_nginx) provisions an
    app's servers so, with O(reload=false), and reloads nginx once at the end of its run.
  - Nothing happens when the file already holds O(content). When nginx rejects the new configuration or the
    reload fails, the file is put back as it was and the module fails with nginx's own message.
  - The file is written under a name starting with a dot (which the upstream's include glob does not match) and
    renamed over the old one. An existing file is read only when it is a regular file owned by root, opened
    without following a symlink and without blocking; a file that fails a check fails the module, naming the
    path and never quoting the file.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the server file and reports whether it would be written; writes nothing and reloads nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details:
      - Needs a Linux C(/proc) to find nginx's workers, and systemd to reload nginx.
options:
  app:
    description:
      - The app, as the role C(graceful.wsgi.lb_nginx) names it. It names the default O(config_dir).
      - Letters, digits, C(.), C(_) and C(-), starting with a letter or a digit.
    type: str
    required: true
  server:
    description:
      - The server's name, which names its file (the rollout uses the app host's inventory name).
      - Letters, digits, C(.), C(_) and C(-), starting with a letter or a digit.
      - Exactly one of O(server) and O(servers) is required.
    type: str
  content:
    description:
      - What the server file must hold. The role C(graceful.wsgi.lb_nginx) renders it from its template
        C(server.conf.j2), so that its own writes and this module's agree.
      - Required with O(server).
    type: str
  servers:
    description:
      - Every server's file in one call, instead of O(server) and O(content). If any file cannot be written, or
        nginx rejects the result, every file is put back as it was.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - The server's name, as O(server).
        type: str
        required: true
      content:
        description:
          - What its file must hold, as O(content).
        type: str
        required: true
  prune:
    description:
      - With O(servers) (required), also remove the file of every server not listed.
    type: bool
    default: false
  reload:
    description:
      - Test nginx's configuration and reload nginx after a change. V(false) only writes the files, for a caller
        that reloads nginx itself (the role does, once, at the end of its run); O(wait_for_requests) then waits
        for nothing.
    type: bool
    default: true
  config_dir:
    description:
      - The directory of the app's nginx configuration, holding C(servers/).
      - Default C(/etc/nginx/graceful-wsgi/APP).
    type: path
  wait_for_requests:
    description:
      - After the reload, wait until every nginx worker from before it has exited (a drain).
      - V(false) returns once nginx has the reload, as an enable does; the old workers' requests go to servers
        that stay.
    type: bool
    default: false
  timeout:
    description:
      - Seconds the workers from before the reload may take to finish their requests, with O(wait_for_requests).
        Past it the module fails, naming the workers still running.
    type: float
    default: 90
  command_timeout:
    description:
      - Seconds C(nginx -t) and C(systemctl reload) may each take.
    type: float
    default: 30
  service:
    description:
      - nginx's systemd unit.
    type: str
    default: nginx.service
notes:
  - Run it on the load balancer host, as root (the rollout delegates it to each load balancer host).
seealso:
  - module: graceful.wsgi.lb_state
'''

EXAMPLES = r'''
- name: Drain app1 and wait until nginx proxies nothing more to it
  graceful.wsgi.nginx_server:
    app: shop
    server: app1
    content: "server 10.0.0.11:8000 max_fails=1 fail_timeout=10s down;  # app1\n"
    wait_for_requests: true
    timeout: 90
  delegate_to: lb1

- name: Enable app1 again
  graceful.wsgi.nginx_server:
    app: shop
    server: app1
    content: "server 10.0.0.11:8000 max_fails=1 fail_timeout=10s;  # app1\n"
  delegate_to: lb1

- name: Write every server's file, remove those of servers no longer listed, and leave the reload to a handler
  graceful.wsgi.nginx_server:
    app: shop
    servers:
      - name: app1
        content: "server 10.0.0.11:8000 max_fails=1 fail_timeout=10s;  # app1\n"
      - name: app2
        content: "server 10.0.0.12:8000 max_fails=1 fail_timeout=10s down;  # app2\n"
    prune: true
    reload: false
  notify: Reload nginx gracefully
'''

RETURN = r'''
path:
  description: The server file (with O(servers), the first one's).
  returned: always
  type: str
  sample: /etc/nginx/graceful-wsgi/shop/servers/app1.conf
written:
  description: The server files written (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [/etc/nginx/graceful-wsgi/shop/servers/app1.conf]
removed:
  description: The server files removed with O(prune) (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [/etc/nginx/graceful-wsgi/shop/servers/app9.conf]
reloaded:
  description: Whether nginx was reloaded (a file changed, outside check mode, with O(reload)).
  returned: always
  type: bool
  sample: true
old_workers:
  description: The PIDs of nginx's workers from before the reload.
  returned: always
  type: list
  elements: int
  sample: [4121, 4122]
waited:
  description: Seconds the workers from before the reload took to exit, with O(wait_for_requests).
  returned: always
  type: float
  sample: 1.42
elapsed:
  description: Seconds the module took in all.
  returned: always
  type: float
  sample: 1.61
msg:
  description: What was done, in one line.
  returned: always
  type: str
  sample: /etc/nginx/graceful-wsgi/shop/servers/app1.conf written, nginx reloaded and its 2 old workers done after 1.42 s
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _nginx, _nginx_server, _systemd


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app=dict(type='str', required=True),
            server=dict(type='str'),
            content=dict(type='str'),
            servers=dict(type='list', elements='dict', options=dict(
                name=dict(type='str', required=True),
                content=dict(type='str', required=True),
            )),
            prune=dict(type='bool', default=False),
            reload=dict(type='bool', default=True),
            config_dir=dict(type='path'),
            wait_for_requests=dict(type='bool', default=False),
            timeout=dict(type='float', default=90),
            command_timeout=dict(type='float', default=30),
            service=dict(type='str', default='nginx.service'),
        ),
        required_one_of=[('server', 'servers')],
        mutually_exclusive=[('server', 'servers'), ('content', 'servers')],
        required_together=[('server', 'content')],
        required_if=[('prune', True, ('servers',))],
        supports_check_mode=True,
    )
    problem = _nginx_server.check_params(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    needs_nginx = module.params['reload'] and not module.check_mode
    params = dict(module.params, nginx=module.get_bin_path('nginx', required=needs_nginx, opt_dirs=['/usr/sbin', '/sbin']))
    try:
        result = _nginx_server.run(params, module.check_mode)
    except (_nginx.NginxError, _systemd.SystemdError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: release_info
short_description: Read which release an app's current symlink points to, its commit, and the host's address
version_added: 0.1.0
description:
  - Reads where C(APP_ROOT/current) points, as the role C(graceful.wsgi.release) lays releases out
    (C(releases/RELEASE)), the commit in that release's C(REVISION) file and, with O(record), the record of switches
    C(APP_ROOT/switches.jsonl), and with O(default_ipv4) the address the host sends from by its default route.
  - One module call instead of a stat, two file reads and a fact gathering. The rollout's survey reads every app host
    with it, and counts its answer as the host's reach check.
  - Fails when C(current) exists and is not a symlink, or points anywhere but C(releases/NAME).
  - C(REVISION) and the record are opened without following a symlink and without blocking, and must be regular
    files owned by root; a file that fails a check fails the module, naming the path and never quoting the file. A
    C(REVISION) whose first line is not a revision (letters, digits, C(.), C(_), C(+) and C(-)) gives V('').
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.info_module
  - graceful.wsgi.release
attributes:
  platform:
    platforms: posix
options:
  record:
    description:
      - Also return the text of the record of switches, in RV(record).
    type: bool
    default: false
  default_ipv4:
    description:
      - Also return, in RV(default_ipv4), the IPv4 address the host sends from by its default route. That is the
        source address C(ip -4 route get 8.8.8.8) names, which Ansible's setup returns as C(ansible_default_ipv4.address).
        The rollout gives it to the load balancer. The routing table is asked through a UDP socket's connect, which
        sends nothing.
    type: bool
    default: false
notes:
  - Run it as root on the app host.
seealso:
  - module: graceful.wsgi.release_switch
'''

EXAMPLES = r'''
- name: Read the release shop serves
  graceful.wsgi.release_info:
    app_root: /srv/shop
  register: shop_release

- name: Read it with the record of switches, to name the previous release
  graceful.wsgi.release_info:
    app_root: /srv/shop
    record: true
  register: shop_release

- name: Read it with the address a load balancer reaches the host on
  graceful.wsgi.release_info:
    app_root: /srv/shop
    default_ipv4: true
  register: shop_release
'''

RETURN = r'''
release:
  description: The release C(current) points to, V('') when there is no C(current).
  returned: always
  type: str
  sample: 2026-11-27.1
commit:
  description: The first line of the release's C(REVISION) file, at most 40 characters; V('') without one.
  returned: always
  type: str
  sample: 9f2c4e1b7a0d3c5e8f6a1b2c3d4e5f60718293a4
record:
  description: The text of C(switches.jsonl), one JSON object per line, oldest first; V('') when there is none.
  returned: when O(record=true)
  type: str
  sample: '{"at": "2026-11-27T09:12:01.118342Z", "release": "2026-11-27.1", "from": "2026-11-20.3", "reason": "deploy"}'
default_ipv4:
  description: The address the host sends from by its default route, V('') when it has no such route.
  returned: when O(default_ipv4=true)
  type: str
  sample: 10.0.0.11
msg:
  description: What was found, in one line.
  returned: always
  type: str
  sample: /srv/shop/current points to releases/2026-11-27.1 (commit 9f2c4e1b7a0d)
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _release_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type='path', required=True),
            record=dict(type='bool', default=False),
            default_ipv4=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    problem = _release_info.check_params(module.params)
    if problem:
        module.fail_json(msg=problem)
    try:
        result = _release_info.run(module.params)
    except _release_info.InfoError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == '__main__':
    main()

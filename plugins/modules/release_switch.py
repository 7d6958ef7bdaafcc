#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: release_switch
short_description: Point an app's current symlink at an installed release and record the switch, in one step
version_added: 0.1.0
description:
  - Points C(APP_ROOT/current) at C(releases/RELEASE), as the role C(graceful.wsgi.release) lays releases out, by
    renaming a new symlink over the old one, and appends the switch to the record of switches
    C(APP_ROOT/switches.jsonl) (one JSON object per line, with C(at), C(release), C(from) and C(reason)). It
    returns the whole record, from which the role names the current and the previous release.
  - One module call instead of five round trips (two stats, the link, the record and its read). The rollout
    switches each host with it, on its critical path, and an undo or a rollback switches back with it.
  - Fails, changing nothing, when the release's venv (C(releases/RELEASE/venv/bin/python)) does not exist, and
    when C(current) exists but is not a symlink.
  - The record is opened without following a symlink and without blocking, and must be a regular file owned by
    root; a record that fails a check fails the module, naming the path and never quoting the file.
  - Nothing happens when C(current) already points at the release.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.release
attributes:
  check_mode:
    support: full
    details:
      - Reports whether C(current) would move and returns the record as it is; changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  release:
    description:
      - The installed release C(current) must point at.
      - 1 to 64 letters, digits, C(.), C(_) and C(-), starting with a letter or a digit, with no C(..).
    type: str
    required: true
  reason:
    description:
      - Why C(current) moves, kept in the record. Only a V(deploy) names the release a rollback goes back to.
    type: str
    choices: [deploy, rollback, undo]
    default: deploy
notes:
  - Run it as root on the app host.
seealso:
  - module: graceful.wsgi.release_proof
'''

EXAMPLES = r'''
- name: Switch shop to release 2026-11-27.1
  graceful.wsgi.release_switch:
    app_root: /srv/shop
    release: 2026-11-27.1
  register: shop_switch

- name: Roll back to the release the record names
  graceful.wsgi.release_switch:
    app_root: /srv/shop
    release: "{{ (shop_switch.record | graceful.wsgi.switch_record)[-1]['from'] }}"
    reason: rollback
'''

RETURN = r'''
switched:
  description: Whether C(current) moved (outside check mode), or would move (in check mode).
  returned: always
  type: bool
  sample: true
release:
  description: The release C(current) points at now.
  returned: always
  type: str
  sample: 2026-11-27.1
before:
  description: The release C(current) pointed at before, V('') when there was no C(current).
  returned: always
  type: str
  sample: 2026-11-20.3
record:
  description: The text of C(switches.jsonl) after the switch, one JSON object per line, oldest first.
  returned: always
  type: str
  sample: '{"at": "2026-11-27T09:12:01.118342Z", "release": "2026-11-27.1", "from": "2026-11-20.3", "reason": "deploy"}'
msg:
  description: What was done, in one line.
  returned: always
  type: str
  sample: /srv/shop/current now points to releases/2026-11-27.1 (was releases/2026-11-20.3)
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _release_switch


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type='path', required=True),
            release=dict(type='str', required=True),
            reason=dict(type='str', default='deploy', choices=['deploy', 'rollback', 'undo']),
        ),
        supports_check_mode=True,
    )
    problem = _release_switch.check_params(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    try:
        result = _release_switch.run(module.params, module.check_mode)
    except _release_switch.SwitchError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

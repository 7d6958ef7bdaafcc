#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: release_stage
short_description: Install a release on its host ahead of its switch, in one module run
version_added: 0.1.0
description:
  - Lays a release out as the role C(graceful.wsgi.release) does, without making it current. The code goes into
    C(APP_ROOT/releases/RELEASE), the wheels into that release's own venv from the wheelhouse
    C(APP_ROOT/wheelhouse/WHEELHOUSE). The shared paths are created in C(APP_ROOT/shared) and linked into the
    release, and the writable paths inside the release are given to O(user).
  - One module run instead of about twenty. The rollout stages every host at once before the first switch, so the
    time of a staging is the CPU it costs the hosts and the controller.
  - An action plugin sends the two archives, from the controller, only to a host that lacks them. It asks with one
    shell command, not a module run. A wheelhouse is named after its requirements and never changes. A release's
    code is not sent again once its C(.graceful-release) marker is there.
  - When O(python) is the system's C(/usr/bin/python3) and the host ships a wheel of pip for it (Debian's
    C(/usr/share/python-wheels)), the venv is made without ensurepip. That pip, unpacked once into
    C(APP_ROOT/wheelhouse), is run by the venv's interpreter and installs the wheels into it. Otherwise the venv gets
    its own pip. No venv is removed or rebuilt, so a release that C(current) points to can be staged again
    under its running server.
  - Every directory is opened without following a link, one name at a time from O(app_root). A link that the app's
    user put where a shared or writable directory goes is refused by name and never followed.
  - When pip refuses a wheel, the module fails with C(wheels) and C(pip_failed) in its result. The role then names
    both Pythons (the filter C(graceful.wsgi.wheel_mismatch)).
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
attributes:
  action:
    support: full
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
  check_mode:
    support: full
    details:
      - Sends nothing and changes nothing; reports what would be unpacked, created or installed.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  app_root:
    description:
      - The app's directory, holding C(releases/), C(wheelhouse/) and C(shared/).
      - An absolute path of names made of letters, digits, C(.), C(_) and C(-).
    type: path
    required: true
  release:
    description:
      - The release to stage, a directory of C(APP_ROOT/releases).
      - 1 to 64 letters, digits, C(.), C(_) and C(-), starting with a letter or a digit, with no C(..).
    type: str
    required: true
  wheelhouse:
    description:
      - The wheelhouse's id, a directory of C(APP_ROOT/wheelhouse). Every wheel in it is installed into the venv.
      - The same rule as O(release).
    type: str
    required: true
  wheelhouse_archive:
    description:
      - A plain tar of the wheelhouse's wheels, on the controller. It is sent and unpacked only when the host has no
        complete wheelhouse of that id.
      - Needed when the host does not have the wheelhouse yet.
    type: path
  src_archive:
    description:
      - An archive of the release's code (C(.tar.gz)), on the controller. It is sent and unpacked only when the
        release's code is not complete on the host.
      - Without it the code must already be in the release's directory.
    type: path
  python:
    description: The interpreter the release's venv is made from. It must be the app server's.
    type: path
    default: /usr/bin/python3
  user:
    description: The app's user, who owns O(writable) (with the group of the same name).
    type: str
    default: root
  shared:
    description:
      - Directories of C(APP_ROOT/shared) that every release links in at the same path. Each is created when missing,
        with its owner, group and mode, and linked into the release.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The path inside the release and inside C(shared/), of names joined by C(/).
        type: str
        required: true
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
      mode:
        description: Its mode, octal digits as a string.
        type: str
        default: '0750'
  writable:
    description:
      - Directories inside the release that build steps running as O(user) write (collectstatic's C(STATIC_ROOT)).
        Made O(user)'s, mode C(0755). The rest of the release stays root's.
    type: list
    elements: str
    default: []
  command_timeout:
    description: Seconds each command (tar, the venv, pip) may take before it is killed and the module fails.
    type: float
    default: 300
notes:
  - Run it as root on the app host.
seealso:
  - module: graceful.wsgi.release_switch
  - module: graceful.wsgi.release_proof
'''

EXAMPLES = r'''
- name: Stage release 2026-11-27.1 of shop
  graceful.wsgi.release_stage:
    app_root: /srv/shop
    release: 2026-11-27.1
    wheelhouse: 5f0c2b7e91d04a6c
    wheelhouse_archive: /home/deploy/.cache/graceful-wsgi/wheelhouses/5f0c2b7e91d04a6c.tar
    src_archive: /home/deploy/.cache/graceful-wsgi/sources/2026-11-27.1.tar.gz
    user: shop
    shared:
      - {path: media, owner: shop, group: shop, mode: '0750'}
    writable: [staticfiles]
'''

RETURN = r'''
changes:
  description: What was done, or would be done in check mode, among V(app_root), V(releases), V(wheelhouse),
    V(shared), V(release), V(code), V(venv), V(wheels), V(links) and V(writable).
  returned: always
  type: list
  elements: str
  sample: [code, venv, wheels, links]
release:
  description: The release staged.
  returned: always
  type: str
  sample: 2026-11-27.1
venv:
  description: The release's venv.
  returned: always
  type: str
  sample: /srv/shop/releases/2026-11-27.1/venv
wheels:
  description: The wheels of the wheelhouse on the host, which the venv holds. Also returned when pip refused one.
  returned: always
  type: list
  elements: str
  sample: [/srv/shop/wheelhouse/5f0c2b7e91d04a6c/Django-5.1.4-py3-none-any.whl]
pip_failed:
  description: Present, and true, when pip refused to install the wheels.
  returned: failure
  type: bool
  sample: true
msg:
  description: What was done, in one line.
  returned: always
  type: str
  sample: 'release 2026-11-27.1 staged: code, links, venv, wheels'
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _release_stage


def main():
    module = AnsibleModule(
        argument_spec=_release_stage.ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    problem = _release_stage.check_params(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    try:
        result = _release_stage.run(module.params, module.check_mode)
    except _release_stage.PipRefused as exc:
        module.fail_json(msg=str(exc), changed=False, wheels=exc.wheels, pip_failed=True)
    except _release_stage.StageError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: deploy_lock
short_description: Take or release the lock that allows one deploy of an app at a time
version_added: 0.1.0
description:
  - Takes (O(state=present)) or releases (O(state=absent)) a lock file that stands for one deploy of an app in
    progress. The file holds JSON with O(run_id), an C(acquired_at) time and the facts given in O(holder).
  - The file is created with C(O_CREAT|O_EXCL), so of any number of runs that try to take the lock at the same
    time exactly one gets it. The others fail at once, naming the run that holds it, its user, controller and
    since when, and return its content as RV(holder).
  - Taking the lock again with the same O(run_id) changes nothing, so a deploy can take it in each play.
  - A lock left by a run that died stays until it is broken with O(break_lock=true). Breaking removes only the
    lock that was read. A run that took the lock in between is not broken but reported.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the lock and reports whether it would be taken, kept, broken or released; writes and removes nothing.
  diff_mode:
    support: full
    details:
      - The lock file's content before and after.
  platform:
    platforms: posix
options:
  path:
    description:
      - The lock file, one per app, for example C(/srv/myapp/deploy.lock). Its directory must exist.
      - Every run that deploys the app must use the same path, on the host that all of them target.
    type: path
    required: true
  state:
    description:
      - V(present) takes the lock for O(run_id) (or keeps it, when that run holds it already).
      - V(absent) releases the lock held by O(run_id). There being no lock is not an error.
    type: str
    choices: [present, absent]
    default: present
  run_id:
    description:
      - Identifies the run that holds or wants the lock, for example a UUID made once per playbook run. Every
        task of one deploy must pass the same value.
    type: str
    required: true
  holder:
    description:
      - Facts about the run stored in the lock file, with O(run_id) and C(acquired_at). Failures of other runs
        quote C(user), C(controller), C(release), C(playbook) and C(pid) when present.
    type: dict
    default: {}
  break_lock:
    description:
      - Take (O(state=present)) or remove (O(state=absent)) a lock held by another run, or a corrupt lock file.
        Only for a lock left by a run that died; breaking the lock of a live deploy lets two deploys run at once.
    type: bool
    default: false
notes:
  - The lock lives on the host the task runs on. To serialize deploys of an app across a fleet, take it on one
    host (for example with C(run_once) and C(delegate_to)).
seealso:
  - module: graceful.wsgi.health_gate
'''

EXAMPLES = r'''
- name: Take the deploy lock for this run
  graceful.wsgi.deploy_lock:
    path: /srv/myapp/deploy.lock
    run_id: "{{ deploy_run_id }}"
    holder:
      controller: "{{ lookup('ansible.builtin.pipe', 'hostname') }}"
      user: "{{ lookup('ansible.builtin.env', 'USER') }}"
      release: "{{ release }}"
      playbook: deploy
  run_once: true

- name: Release it at the end of the deploy
  graceful.wsgi.deploy_lock:
    path: /srv/myapp/deploy.lock
    run_id: "{{ deploy_run_id }}"
    state: absent
  run_once: true

- name: Take over the lock of a deploy that died
  graceful.wsgi.deploy_lock:
    path: /srv/myapp/deploy.lock
    run_id: "{{ deploy_run_id }}"
    break_lock: true
'''

RETURN = r'''
acquired:
  description: Whether this run holds the lock when the module returns (would hold, in check mode).
  returned: always
  type: bool
  sample: true
holder:
  description:
    - With O(state=present), the content of the lock this run holds; on failure, the content of the lock held by
      another run. With O(state=absent), the content of the lock removed.
    - For a corrupt lock file, C(corrupt) holds the start of its text.
  returned: when there is a lock
  type: dict
  sample: {"run_id": "5f0c2d", "acquired_at": "2026-11-22T16:05:00Z", "user": "alice", "controller": "ctl1",
           "release": "v2", "playbook": "deploy"}
broken_holder:
  description: The content of the lock of another run (or of the corrupt lock) that O(break_lock=true) removed.
  returned: when a lock was broken
  type: dict
  sample: {"run_id": "1b9e77", "acquired_at": "2026-11-22T15:40:12Z", "user": "bob", "controller": "ctl2"}
msg:
  description: What happened.
  returned: always
  type: str
  sample: deploy lock /srv/myapp/deploy.lock taken by run 5f0c2d
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _lock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            run_id=dict(type='str', required=True),
            holder=dict(type='dict', default={}),
            break_lock=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path, state, run_id, break_lock = params['path'], params['state'], params['run_id'], params['break_lock']
    result = dict(changed=False, acquired=False)
    if not run_id.strip():
        module.fail_json(msg='run_id must not be empty: it tells this run from the others', **result)

    try:
        _lock.check_directory(path)
        lock = _lock.read_lock(path)
        action = _lock.decide(path, state, run_id, lock, break_lock)
    except _lock.LockHeld as exc:
        module.fail_json(msg=str(exc), holder=exc.holder, **result)
    except _lock.LockError as exc:
        module.fail_json(msg=str(exc), **result)

    if action == _lock.KEEP:
        module.exit_json(msg='deploy lock %s already held by this run (%s)' % (path, run_id), acquired=True,
                         holder=lock.holder(), changed=False)
    if action == _lock.NOTHING:
        module.exit_json(msg='no deploy lock at %s' % path, **result)

    content = _lock.lock_content(run_id, params['holder'], _lock.utc_now())
    broken = action in (_lock.BREAK_AND_ACQUIRE, _lock.BREAK_AND_RELEASE)
    if module.check_mode:
        result['changed'] = True
        set_diff(module, result, path, lock, content if state == 'present' else None)
        if broken:
            result['broken_holder'] = lock.holder()
        if state == 'present':
            result.update(acquired=True, holder=content, msg='would take deploy lock %s for run %s%s' % (
                path, run_id, ', breaking %s' % _lock.what_is_broken(lock) if broken else ''))
        else:
            result.update(holder=lock.holder(), msg='would %s deploy lock %s' % (
                'remove %s at' % _lock.what_is_broken(lock) if broken else 'release', path))
        module.exit_json(**result)

    try:
        # Removing only the lock that was read: one taken in between by another run is reported, not broken.
        if broken and _lock.remove(lock):
            result.update(changed=True, broken_holder=lock.holder())
        if state == 'present':
            changed, holder = _lock.acquire(path, run_id, content)
            result.update(acquired=True, holder=holder, changed=changed or result['changed'])
        elif 'broken_holder' in result:
            result['holder'] = lock.holder()
        else:
            changed, holder = _lock.release(path, run_id, lock if not broken else _lock.read_lock(path))
            result['changed'] = changed
            if holder is not None:
                result['holder'] = holder
    except _lock.LockHeld as exc:
        module.fail_json(msg=str(exc), **dict(result, holder=exc.holder))
    except _lock.LockError as exc:
        module.fail_json(msg=str(exc), **result)

    if result['changed']:
        set_diff(module, result, path, lock, result.get('holder') if state == 'present' else None)
    breaking = ', breaking %s' % _lock.what_is_broken(lock) if 'broken_holder' in result else ''
    if state == 'present':
        result['msg'] = 'deploy lock %s %s by run %s%s' % (
            path, 'taken' if result['changed'] else 'already held', run_id, breaking)
    elif result['changed']:
        result['msg'] = 'deploy lock %s removed%s' % (path, breaking or ' (released by run %s)' % run_id)
    else:
        result['msg'] = 'no deploy lock at %s (removed by another run meanwhile)' % path
    module.exit_json(**result)


def set_diff(module, result, path, lock, content):
    """The lock file's text before and after, when diff mode is on."""
    if module._diff:
        result['diff'] = dict(before=lock.raw.decode('utf-8', 'replace') if lock is not None else '',
                              after=_lock.encode(content).decode('utf-8') if content is not None else '',
                              before_header=path, after_header=path)


if __name__ == '__main__':
    main()

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
  - The lock is also the run's journal. With O(journal), the run that holds the lock appends one entry (one line of
    JSON after the holder's document, written with a single C(O_APPEND) write) saying what it is about to do to a
    host (C(drain), C(switch), C(reload), C(enable)) or how the host ended (C(done), C(failed), C(unreachable),
    C(reconciled)).
  - Releasing the lock keeps the entries of the hosts the journal leaves unsettled (drained, or a step announced
    and never settled) in C(PATH.pending), readable by root only. Taking the lock, or breaking the lock of a run
    that died, takes over those entries and the broken lock's into the new lock's journal and returns what to
    reconcile as RV(reconcile).
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
      - The broken lock's journal entries of hosts it left unsettled are kept (RV(inherited)).
    type: bool
    default: false
  journal:
    description:
      - An entry to append to the journal of the lock O(run_id) holds; the lock is neither taken nor released.
        Fails, recording nothing, when this run does not hold the lock.
      - C(host) and C(step) are required; C(step) is one of C(drain), C(switch), C(reload), C(enable) (announced
        before the step), C(done), C(failed), C(unreachable), C(reconciled). C(release) and C(from) name the
        releases involved; C(failed) entries say with C(drained) and C(settled) what the undo left. A C(switch)
        entry with C(reload=true) announces the server's reload after the switch too (an interrupted gunicorn
        upgrade is then settled by the next run). Other keys are kept as they are. C(at) is set to the time of the
        append unless given.
      - Only with O(state=present).
    type: dict
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
  register: deploy_lock_taken

- name: Record in the journal that web1 is about to be drained
  graceful.wsgi.deploy_lock:
    path: /srv/myapp/deploy.lock
    run_id: "{{ deploy_run_id }}"
    journal: {host: web1, step: drain, from: v1}
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
journal:
  description: The journal of the lock this run holds (with O(journal), before the entry was appended); on failure,
    the journal of the lock held by another run.
  returned: when there is a lock
  type: list
  elements: dict
  sample: [{"at": "2026-11-26T14:20:03Z", "host": "web1", "step": "drain", "from": "v1", "run": "5f0c2d"}]
inherited:
  description: Journal entries of hosts that an earlier run left unsettled (from its pending record, or from the
    lock that O(break_lock=true) broke), taken over into this run's journal.
  returned: when the lock was taken
  type: list
  elements: dict
reconcile:
  description: What to do before this run's own job, one item per unsettled host of RV(inherited) (C(host),
    C(drained), C(step) announced and never settled, C(release) current may point to, C(fallback) the last proven
    release, C(upgrade_pending), C(lost_at)).
  returned: when the lock was taken
  type: list
  elements: dict
  sample: [{"host": "web2", "drained": true, "step": "reload", "release": "v2", "fallback": "v1",
            "upgrade_pending": true, "lost_at": "", "run": "1b9e77"}]
entry:
  description: With O(journal), the entry as recorded (with C(at) and C(run)).
  returned: when O(journal) is given
  type: dict
  sample: {"at": "2026-11-26T14:20:03Z", "host": "web1", "step": "drain", "from": "v1", "run": "5f0c2d"}
pending:
  description: With O(state=absent), the hosts the released lock's journal left unsettled, kept in C(PATH.pending)
    for the next run.
  returned: when the lock was released
  type: list
  elements: str
msg:
  description: What happened.
  returned: always
  type: str
  sample: deploy lock /srv/myapp/deploy.lock taken by run 5f0c2d
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _journal, _lock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            run_id=dict(type='str', required=True),
            holder=dict(type='dict', default={}),
            break_lock=dict(type='bool', default=False),
            journal=dict(type='dict'),
        ),
        mutually_exclusive=[('journal', 'break_lock')],
        supports_check_mode=True,
    )
    params = module.params
    path, state, run_id, break_lock = params['path'], params['state'], params['run_id'], params['break_lock']
    result = dict(changed=False, acquired=False)
    if not run_id.strip():
        module.fail_json(msg='run_id must not be empty: it tells this run from the others', **result)

    if params['journal'] is not None:
        record_journal(module, path, run_id, params['journal'])

    try:
        _lock.check_directory(path)
        lock = _lock.read_lock(path)
        action = _lock.decide(path, state, run_id, lock, break_lock)
    except _lock.LockHeld as exc:
        module.fail_json(msg=str(exc), holder=exc.holder, journal=lock.journal, **result)
    except _lock.LockError as exc:
        module.fail_json(msg=str(exc), **result)

    if action == _lock.KEEP:
        module.exit_json(msg='deploy lock %s already held by this run (%s)' % (path, run_id), acquired=True,
                         holder=lock.holder(), journal=lock.journal, changed=False)
    if action == _lock.NOTHING:
        module.exit_json(msg='no deploy lock at %s' % path, **result)

    content = _lock.lock_content(run_id, params['holder'], _lock.utc_now())
    broken = action in (_lock.BREAK_AND_ACQUIRE, _lock.BREAK_AND_RELEASE)
    try:
        # What earlier runs left unsettled: a finished run's pending record, and a dead run's journal.
        inherited = _lock.read_pending(path) + (_lock.unsettled_entries(lock.journal) if broken else [])
    except _lock.LockError as exc:
        module.fail_json(msg=str(exc), **result)
    if state == 'present':
        result.update(inherited=inherited, reconcile=_journal.reconcile_plan(inherited))
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
            changed, holder = _lock.acquire(path, run_id, content, inherited)
            result.update(acquired=True, holder=holder, changed=changed or result['changed'], journal=inherited)
            if changed:
                # Now in this run's journal: kept there until this run settles those hosts or leaves them again.
                _lock.write_pending(path, [])
        elif 'broken_holder' in result:
            result['holder'] = lock.holder()
            keep_pending(result, path, inherited)
        else:
            current = lock if not broken else _lock.read_lock(path)
            if current is not None and not current.corrupt and current.run_id == run_id:
                keep_pending(result, path, _lock.read_pending(path) + _lock.unsettled_entries(current.journal))
            changed, holder = _lock.release(path, run_id, current)
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


def keep_pending(result, path, entries):
    """Keep what the journal leaves unsettled for the next run, before the lock goes."""
    unsettled = _lock.unsettled_entries(entries)
    _lock.write_pending(path, unsettled)
    result['pending'] = sorted(set(entry['host'] for entry in unsettled))


def record_journal(module, path, run_id, entry):
    """Append one entry to this run's journal and exit."""
    if module.params['state'] != 'present':
        module.fail_json(msg='journal is only recorded with state=present (the run holds the lock)', changed=False)
    entry = dict(entry)
    entry.setdefault('at', _lock.utc_now())
    entry.setdefault('run', run_id)
    try:
        _journal.check_entry(entry)
        if module.check_mode:
            lock = _lock.read_lock(path)
            if lock is None or lock.corrupt or lock.run_id != run_id:
                raise _lock.LockError('path=%s: not recording %s of %s: run %s does not hold the lock'
                                      % (path, entry['step'], entry['host'], run_id))
        else:
            lock = _lock.append_journal(path, run_id, entry)
    except (_journal.JournalError, _lock.LockError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(changed=True, acquired=True, journal=lock.journal, entry=entry,
                     msg='%s %s of %s in the journal of run %s' % (
                         'would record' if module.check_mode else 'recorded', entry['step'], entry['host'], run_id))


def set_diff(module, result, path, lock, content):
    """The lock file's text before and after, when diff mode is on."""
    if module._diff:
        result['diff'] = dict(before=lock.raw.decode('utf-8', 'replace') if lock is not None else '',
                              after=_lock.encode(content).decode('utf-8') if content is not None else '',
                              before_header=path, after_header=path)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: uwsgi_vassals_reload
short_description: Reload the vassals of a uWSGI Emperor behind a FastRouter, keeping a floor of serving vassals
version_added: 0.1.0
description:
  - Reloads the vassals of a uWSGI Emperor whose vassals subscribe to a FastRouter (the subscription system that
    the uWSGI docs call probably the best approach to graceful reloading). Each vassal is reloaded by moving its
    config's mtime forward; the Emperor then asks the vassal for a graceful reload.
  - As many vassals are reloaded at once as O(min_active) allows. A vassal that serves is only touched while,
    without it and without the vassals in flight, at least O(min_active) vassals serve. Vassals that do not serve
    (down, blacklisted by the Emperor, not subscribed) are touched first, since that costs nothing.
  - A vassal serves when the Emperor runs it, it accepts requests and its FastRouter subscription is live. A
    touched vassal counts as reloaded only when the Emperor reports the new config mtime, the vassal accepts again
    after having gone down, and its subscription is live again.
  - A serving vassal is drained before its touch. The module sends the FastRouter's subscription server the
    unsubscribe packet the vassal itself sends on a graceful reload. It then waits until the FastRouter has dropped
    the node, which it does once the last request routed there has ended. While the vassal drains, and until the
    Emperor has seen the touch, the packet is sent again whenever the vassal's periodic announce brings the node
    back. This is why a release that fails to load loses no request either. Without the drain, the connections
    waiting in the vassal's listen queue would be cut when its new master exits. The subscription servers are
    read from the vassal's C(subscribe-to) or C(subscribe2) options. A vassal without them is touched without a
    drain.
  - Refuses to start when a serving vassal would have to go down while fewer than O(min_active) + 1 vassals serve.
  - A vassal that is not back within O(timeout) seconds of its touch fails the task. No further vassal is touched
    once one timed out; the ones in flight are waited for. The failure names each vassal that did not come back,
    why (from the stats), and returns the stats entries.
  - The run also fails after O(timeout) without any vassal in flight when none may be started, because a vassal
    that served went down or because the stats cannot be read (each read of a stats server has 2 seconds). The
    failure then says since when the stats could not be read, and why.
  - One run per Emperor at a time. The run holds an exclusive lock, so a second run fails at once naming the first.
    The kernel releases the lock when the run ends, however it ends.
  - The lock file lives in a directory only the module's user may enter, created with mode C(0700) when missing.
    As root it is C(/run/graceful-wsgi) (no other user can create a name in C(/run), while one in C(/run/lock) or
    C(/tmp) could be taken first by anyone). As another user it is C(/run/user/UID/graceful-wsgi), else
    C(.graceful-wsgi) in the user's home; such a lock keeps out only the runs of the same user. A lock directory
    that is a symbolic link, or has another owner or a wider mode, fails the task naming it and is left as it is.
  - The number of serving vassals is sampled every O(poll_interval); the lowest seen is returned as
    RV(min_active_observed).
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.linux
  - graceful.wsgi.timing
attributes:
  check_mode:
    support: full
    details:
      - Reads the stats, applies every check and returns the vassals that would be touched first; touches nothing.
  diff_mode:
    support: none
options:
  emperor_dir:
    description:
      - The directory the Emperor watches for vassal configs.
      - The Emperor behind O(emperor_stats) must watch this directory (checked from its stats).
    type: path
    required: true
  emperor_stats:
    description:
      - The Emperor's stats server (C(--emperor-stats)), a unix socket path or C(host:port).
    type: str
    required: true
  fastrouter_stats:
    description:
      - The FastRouter's stats server (C(--fastrouter-stats)), a unix socket path or C(host:port).
      - A vassal is matched to its FastRouter node by the address it subscribes with, read from its ini
        (C(subscribe2) C(addr=), else its first C(socket)); for configs that cannot be read, by the socket's file
        name (C(web-1.sock) for C(web-1.ini)).
    type: str
    required: true
  vassal_suffix:
    description:
      - Files in O(emperor_dir) ending with this are vassal configs.
    type: str
    default: .ini
  min_active:
    description:
      - The least number of vassals that serve at every moment of the reload.
      - With N serving vassals, C(1) reloads N - 1 at once; N - 1 reloads them one by one.
    type: int
    default: 1
  timeout:
    type: float
    default: 60
  vassals:
    description:
      - Reload only these vassals (config names, with or without O(vassal_suffix)). All vassals count for the floor.
    type: list
    elements: str
notes:
  - O(timeout) is the time each vassal has, from its touch, to come back. It is also how long the run waits, with no
    vassal in flight, for a vassal it may start (the floor lost, or the stats unreadable). O(poll_interval) is the
    time between two readings of the Emperor's and the FastRouter's stats.
  - Symlinked configs. An Emperor that follows symlinks (its default) reloads every config linked to one file
    together, so the module refuses to reload such vassals one by one. An Emperor run with C(emperor-nofollow)
    watches each link's own mtime. Each link is then a vassal of its own, and the module reloads it by moving
    the link's mtime (C(touch -h)), never the file's. That is the layout of the Emperor docs' vassal reload
    script, one ini and a symlink to it per vassal. Whether the Emperor follows symlinks is read from its own
    command line, its C(UWSGI_*) environment and the ini files they name (the Emperor's PID comes from its
    stats). When a config is a symlink and that cannot be told, a shared file is refused as if it followed them.
  - A vassal's magic variables are expanded as uWSGI expands them for that vassal before its addresses are
    matched to FastRouter nodes. For a symlink, C(%n) is the link's name without its extension, so
    C(socket = /run/shop/%n.sock) gives each vassal its own socket. C(%n), C(%s), C(%e), C(%p), C(%d), C(%c),
    C(%o), C(%x), C(%0)-C(%9) and their upper-case forms are expanded, and C(%%); the others (C(%h), C(%k) and
    so on) are kept as they are.
  - Set up vassals with C(unsubscribe-on-graceful-reload), C(need-app) and without C(lazy-apps). The vassal
    then leaves the FastRouter before its reload, and subscribes again only after it loaded the new code. A
    release that fails to load keeps the vassal out of the FastRouter instead of serving errors.
  - Keep C(subscribe-freq) (the vassal's periodic announce) longer than most requests; each announce during a
    drain lets the FastRouter route to the vassal again until the next poll.
seealso:
  - module: graceful.wsgi.uwsgi_reload
  - name: The Art of Graceful Reloading, subscription system
    description: The setup this module drives.
    link: https://uwsgi-docs.readthedocs.io/en/latest/articles/TheArtOfGracefulReloading.html#subscription-system
'''

EXAMPLES = r'''
- name: Reload every vassal, at least one serving at any moment
  graceful.wsgi.uwsgi_vassals_reload:
    emperor_dir: /etc/uwsgi-emperor/shop/vassals
    emperor_stats: /run/shop-emperor/stats.sock
    fastrouter_stats: /run/shop-fastrouter/stats.sock

- name: Reload one by one, never fewer than three of four serving
  graceful.wsgi.uwsgi_vassals_reload:
    emperor_dir: /etc/uwsgi-emperor/shop/vassals
    emperor_stats: /run/shop-emperor/stats.sock
    fastrouter_stats: /run/shop-fastrouter/stats.sock
    min_active: 3
    timeout: 30

- name: Bring back the vassals that a broken release took down, once the release is fixed
  graceful.wsgi.uwsgi_vassals_reload:
    emperor_dir: /etc/uwsgi-emperor/shop/vassals
    emperor_stats: /run/shop-emperor/stats.sock
    fastrouter_stats: /run/shop-fastrouter/stats.sock
    vassals: [shop-1, shop-2, shop-3]
'''

RETURN = r'''
vassals:
  description: Each vassal of the run, in the order they were touched.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The vassal's name (its config name without O(vassal_suffix)).
      type: str
    config:
      description: Path of its config.
      type: str
    state:
      description: C(reloaded), C(timeout), C(not_started) (not touched because another vassal timed out), or in
        check mode C(would_reload).
      type: str
    was_active:
      description: Whether it served when the run started.
      type: bool
    pid_before:
      description: Its master PID when the run started (a graceful reload keeps it), null when it did not run.
      type: int
    pid_after:
      description: Its master PID at the end, null when it does not run.
      type: int
    workers_before:
      description: PIDs of its workers (children of its master) when the run started.
      type: list
      elements: int
    workers_after:
      description: PIDs of its workers at the end.
      type: list
      elements: int
    seconds:
      description: From the start of its reload (its drain) until it served again, or until its timeout.
      type: float
    drain_seconds:
      description: From its unsubscribe until the FastRouter had dropped its node; null when it was not drained
        (it did not serve, or names no subscription server).
      type: float
    drain_errors:
      description: The subscription servers the unsubscribe could not be sent to; the vassal was then touched
        without waiting for a drain.
      type: list
      elements: str
      returned: when sending failed
    why:
      description: Why it does not serve, for a vassal that did not come back.
      type: str
  sample:
    - {name: shop-1, config: /etc/uwsgi-emperor/shop/vassals/shop-1.ini, state: reloaded, was_active: true,
       pid_before: 4120, pid_after: 4120, workers_before: [4131], workers_after: [4877], seconds: 1.41}
reloaded:
  description: Names of the vassals that were reloaded and serve again.
  returned: always
  type: list
  elements: str
timed_out:
  description: Names of the vassals that did not come back within O(timeout).
  returned: always
  type: list
  elements: str
active_before:
  description: Vassals serving when the run started.
  returned: always
  type: int
active_after:
  description: Vassals serving when the run ended.
  returned: always
  type: int
min_active_observed:
  description: The lowest number of serving vassals seen during the run.
  returned: always
  type: int
parallel_max:
  description: The most vassals in flight at once.
  returned: always
  type: int
elapsed:
  description: Seconds from the first touch to the end of the run.
  returned: always
  type: float
started_at:
  description: When the first vassal was touched, epoch seconds.
  returned: always
  type: float
completed_at:
  description: When the run ended, epoch seconds.
  returned: always
  type: float
lock_path:
  description: The lock file of this Emperor's runs.
  returned: always
  type: str
  sample: /run/graceful-wsgi/graceful-wsgi-vassals-etc-uwsgi-vassals.lock
stats:
  description: For each vassal that did not come back, its Emperor entry (or blacklist entry) and FastRouter node.
  returned: failure
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor_reload
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import ReloadFailed, timing_error


def main():
    module = AnsibleModule(
        argument_spec=dict(
            emperor_dir=dict(type='path', required=True),
            emperor_stats=dict(type='str', required=True),
            fastrouter_stats=dict(type='str', required=True),
            vassal_suffix=dict(type='str', default='.ini'),
            min_active=dict(type='int', default=1),
            timeout=dict(type='float', default=60),
            poll_interval=dict(type='float', default=0.1),
            vassals=dict(type='list', elements='str'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params['min_active'] < 1:
        module.fail_json(msg='min_active=%s: must be at least 1' % params['min_active'])
    error = timing_error(params['timeout'], params['poll_interval'])
    if error:
        module.fail_json(msg=error)
    if not params['vassal_suffix']:
        module.fail_json(msg='vassal_suffix must not be empty')
    try:
        result = _emperor_reload.run(params, module.check_mode)
    except ReloadFailed as exc:
        module.fail_json(msg=str(exc), **(exc.details or {}))
    module.exit_json(**result)


if __name__ == '__main__':
    main()

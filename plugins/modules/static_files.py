#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: static_files
short_description: Merge the static assets of a release into shared directories that keep every present release's
  files
version_added: 0.1.0
description:
  - Copies the static assets of a release (for Django, C(STATIC_ROOT) as filled by C(collectstatic)) from
    C(<app_root>/releases/<release>/<directory>) into one shared directory per URL prefix,
    C(<app_root>/shared/static/<prefix>), that accumulates the files of every release.
  - In a rolling deploy every host stages the new release before the first one is switched. When the web server
    serves the prefix from the shared directory, any host serves the assets of the old and of the new release
    during the rollout, whichever release rendered the page that asks for them. There is no asset skew.
  - With O(prune=true), files that no release still present under C(<app_root>/releases/) provides (the same
    relative path under the same prefix) are removed after the merge, then the directories left empty. Releases
    that the deploy prunes (C(keep_releases)) thus take their assets with them.
  - The release's static directory belongs to the app user, who is not trusted. Its tree is walked without
    following symlinks. Only regular files are copied. Symlinks, FIFOs, sockets, devices, hard links to another
    user's files and names with control characters are skipped and reported in RV(skipped) by their path in the
    release, never with their content or target. Each file is opened with C(O_NOFOLLOW|O_NONBLOCK) and its
    descriptor checked to be a regular file before it is read.
  - Each shared file is written as a new file in its directory, then renamed over the old one. It is owned by
    root:root with mode C(0644), and directories by root:root with mode C(0755). A symlink, FIFO or directory in
    the way is replaced, never written through. A file with the same size and sha256 is left alone, so a second
    run changes nothing.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the release and the shared directories and reports what would be copied and removed; writes and
        removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  app_root:
    description:
      - The app's directory, laid out by the collection's C(release) role. Releases are in
        C(<app_root>/releases/<name>/), the shared directories go in C(<app_root>/shared/static/).
      - C(shared) is made when missing. No symlink is followed below O(app_root).
    type: path
    required: true
  static:
    description:
      - 'Maps each URL prefix to a directory of the release, such as V({"/static/": "staticfiles"}).'
      - A prefix starts with C(/). It is made of names of letters, digits, C(.), C(_) and C(-), separated by C(/),
        with an optional trailing C(/). A C(.) or C(..) name, and C(/) alone, are refused. The shared directory of
        V(/static/) is C(<app_root>/shared/static/static), that of V(/media/css/) is
        C(<app_root>/shared/static/media/css). Two prefixes may not share a directory, and one may not lie inside
        another.
      - A directory is relative to the release and made of the same names, without C(.) or C(..).
      - Only the prefixes given are managed. The shared directory of a prefix removed from O(static) is left
        alone.
    type: dict
    required: true
  release:
    description:
      - The release whose directories are merged into the shared ones, a name in C(<app_root>/releases/).
      - A directory of O(static) that the release lacks fails the task, naming the path.
      - Without it, the shared directories are only made (and pruned, with O(prune=true)).
    type: str
  prune:
    description:
      - After the merge, remove the shared files that no release in C(<app_root>/releases/) provides (same relative
        path under the same prefix), then the directories left empty.
      - A prefix whose directory no release has is not pruned, with a warning, so that a wrong O(static) or
        O(app_root) cannot empty its shared directory.
    type: bool
    default: true
notes:
  - Hashed names do not skew. Django's C(ManifestStaticFilesStorage) and WhiteNoise's
    C(CompressedManifestStaticFilesStorage) name each file after its content, so the files of every release live
    side by side. An unhashed name that two releases provide with different content (C(robots.txt), or the plain
    copies that C(collectstatic) writes beside the hashed ones) holds the version of the release merged last. It
    skews during a rollout, like without this module.
  - C(collectstatic --link) writes symlinks, which are skipped. Collect copies.
  - Run it as root on the app host, after the release's static directory is filled and before the first host
    switches. Runs for the same app must not overlap; the rollout's deploy lock sees to that.
  - The shared directory must not be one of the release role's C(release_shared_paths), which belong to the app
    user and are linked into each release.
  - Files keep the modification time of the release's copy. A file left alone keeps its own.
seealso:
  - module: graceful.wsgi.release_proof
'''

EXAMPLES = r'''
- name: Merge the static assets of release 2026.11.22-1 into the shared directories, pruning those of gone releases
  graceful.wsgi.static_files:
    app_root: /srv/shop
    static:
      /static/: staticfiles
    release: 2026.11.22-1
  register: shop_static

- name: Show where nginx finds them
  ansible.builtin.debug:
    msg: "location /static/ { alias {{ shop_static.dirs['/static/'] }}/; }"

- name: Only remove the assets no release provides any more (after pruning releases)
  graceful.wsgi.static_files:
    app_root: /srv/shop
    static:
      /static/: staticfiles
      /media/css/: assets/css
'''

RETURN = r'''
dirs:
  description: The shared directory of each prefix.
  returned: always
  type: dict
  sample: {"/static/": "/srv/shop/shared/static/static"}
copied:
  description:
    - The files copied (would be, in check mode), as paths relative to C(<app_root>/shared/static), which is the URL
      path without its leading C(/). At most 50; RV(copied_count) counts them all.
  returned: always
  type: list
  elements: str
  sample: ["static/css/app.3f2a1b9c.css", "static/js/app.77ae01d2.js"]
copied_count:
  description: How many files were (would be) copied.
  returned: always
  type: int
  sample: 2
unchanged_count:
  description: How many files of the release were in the shared directories already, with the same content.
  returned: always
  type: int
  sample: 412
removed:
  description:
    - What was (would be) removed, relative to C(<app_root>/shared/static); a directory ends with C(/). At most
      50; RV(removed_count) counts them all.
  returned: always
  type: list
  elements: str
  sample: ["static/css/app.0c1d2e3f.css", "static/old/"]
removed_count:
  description: How many files and directories were (would be) removed.
  returned: always
  type: int
  sample: 2
skipped:
  description:
    - What the release's directories hold that is not copied, by its path relative to the release, and why
      (C(symlink), C(FIFO), C(socket), C(character device), C(block device), a hard link to another user's file, a
      name with a control character). At most 50; RV(skipped_count) counts them all.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The path relative to the release, control characters and undecodable bytes escaped.
      type: str
    type:
      description: Why it is skipped.
      type: str
  sample: [{"path": "staticfiles/admin", "type": "symlink"}]
skipped_count:
  description: How many entries were skipped.
  returned: always
  type: int
  sample: 1
msg:
  description: What was done.
  returned: always
  type: str
  sample: "copied 2 files of release 2026.11.22-1 (412 unchanged), removed 2 entries; shared directories: /static/
    /srv/shop/shared/static/static"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _static


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type='path', required=True),
            static=dict(type='dict', required=True),
            release=dict(type='str'),
            prune=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result, warnings = _static.run(params['app_root'], params['static'], params['release'], params['prune'],
                                       check_mode=module.check_mode)
    except _static.StaticError as exc:
        module.fail_json(**dict(exc.result or dict(changed=False), msg=str(exc)))
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Decisions about a release's layout on the hosts. Each filter is documented in a file of its name beside this one.

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six import string_types
# The same rules as the module release_stage, which the role hands these paths and accounts to.
from ansible_collections.graceful.wsgi.plugins.module_utils._release_stage import ACCOUNT, MODE, RELATIVE_PATH


def release_path(value, option):
    """``value`` checked as a relative path inside a release (it becomes a root-owned path on the hosts)."""
    if not isinstance(value, string_types) or not RELATIVE_PATH.match(value) or \
            any(part in ('.', '..') for part in value.split('/')):
        raise AnsibleFilterError("%s: %r is not a path inside the release (names of letters, digits, '.', '_' and '-' "
                                 "joined by '/', no '.' or '..')" % (option, value))
    return value


def shared_path(item, user, group=None):
    """An entry of graceful_shared_paths as {path, owner, group, mode}: a name alone, or a dict with path and any of
    owner, group and mode. The defaults make it the app's (``user``, its group, 0750): uploads, SQLite files and
    caches must be writable by the app; give owner root for configuration the app must only read."""
    if isinstance(item, string_types):
        item = {'path': item}
    if not isinstance(item, dict) or 'path' not in item or set(item) - {'path', 'owner', 'group', 'mode'}:
        raise AnsibleFilterError('graceful_shared_paths: each entry is a path, or {path, owner, group, mode} '
                                 '(got %r)' % (item,))
    path = release_path(item['path'], 'graceful_shared_paths')
    owner = str(item.get('owner') or user)
    entry = {'path': path, 'owner': owner, 'group': str(item.get('group') or group or owner),
             'mode': str(item.get('mode') or '0750')}
    for key in ('owner', 'group'):
        if not ACCOUNT.match(entry[key]):
            raise AnsibleFilterError('graceful_shared_paths: %s of %s must be a user or group name (got %r)'
                                     % (key, path, entry[key]))
    if not isinstance(item.get('mode', '0750'), string_types) or not MODE.match(entry['mode']):
        raise AnsibleFilterError("graceful_shared_paths: mode of %s must be octal digits as a string, like '0750' "
                                 "(got %r)" % (path, item.get('mode')))
    return entry


class FilterModule:
    def filters(self):
        return {'shared_path': shared_path, 'release_path': release_path}

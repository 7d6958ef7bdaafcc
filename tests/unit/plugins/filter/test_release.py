# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.wsgi.plugins.filter import release


def test_a_name_alone_is_the_apps_own_directory():
    assert release.shared_path('media', 'shop') == {'path': 'media', 'owner': 'shop', 'group': 'shop', 'mode': '0750'}


def test_an_entry_owned_by_root_keeps_the_default_group():
    assert release.shared_path({'path': 'config', 'owner': 'root'}, 'shop', 'shop') == {
        'path': 'config', 'owner': 'root', 'group': 'shop', 'mode': '0750'}


def test_a_dict_sets_owner_group_and_mode():
    assert release.shared_path({'path': 'config', 'owner': 'root', 'group': 'shop', 'mode': '0750'}, 'shop') == {
        'path': 'config', 'owner': 'root', 'group': 'shop', 'mode': '0750'}
    assert release.shared_path({'path': 'var/cache', 'mode': '0700'}, 'shop')['owner'] == 'shop'


@pytest.mark.parametrize('item, message', [
    ('../etc', "graceful_shared_paths: '../etc' is not a path inside the release"),
    ('a/./b', "graceful_shared_paths: 'a/./b' is not a path inside the release"),
    ('/srv/x', "graceful_shared_paths: '/srv/x' is not a path inside the release"),
    ('media\n', "graceful_shared_paths: 'media\\n' is not a path inside the release"),
    ({'path': 'media', 'mode': 750}, "graceful_shared_paths: mode of media must be octal digits as a string"),
    ({'path': 'media', 'owner': 'root;x'}, 'graceful_shared_paths: owner of media must be a user or group name'),
    ({'path': 'media', 'user': 'x'}, 'graceful_shared_paths: each entry is a path, or {path, owner, group, mode}'),
])
def test_invalid_entries_name_the_option_and_path(item, message):
    with pytest.raises(AnsibleFilterError) as error:
        release.shared_path(item, 'shop')
    assert str(error.value).startswith(message)


@pytest.mark.parametrize('value', ['staticfiles', 'build/static', 'a.b_c-d'])
def test_release_paths(value):
    assert release.release_path(value, 'graceful_static') == value


@pytest.mark.parametrize('value', ['', '.', '..', 'a/../b', '/abs', 'a//b', 'a/', 3])
def test_release_paths_refused(value):
    with pytest.raises(AnsibleFilterError, match='^graceful_release_writable_paths: '):
        release.release_path(value, 'graceful_release_writable_paths')

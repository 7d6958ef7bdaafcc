# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout installs the release's and uWSGI's Debian packages in one apt run while staging, from its own lists:
they must stay the release and uwsgi roles' defaults."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import yaml

ROLES = os.path.join(os.path.dirname(__file__), '..', '..', 'roles')


def role_file(role, name):
    with open(os.path.join(ROLES, role, name)) as handle:
        return yaml.safe_load(handle)


def test_the_rollout_installs_what_the_release_and_uwsgi_roles_would():
    rollout = role_file('rollout', 'vars/main.yml')
    assert rollout['rollout_release_packages'] == role_file('release', 'defaults/main.yml')['release_packages']
    assert rollout['rollout_server_packages']['uwsgi'] == role_file('uwsgi', 'defaults/main.yml')['uwsgi_packages']
    assert rollout['rollout_server_packages']['gunicorn'] == []

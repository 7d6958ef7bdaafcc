# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.test import names


@pytest.mark.parametrize('value', ['shop', 'v1', '2026.11.22-1', '20260101T120000Z-abc1234', 'v3-broken', 'A_b.c-d',
                                   'a' * 64, 7])
def test_names_that_become_one_path_component(value):
    assert names.safe_name(value)


# Each would leave the directory it names, inject a line, read as an option, or hide: refused whole.
@pytest.mark.parametrize('value', [
    'v1\n', '../../etc', 'a b', '', '.', '..', 'a/b', '-rf', '/etc', 'v1..2', '.hidden', 'v1 ', '\tv1', 'v1\r',
    'shop\x00', 'caf\u00e9', 'a' * 65, 'a\\b', None, True, ['v1'], {'v1': 1}, 1.5,
])
def test_names_refused(value):
    assert not names.safe_name(value)


@pytest.mark.parametrize('value', ['/srv/shop', '/srv', '/opt/apps/shop-2'])
def test_absolute_paths_of_safe_names(value):
    assert names.safe_abspath(value)


@pytest.mark.parametrize('value', ['/', '', 'srv/shop', '/srv/../etc', '/srv//shop', '/srv/shop/', '/srv/a b',
                                   '/srv/shop\n', '/srv/./shop', None, 3])
def test_absolute_paths_refused(value):
    assert not names.safe_abspath(value)


def test_the_tests_are_registered():
    assert names.TestModule().tests() == {'safe_name': names.safe_name, 'safe_abspath': names.safe_abspath}

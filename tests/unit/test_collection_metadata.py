# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's metadata agrees with itself: each plugin's version_added is a version the changelog released (or
galaxy.yml's), and every module is in an action group of meta/runtime.yml."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import glob
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(path):
    with open(os.path.join(ROOT, path)) as handle:
        return yaml.safe_load(handle)


def module_documentation(path):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'DOCUMENTATION':
            return yaml.safe_load(node.value.value)
    raise AssertionError('%s has no DOCUMENTATION' % path)


def plugin_documents():
    for path in sorted(glob.glob(os.path.join(ROOT, 'plugins', 'modules', '*.py'))):
        yield path, module_documentation(path)
    for path in sorted(glob.glob(os.path.join(ROOT, 'plugins', '*', '*.yml'))):
        yield path, load(path)['DOCUMENTATION']


def test_every_version_added_is_a_released_version_or_the_collection_s():
    versions = set(load('changelogs/changelog.yaml')['releases']) | {load('galaxy.yml')['version']}
    wrong = dict((os.path.relpath(path, ROOT), str(doc.get('version_added'))) for path, doc in plugin_documents()
                 if str(doc.get('version_added')) not in versions)
    assert not wrong, 'version_added not in %s: %s' % (sorted(versions), wrong)


def test_every_module_is_in_an_action_group():
    grouped = set(name for names in load('meta/runtime.yml')['action_groups'].values() for name in names)
    modules = set(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, 'plugins', 'modules', '*.py')))
    assert modules - grouped == set()

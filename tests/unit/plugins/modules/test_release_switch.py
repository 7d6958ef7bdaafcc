# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""release_switch on an app directory in a temporary tree, laid out as the role release lays it out."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import release_switch
from ansible_collections.graceful.wsgi.plugins.module_utils import _release_switch
from ansible_collections.graceful.wsgi.plugins.filter.rollout import previous_release, switch_record
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)


@pytest.fixture(autouse=True)
def trust_the_test_user(monkeypatch):
    monkeypatch.setattr(_release_switch, 'TRUSTED_UID', os.geteuid())


@pytest.fixture
def app_root(tmp_path):
    root = tmp_path / 'srv' / 'shop'
    for release in ('v1', 'v2'):
        bin_dir = root / 'releases' / release / 'venv' / 'bin'
        bin_dir.mkdir(parents=True)
        (bin_dir / 'python').write_text('')
    return root


def run(check=False, **args):
    args.update(_ansible_check_mode=check)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            release_switch.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def test_a_first_switch_makes_current_and_the_record(app_root):
    result, failed = run(app_root=str(app_root), release='v1')
    assert not failed, result
    assert result['changed'] and result['switched'] and result['before'] == '' and result['release'] == 'v1'
    assert os.readlink(str(app_root / 'current')) == 'releases/v1'
    entries = switch_record(result['record'])
    assert [(entry['release'], entry['from'], entry['reason']) for entry in entries] == [('v1', None, 'deploy')]
    assert entries[0]['at'].endswith('Z')
    assert oct((app_root / 'switches.jsonl').stat().st_mode & 0o777) == '0o644'


def test_a_deploy_then_a_rollback_keep_previous_for_the_next_rollback(app_root):
    run(app_root=str(app_root), release='v1')
    result, failed = run(app_root=str(app_root), release='v2')
    assert not failed
    assert result['before'] == 'v1'
    assert previous_release(switch_record(result['record']), 'v2') == 'v1'
    result, failed = run(app_root=str(app_root), release='v1', reason='rollback')
    assert not failed
    assert os.readlink(str(app_root / 'current')) == 'releases/v1'
    entries = switch_record(result['record'])
    assert [entry['reason'] for entry in entries] == ['deploy', 'deploy', 'rollback']
    # The same JSON line as the role's lineinfile wrote (json.dumps with Python's default separators, in order).
    line = (app_root / 'switches.jsonl').read_text().splitlines()[-1]
    assert list(json.loads(line)) == ['at', 'release', 'from', 'reason']


def test_current_on_the_release_already_changes_nothing(app_root):
    run(app_root=str(app_root), release='v1')
    before = (app_root / 'switches.jsonl').read_text()
    result, failed = run(app_root=str(app_root), release='v1')
    assert not failed and not result['changed'] and not result['switched']
    assert (app_root / 'switches.jsonl').read_text() == before


def test_check_mode_reports_the_switch_and_changes_nothing(app_root):
    run(app_root=str(app_root), release='v1')
    result, failed = run(check=True, app_root=str(app_root), release='v2')
    assert not failed and result['changed']
    assert os.readlink(str(app_root / 'current')) == 'releases/v1'
    assert len(switch_record(result['record'])) == 1


def test_a_release_that_is_not_installed_is_refused_and_current_stays(app_root):
    run(app_root=str(app_root), release='v1')
    result, failed = run(app_root=str(app_root), release='v3')
    assert failed
    assert 'releases/v3/venv/bin/python does not exist (not installed, or pruned)' in result['msg']
    assert os.readlink(str(app_root / 'current')) == 'releases/v1'


def test_a_current_that_is_not_a_symlink_is_left_alone(app_root):
    (app_root / 'current').mkdir()
    result, failed = run(app_root=str(app_root), release='v1')
    assert failed and 'is not a symlink' in result['msg']
    assert (app_root / 'current').is_dir() and not (app_root / 'switches.jsonl').exists()


def test_a_symlinked_record_is_refused_without_quoting_it(app_root, tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('password=hunter2\n')
    (app_root / 'switches.jsonl').symlink_to(secret)
    result, failed = run(app_root=str(app_root), release='v1')
    assert failed and 'symbolic link' in result['msg'] and 'hunter2' not in result['msg']
    assert secret.read_text() == 'password=hunter2\n'


def test_a_record_owned_by_another_user_is_not_trusted(app_root, monkeypatch):
    monkeypatch.setattr(_release_switch, 'TRUSTED_UID', os.geteuid() + 1)
    result, failed = run(app_root=str(app_root), release='v1')
    assert failed and 'not root' in result['msg']


@pytest.mark.parametrize('option, value', [('release', '../v1'), ('release', 'v1/x'), ('release', '.hidden'),
                                           ('app_root', 'srv/shop'), ('app_root', '/srv/../etc')])
def test_names_that_could_become_other_paths_are_refused(app_root, option, value):
    args = dict(app_root=str(app_root), release='v1')
    args[option] = value
    result, failed = run(**args)
    assert failed and result['msg'].startswith(option + '=')
    assert not (app_root / 'current').exists()

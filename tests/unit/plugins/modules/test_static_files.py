# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible.module_utils import basic

from ansible_collections.graceful.wsgi.plugins.modules import static_files
from ansible_collections.graceful.wsgi.plugins.module_utils import _static
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)


@pytest.fixture
def app(tmp_path):
    root = tmp_path / 'shop'
    for release in ('v1', 'v2'):
        static = root / 'releases' / release / 'staticfiles' / 'css'
        static.mkdir(parents=True)
        (static / ('app.%s.css' % release)).write_text(release)
    return root


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, text: seen.append(text))
    return seen


def run(check=False, **args):
    args.setdefault('static', {'/static/': 'staticfiles'})
    args['_ansible_check_mode'] = check
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            static_files.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def test_merge_then_nothing_to_do(app, warnings):
    result, failed = run(app_root=str(app), release='v1')
    assert not failed and result['changed'], result
    assert result['copied'] == ['static/css/app.v1.css'] and result['copied_count'] == 1
    assert result['dirs'] == {'/static/': str(app / 'shared' / 'static' / 'static')}
    assert (app / 'shared' / 'static' / 'static' / 'css' / 'app.v1.css').read_text() == 'v1'
    result, failed = run(app_root=str(app), release='v1')
    assert not failed and not result['changed'] and result['unchanged_count'] == 1
    assert warnings == []


def test_check_mode_changes_nothing(app):
    result, failed = run(check=True, app_root=str(app), release='v2')
    assert not failed and result['changed'] and result['copied'] == ['static/css/app.v2.css']
    assert result['msg'].startswith('would copy 1 file of release v2 (0 unchanged)')
    assert not (app / 'shared').exists()


def test_prune_after_keep_releases(app):
    run(app_root=str(app), release='v1')
    run(app_root=str(app), release='v2')
    os.rename(str(app / 'releases' / 'v1'), str(app / 'v1-gone'))
    result, failed = run(check=True, app_root=str(app), release='v2')
    assert not failed and result['removed'] == ['static/css/app.v1.css'] and result['removed_count'] == 1
    assert (app / 'shared' / 'static' / 'static' / 'css' / 'app.v1.css').exists()
    result, failed = run(app_root=str(app))
    assert not failed and result['changed'] and result['removed'] == ['static/css/app.v1.css']
    result, failed = run(app_root=str(app), release='v2', prune=False)
    assert not failed and not result['changed']


def test_a_prefix_no_release_has_warns(app, warnings):
    result, failed = run(app_root=str(app), static={'/assets/': 'collected'})
    assert not failed and result['changed'] and result['removed'] == []  # the shared directory is made
    assert warnings == ["static['/assets/']: no release in %s has the directory collected; nothing pruned from %s" % (
        app / 'releases', app / 'shared' / 'static' / 'assets')]


@pytest.mark.parametrize('args, message', [
    (dict(static={'/': 'staticfiles'}), "static key '/': not a URL path prefix"),
    (dict(static={'/static/': '../etc'}), "static['/static/'] = '../etc': not a directory relative to the release"),
    (dict(release='../v1'), "release='../v1': not a release name"),
    (dict(release='v3'), 'release=v3: {app}/releases/v3 does not exist'),
    (dict(release='v2', static={'/static/': 'staticfiles', '/media/': 'media'}),
     'static (graceful_static) maps /media/ to media, but {app}/releases/v2/media does not exist in release v2: does '
     'an after_stage hook (collectstatic) create it?'),
])
def test_bad_input_fails_naming_the_option(app, args, message):
    result, failed = run(app_root=str(app), **args)
    assert failed and not result['changed']
    assert result['msg'].startswith(message.format(app=app))


def test_a_required_option_is_required(app):
    result, failed = run(app_root=str(app), static=None)
    assert failed and 'static' in result['msg']


def test_a_failure_midway_reports_what_was_done(app, monkeypatch):
    real = os.fsync
    calls = []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file, once its temporary file is written
            raise OSError(28, 'No space left on device')
        return real(fd)

    (app / 'releases' / 'v1' / 'staticfiles' / 'css' / 'z.css').write_text('z')
    monkeypatch.setattr(_static.os, 'fsync', full_disk)
    result, failed = run(app_root=str(app), release='v1')
    assert failed and result['changed'] and result['copied'] == ['static/css/app.v1.css']
    assert result['msg'] == 'cannot copy %s to %s: No space left on device' % (
        app / 'releases' / 'v1' / 'staticfiles' / 'css' / 'z.css', app / 'shared' / 'static' / 'static' / 'css' / 'z.css')
    assert sorted(os.listdir(str(app / 'shared' / 'static' / 'static' / 'css'))) == ['app.v1.css']  # no temporary left

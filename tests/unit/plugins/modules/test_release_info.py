# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""release_info on an app directory in a temporary tree, laid out as the role release lays it out."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import subprocess
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import release_info
from ansible_collections.graceful.wsgi.plugins.module_utils import _release_info, _release_switch
from ansible_collections.graceful.wsgi.plugins.filter.rollout import switch_record
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

COMMIT = '9f2c4e1b7a0d3c5e8f6a1b2c3d4e5f60718293a4'
SECRET = 'do-not-echo-me'


@pytest.fixture(autouse=True)
def trust_the_test_user(monkeypatch):
    monkeypatch.setattr(_release_switch, 'TRUSTED_UID', os.geteuid())


@pytest.fixture
def app_root(tmp_path):
    root = tmp_path / 'srv' / 'shop'
    for release in ('v1', 'v2'):
        (root / 'releases' / release).mkdir(parents=True)
    (root / 'releases' / 'v2' / 'REVISION').write_text(COMMIT + '\n')
    os.symlink('releases/v2', str(root / 'current'))
    return root


def run(check=False, **args):
    args.update(_ansible_check_mode=check)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            release_info.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


@pytest.mark.parametrize('check', [False, True])
def test_the_live_release_and_its_commit_in_one_call(app_root, check):
    result, failed = run(check=check, app_root=str(app_root))
    assert not failed, result
    assert (result['release'], result['commit'], result['changed']) == ('v2', COMMIT, False)
    assert 'record' not in result
    assert result['msg'] == '%s/current points to releases/v2 (commit %s)' % (app_root, COMMIT[:12])


def test_no_current_is_no_release_and_no_commit(tmp_path):
    result, failed = run(app_root=str(tmp_path / 'srv' / 'new'))
    assert not failed, result
    assert (result['release'], result['commit']) == ('', '')
    assert result['msg'].endswith('/current does not exist')


def test_a_release_without_revision_has_no_commit(app_root):
    os.remove(str(app_root / 'current'))
    os.symlink('releases/v1', str(app_root / 'current'))
    result, failed = run(app_root=str(app_root))
    assert not failed
    assert (result['release'], result['commit']) == ('v1', '')


def test_a_dangling_current_still_names_its_release(app_root):
    os.remove(str(app_root / 'current'))
    os.symlink('releases/v9', str(app_root / 'current'))
    result, failed = run(app_root=str(app_root))
    assert not failed
    assert (result['release'], result['commit']) == ('v9', '')


@pytest.mark.parametrize('text, commit', [
    ('v1.4.2\n', 'v1.4.2'),
    ('%s\nsecond line\n' % COMMIT, COMMIT),
    ('a' * 64 + '\n', 'a' * 40),
    ('not a revision\n', ''),
    ('', ''),
    ('\x00\x01\x02', ''),
])
def test_only_a_revision_on_the_first_line_is_returned(app_root, text, commit):
    (app_root / 'releases' / 'v2' / 'REVISION').write_text(text)
    result, failed = run(app_root=str(app_root))
    assert not failed
    assert result['commit'] == commit


def test_the_record_of_switches_on_request(app_root):
    line = '{"at": "2026-11-27T09:12:01Z", "release": "v2", "from": "v1", "reason": "deploy"}\n'
    (app_root / 'switches.jsonl').write_text(line)
    result, failed = run(app_root=str(app_root), record=True)
    assert not failed
    assert result['record'] == line
    assert [entry['release'] for entry in switch_record(result['record'])] == ['v2']


def test_no_record_yet_is_an_empty_record(app_root):
    result, failed = run(app_root=str(app_root), record=True)
    assert not failed
    assert result['record'] == ''


def test_a_current_that_is_not_a_symlink_is_refused_by_name(app_root):
    os.remove(str(app_root / 'current'))
    (app_root / 'current').mkdir()
    result, failed = run(app_root=str(app_root))
    assert failed
    assert result['msg'].startswith('%s/current is not a symlink' % app_root)


@pytest.mark.parametrize('target', ['/etc', '../../etc', 'releases/../../etc', 'releases/v2/venv', 'elsewhere/v2'])
def test_a_current_pointing_outside_the_releases_is_refused_by_name(app_root, target):
    os.remove(str(app_root / 'current'))
    os.symlink(target, str(app_root / 'current'))
    result, failed = run(app_root=str(app_root))
    assert failed
    assert result['msg'] == '%s/current points to %r, not to releases/NAME as the release role switches it' % (
        app_root, target)


def test_a_revision_that_is_a_symlink_is_not_followed(app_root, tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text(SECRET + '\n')
    revision = app_root / 'releases' / 'v2' / 'REVISION'
    revision.unlink()
    os.symlink(str(secret), str(revision))
    result, failed = run(app_root=str(app_root))
    assert failed
    assert result['msg'] == "%s is a symbolic link; a release's REVISION is never followed through one" % revision
    assert SECRET not in repr(result)


def test_a_revision_of_another_user_is_refused_and_not_quoted(app_root, monkeypatch):
    monkeypatch.setattr(_release_switch, 'TRUSTED_UID', os.geteuid() + 1)
    (app_root / 'releases' / 'v2' / 'REVISION').write_text(SECRET + '\n')
    result, failed = run(app_root=str(app_root))
    assert failed
    assert 'not root; not trusted' in result['msg'] and 'REVISION' in result['msg']
    assert SECRET not in repr(result)


def test_a_revision_that_is_a_fifo_fails_at_once(app_root):
    revision = app_root / 'releases' / 'v2' / 'REVISION'
    revision.unlink()
    os.mkfifo(str(revision))
    started = time.monotonic()
    result, failed = run(app_root=str(app_root))
    assert failed and time.monotonic() - started < 2
    assert result['msg'] == "%s is not a regular file; not read as the release's commit" % revision


def test_a_revision_too_large_is_refused(app_root):
    (app_root / 'releases' / 'v2' / 'REVISION').write_text(COMMIT + '\n' + 'x' * 5000)
    result, failed = run(app_root=str(app_root))
    assert failed
    assert result['msg'].endswith('REVISION is 5041 bytes, too large for a commit')


def test_a_record_that_is_a_symlink_is_not_followed(app_root, tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text(SECRET)
    os.symlink(str(secret), str(app_root / 'switches.jsonl'))
    result, failed = run(app_root=str(app_root), record=True)
    assert failed
    assert 'switches.jsonl is a symbolic link' in result['msg']
    assert SECRET not in repr(result)


@pytest.mark.parametrize('app_root', ['relative/shop', '/srv/../etc', '/srv/shop dir', '/srv/$(id)'])
def test_a_bad_app_root_is_refused_by_name(app_root):
    result, failed = run(app_root=app_root)
    assert failed
    assert result['msg'].startswith('app_root=')


def test_the_default_ipv4_is_the_source_address_of_the_default_route(app_root):
    result, failed = run(app_root=str(app_root), default_ipv4=True)
    assert not failed, result
    expected = subprocess.run(['ip', '-4', 'route', 'get', '8.8.8.8'], stdout=subprocess.PIPE, text=True,
                              check=False).stdout.split()
    assert result['default_ipv4'] == (expected[expected.index('src') + 1] if 'src' in expected else '')


def test_no_default_route_is_no_default_ipv4(app_root, monkeypatch):
    class NoRoute:
        def __init__(self, *args):
            self.closed = False

        def connect(self, address):
            raise OSError(errno.ENETUNREACH, 'Network is unreachable')

        def close(self):
            self.closed = True

    monkeypatch.setattr(_release_info.socket, 'socket', NoRoute)
    result, failed = run(app_root=str(app_root), default_ipv4=True)
    assert not failed
    assert result['default_ipv4'] == ''


def test_the_default_ipv4_only_on_request(app_root):
    result, failed = run(app_root=str(app_root))
    assert 'default_ipv4' not in result

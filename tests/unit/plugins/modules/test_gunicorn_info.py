# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import gunicorn_info
from ansible_collections.graceful.wsgi.plugins.module_utils import _proc
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.fake_gunicorn import FakeGunicorn
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.no_ptrace import NoPtrace
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)


@pytest.fixture
def gunicorn(tmp_path, monkeypatch):
    fake = FakeGunicorn(tmp_path)
    monkeypatch.setattr(_proc, 'PROC', str(fake.proc))
    monkeypatch.setattr(os, 'kill', fake.kill)
    return fake


def run(fake, **args):
    with set_module_args(dict(pidfile=str(fake.pidfile), **args)):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            gunicorn_info.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def test_reports_master_workers_and_no_upgrade(gunicorn):
    result, failed = run(gunicorn)
    assert not failed and not result['changed']
    assert result['master_pid'] == 100
    assert result['master_age'] == pytest.approx(1000 - 5100 / float(os.sysconf('SC_CLK_TCK')), abs=0.01)
    assert [w['pid'] for w in result['workers']] == sorted(gunicorn.workers_of(100))
    assert all(w['booted'] for w in result['workers']) and result['workers_booted'] == 3
    assert result['log_files'] == [str(gunicorn.log)]
    assert result['upgrade']['pending'] is False and result['upgrade']['pidfile_present'] is False
    assert gunicorn.kills == []


def test_reports_a_pending_upgrade_with_its_workers_not_booted(gunicorn):
    os.kill(100, signal.SIGUSR2)
    gunicorn.step()
    new_master = gunicorn.upgrade_child(100)
    result, failed = run(gunicorn)
    assert not failed
    upgrade = result['upgrade']
    assert upgrade['pending'] and upgrade['new_master_pid'] == new_master
    assert upgrade['pidfile_present'] and upgrade['pidfile_pid'] == new_master and not upgrade['pidfile_stale']
    assert [w['booted'] for w in upgrade['new_workers']] == [False, False, False]


def test_flags_a_stale_upgrade_pidfile(gunicorn):
    (gunicorn.root / 'gunicorn.pid.2').write_text('4242\n')
    result, failed = run(gunicorn)
    assert not failed
    assert result['upgrade']['pidfile_stale'] and not result['upgrade']['pending']


def test_fails_naming_the_pidfile_when_it_is_stale(gunicorn):
    gunicorn.pidfile.write_text('999\n')
    result, failed = run(gunicorn)
    assert failed and result['msg'] == 'pidfile=%s names pid 999, which is not running (stale pidfile)' % gunicorn.pidfile


def test_root_without_cap_sys_ptrace_reads_each_process_as_its_owner(gunicorn, monkeypatch):
    no_ptrace = NoPtrace(monkeypatch, gunicorn.proc, owner=(1000, 1001, True))
    result, failed = run(gunicorn, expected_user='1000')  # the fake's pidfile is root's
    assert not failed, result['msg']
    assert [w['pid'] for w in result['workers']] == sorted(gunicorn.workers_of(100))
    assert result['workers_booted'] == 3 and result['log_files'] == [str(gunicorn.log)]
    # environ and heartbeats of the master and of each worker, then the master's logs and maps (no
    # relative --pid, so no cwd): each process in one read, never a fork for what could be read directly.
    # Its config file is read as its user too, always: its path comes from a command line that user controls.
    assert len(no_ptrace.owner_reads) == 1 + 3 + 2 + 1
    assert set(no_ptrace.owner_reads) == {(1000, 1001, _proc.OWNER_READ_SECONDS)}


def test_another_user_denied_the_descriptors_keeps_the_message(gunicorn, monkeypatch):
    no_ptrace = NoPtrace(monkeypatch, gunicorn.proc, euid=1000)
    result, failed = run(gunicorn, expected_user='1000')
    assert failed and result['msg'] == ('cannot read %s/100/fd: permission denied; run the module as the user '
                                        'gunicorn runs as, or as root' % gunicorn.proc)
    assert no_ptrace.owner_reads == []


def test_root_that_cannot_read_as_the_owner_either_fails_saying_why(gunicorn, monkeypatch):
    NoPtrace(monkeypatch, gunicorn.proc, owner=(0, 0, True))
    result, failed = run(gunicorn)
    assert failed and result['msg'].startswith(
        'cannot read environ and fd of pid 100: root may not without CAP_SYS_PTRACE (Permission denied), and ')


@pytest.mark.parametrize('config, extra_args, value, source', [
    ('preload_app = False\n', (), False, '{config} line 1'),
    ('bind = "127.0.0.1:8000"\n', ('--preload',), True, 'the command line (--preload)'),
    ('preload_app = "True" if True else "False"\n', (), None,
     '{config} line 1 sets preload_app to something other than true or false'),
])
def test_reports_whether_the_master_preloaded_the_app_and_where_it_was_read(tmp_path, monkeypatch, config,
                                                                            extra_args, value, source):
    fake = FakeGunicorn(tmp_path, config=config, extra_args=extra_args)
    monkeypatch.setattr(_proc, 'PROC', str(fake.proc))
    result, failed = run(fake)
    assert not failed, result['msg']
    assert result['preload_app'] is value and result['preload_app_source'] == source.format(config=fake.config)

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import gunicorn_reload
from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.fake_gunicorn import FakeGunicorn
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)


@pytest.fixture
def gunicorn(tmp_path, monkeypatch):
    return make_fake(tmp_path, monkeypatch)


def make_fake(tmp_path, monkeypatch, **kwargs):
    fake = FakeGunicorn(tmp_path, **kwargs)
    monkeypatch.setattr(_gunicorn, 'PROC', str(fake.proc))
    monkeypatch.setattr(os, 'kill', fake.kill)
    # The simulated gunicorn moves one state further at every look the module takes at /proc.
    for name in ('inspect_master', 'same_process', 'is_gone'):
        monkeypatch.setattr(_gunicorn, name, stepping(fake, getattr(_gunicorn, name)))
    monkeypatch.setattr(gunicorn_reload, 'ABORT_GRACE_SECONDS', 0.5)
    return fake


def stepping(fake, look):
    def step_then_look(*args, **kwargs):
        fake.step()
        return look(*args, **kwargs)
    return step_then_look


def run(fake, check_mode=False, **args):
    module_args = dict(pidfile=str(fake.pidfile), poll_interval=0.001, timeout=5)
    module_args.update(args)
    if check_mode:
        module_args['_ansible_check_mode'] = True
    with set_module_args(module_args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            gunicorn_reload.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def signals(fake):
    return [(pid, signal.Signals(sig).name) for pid, sig in fake.kills]


def test_hup_waits_until_every_new_worker_booted(gunicorn):
    before = sorted(gunicorn.workers_of(100))
    result, failed = run(gunicorn)
    assert not failed, result['msg']
    assert result['changed'] and result['mode'] == 'hup'
    assert result['master_pid_before'] == result['master_pid'] == 100
    assert result['workers_before'] == before
    assert len(result['workers_after']) == 3 and not set(result['workers_after']) & set(before)
    assert result['signals'] == ['HUP 100'] and signals(gunicorn) == [(100, 'SIGHUP')]
    assert 'hup complete' in result['msg']


def test_hup_with_a_release_that_cannot_boot_says_the_service_is_down(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, broken=True)
    result, failed = run(fake)
    assert failed
    assert 'the service is DOWN' in result['msg'] and 'mode=upgrade' in result['msg']
    assert 'RuntimeError: release 2 is broken' in result['msg']
    assert result['exit_code'] == 3
    assert any('exited with code 3' in line for line in result['log_tail'])


def test_upgrade_replaces_the_master_and_waits_for_the_promotion(gunicorn):
    before = sorted(gunicorn.workers_of(100))
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    new_master = result['master_pid']
    assert result['master_pid_before'] == 100 and new_master != 100
    assert gunicorn.pidfile.read_text().strip() == str(new_master)
    assert not (tmp_path_of(gunicorn) / 'gunicorn.pid.2').exists()
    assert sorted(result['workers_after']) == sorted(gunicorn.workers_of(new_master))
    assert not set(result['workers_after']) & set(before)
    assert signals(gunicorn) == [(100, 'SIGUSR2'), (100, 'SIGTERM')]
    assert 'upgrade complete, master 100 -> %d' % new_master in result['msg']


def test_upgrade_without_wait_returns_once_the_old_master_was_told_to_stop(gunicorn):
    result, failed = run(gunicorn, mode='upgrade', wait=False)
    assert not failed, result['msg']
    assert result['signals'] == ['USR2 100', 'TERM 100']
    assert 'not waiting for it to drain' in result['msg']
    assert 100 in gunicorn.processes or gunicorn.pending  # the old master has not been waited for


def test_upgrade_with_a_broken_release_keeps_the_old_master(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, broken=True)
    old_workers = sorted(fake.workers_of(100))
    result, failed = run(fake, mode='upgrade')
    assert failed
    assert 'The old master 100 still serves with workers %s' % old_workers in result['msg']
    assert 'RuntimeError: release 2 is broken' in result['msg']
    assert result['exit_code'] == 3
    assert fake.pidfile.read_text().strip() == '100'
    assert (100, signal.SIGTERM) not in fake.kills
    # gunicorn 27 leaves the dead new master's pidfile behind; the module removes it.
    assert not (tmp_path / 'gunicorn.pid.2').exists()
    assert 'removed %s.2, left behind by the dead new master' % fake.pidfile in result['msg']


def test_a_new_master_that_died_unseen_leaves_no_upgrade_pidfile(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, broken=True)
    real_inspect = _gunicorn.inspect_master

    def miss_the_new_master(pid, proc_root=None):
        while fake.pending:  # everything happens between two polls
            fake.step()
        return real_inspect(pid, proc_root)

    monkeypatch.setattr(_gunicorn, 'inspect_master', miss_the_new_master)
    result, failed = run(fake, mode='upgrade')
    assert failed and 'the new master exited before it could be inspected' in result['msg']
    assert not (tmp_path / 'gunicorn.pid.2').exists()
    assert 'The old master 100 still serves' in result['msg']


def test_upgrade_whose_workers_never_boot_is_aborted_at_the_timeout(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, never_ready=True)
    result, failed = run(fake, mode='upgrade', timeout=0.3)
    assert failed
    new_master = [pid for pid, sig in fake.kills if sig == signal.SIGTERM][0]
    assert new_master != 100
    assert 'did not all boot within timeout=0.3s' in result['msg']
    assert 'stopped it (TERM)' in result['msg'] and 'old master 100 still serves' in result['msg']
    assert (100, signal.SIGTERM) not in fake.kills and 100 in fake.processes


@pytest.mark.parametrize('content, message', [
    ('', 'it is empty'),
    ('garbage\n', 'does not hold a PID'),
    ('999\n', 'names pid 999, which is not running (stale pidfile)'),
])
def test_a_pidfile_that_names_no_master_gets_no_signal(gunicorn, content, message):
    gunicorn.pidfile.write_text(content)
    result, failed = run(gunicorn, mode='upgrade')
    assert failed and message in result['msg'] and 'nothing was signalled' in result['msg']
    assert str(gunicorn.pidfile) in result['msg']
    assert gunicorn.kills == []


def test_a_missing_pidfile_is_named(gunicorn):
    gunicorn.pidfile.unlink()
    result, failed = run(gunicorn)
    assert failed and 'pidfile=%s does not exist' % gunicorn.pidfile in result['msg']
    assert gunicorn.kills == []


def test_a_pidfile_naming_another_program_gets_no_signal(gunicorn):
    gunicorn.add(300, 1, ['/usr/bin/sleep', '1000'], {}, 7000)
    gunicorn.write()
    gunicorn.pidfile.write_text('300\n')
    result, failed = run(gunicorn)
    assert failed and 'names pid 300 (/usr/bin/sleep 1000), which is not a gunicorn process' in result['msg']
    assert gunicorn.kills == []


def test_a_pidfile_naming_a_worker_gets_no_signal(gunicorn):
    worker = gunicorn.workers_of(100)[0]
    gunicorn.pidfile.write_text('%d\n' % worker)
    result, failed = run(gunicorn)
    assert failed and 'a gunicorn worker of master 100, not a master' in result['msg']
    assert gunicorn.kills == []


def test_a_master_of_another_instance_gets_no_signal(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, pidfile_arg='/run/other/gunicorn.pid')
    result, failed = run(fake)
    assert failed and 'started with --pid /run/other/gunicorn.pid: another instance' in result['msg']
    assert fake.kills == []


def test_a_second_upgrade_while_one_is_pending_is_refused(gunicorn):
    os.kill(100, signal.SIGUSR2)
    gunicorn.step()
    new_master = gunicorn.upgrade_child(100)
    gunicorn.kills = []
    result, failed = run(gunicorn, mode='upgrade')
    assert failed and 'an upgrade is already pending: new master %d' % new_master in result['msg']
    assert gunicorn.kills == []


def test_the_new_master_of_a_pending_upgrade_is_refused(gunicorn):
    os.kill(100, signal.SIGUSR2)
    gunicorn.step()
    new_master = gunicorn.upgrade_child(100)
    gunicorn.kills = []
    gunicorn.pidfile.write_text('%d\n' % new_master)
    result, failed = run(gunicorn, mode='hup')
    assert failed and 'not promoted yet (old master 100 still running)' in result['msg']
    assert gunicorn.kills == []


def test_a_stale_upgrade_pidfile_naming_a_live_process_is_refused(gunicorn):
    gunicorn.add(300, 1, ['/usr/sbin/cron'], {}, 7000)
    gunicorn.write()
    (tmp_path_of(gunicorn) / 'gunicorn.pid.2').write_text('300\n')
    result, failed = run(gunicorn, mode='upgrade')
    assert failed and 'would refuse to start' in result['msg'] and 'remove the stale file' in result['msg']
    assert gunicorn.kills == []


def test_check_mode_proves_identity_and_sends_nothing(gunicorn):
    result, failed = run(gunicorn, check_mode=True, mode='upgrade')
    assert not failed and result['changed']
    assert result['msg'].startswith('would send USR2 to gunicorn master 100')
    assert result['workers_before'] == sorted(gunicorn.workers_of(100))
    assert gunicorn.kills == []


def test_check_mode_still_fails_on_a_stale_pidfile(gunicorn):
    gunicorn.pidfile.write_text('999\n')
    result, failed = run(gunicorn, check_mode=True)
    assert failed and 'stale pidfile' in result['msg']


@pytest.mark.parametrize('option', ['timeout', 'poll_interval'])
def test_non_positive_durations_are_rejected(gunicorn, option):
    result, failed = run(gunicorn, **{option: 0})
    assert failed and result['msg'] == '%s=0.0: must be positive' % option
    assert gunicorn.kills == []


def test_signalling_is_refused_when_the_pid_was_reused(gunicorn, monkeypatch):
    # Identification passed; by the time of the signal the PID belongs to a process started later.
    monkeypatch.setattr(_gunicorn, 'same_process', lambda master, proc_root=None: False)
    result, failed = run(gunicorn)
    assert failed and 'no longer the gunicorn master inspected before' in result['msg']
    assert gunicorn.kills == []


def tmp_path_of(fake):
    return fake.root

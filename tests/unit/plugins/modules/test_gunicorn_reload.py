# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import signal
import stat

import pytest

from ansible.module_utils import basic

from ansible_collections.graceful.wsgi.plugins.modules import gunicorn_reload
from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _gunicorn_reload, _proc, _systemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.fake_gunicorn import FakeGunicorn, FakeSystemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.no_ptrace import NoPtrace
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)


@pytest.fixture
def gunicorn(tmp_path, monkeypatch):
    return make_fake(tmp_path, monkeypatch)


def make_fake(tmp_path, monkeypatch, **kwargs):
    fake = FakeGunicorn(tmp_path, **kwargs)
    monkeypatch.setattr(_proc, 'PROC', str(fake.proc))
    monkeypatch.setattr(os, 'kill', fake.kill)
    # The simulated gunicorn moves one state further at every look the module takes at /proc.
    for name in ('inspect_master', 'same_process', 'is_gone'):
        monkeypatch.setattr(_gunicorn, name, stepping(fake, getattr(_gunicorn, name)))
    monkeypatch.setattr(_gunicorn_reload, 'ABORT_GRACE_SECONDS', 0.5)
    monkeypatch.setattr(_gunicorn_reload, 'SYSTEMD_POLL_SECONDS', 0.0)
    # No command runs unless a test puts the fake under a FakeSystemd (see with_systemd), and only through
    # _systemd.run, which bounds it.
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, args, **kw: unexpected_command(args))
    monkeypatch.setattr(_systemd, 'run', lambda args, timeout=None: unexpected_command(args))
    return fake


def unexpected_command(args):
    raise AssertionError('unexpected command: %r' % (args,))


def with_systemd(fake, monkeypatch, **kwargs):
    systemd = FakeSystemd(fake, **kwargs)
    monkeypatch.setattr(_systemd, 'run', systemd.run)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path',
                        lambda self, name, *args, **kw: '/usr/bin/%s' % name if name in ('systemctl', 'journalctl')
                        else None)
    return systemd


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


def test_hup_is_not_complete_while_the_master_lists_fewer_new_workers_than_before(tmp_path, monkeypatch):
    # Seen on a loaded machine: the old workers gone and one new one booted before the listing showed the second.
    fake = make_fake(tmp_path, monkeypatch, hup_staggered=True)
    before = sorted(fake.workers_of(100))
    result, failed = run(fake)
    assert not failed, result['msg']
    assert len(result['workers_after']) == 3 and not set(result['workers_after']) & set(before)
    assert 'hup complete, master 100, 3 workers replaced' in result['msg']


def test_a_hup_that_leaves_fewer_workers_completes_once_the_set_settled(tmp_path, monkeypatch):
    # A HUP that read a smaller workers setting: the one new worker is the whole generation once it stays alone.
    fake = make_fake(tmp_path, monkeypatch, hup_staggered=True)
    fake.count = 1
    monkeypatch.setattr(_gunicorn_reload, 'SETTLE_SECONDS', 0.05)
    result, failed = run(fake)
    assert not failed, result['msg']
    assert 'hup complete, master 100, 1 workers replaced' in result['msg']


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
    assert result['pidfile_handover'] is True
    assert result['systemd_unit'] is None and result['systemd_main_pid'] is None


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
    assert result['pidfile_handover'] is False
    # gunicorn 27 leaves the dead new master's pidfile behind; the module removes it.
    assert not (tmp_path / 'gunicorn.pid.2').exists()
    assert 'removed %s.2, left behind by the dead new master' % fake.pidfile in result['msg']


@pytest.mark.parametrize('exits', ['before the look', 'after the look'])
def test_a_new_master_that_exits_by_itself_as_the_abort_signals_it_is_reported_gone(tmp_path, monkeypatch, exits):
    """Seen with gunicorn 20.1.0 under load: the new master of a broken release exited between the abort's look at
    it and its TERM. The abort reports it gone, with the old master serving, instead of failing over its PID."""
    fake = make_fake(tmp_path, monkeypatch, never_ready=True)
    real_abort = _gunicorn_reload.UpgradeReload.abort
    looked = _gunicorn.same_process
    aborting = []

    def abort(self, why):
        aborting.append(why)
        return real_abort(self, why)

    def exit_new_master(master):
        if aborting and master.pid != 100 and master.pid in fake.processes:
            for worker in fake.workers_of(master.pid):
                fake.remove(worker)
            fake.remove(master.pid)
            fake.write()

    def same_process(master, proc_root=None):
        if exits == 'before the look':
            exit_new_master(master)
            return looked(master, proc_root)
        answer = looked(master, proc_root)
        exit_new_master(master)  # then os.kill finds no such process
        return answer

    monkeypatch.setattr(_gunicorn_reload.UpgradeReload, 'abort', abort)
    monkeypatch.setattr(_gunicorn, 'same_process', same_process)
    result, failed = run(fake, mode='upgrade', timeout=0.3)
    assert failed and aborting
    assert 'did not all boot within timeout=0.3s' in result['msg'] and 'it had exited' in result['msg']
    assert 'is no longer the gunicorn master' not in result['msg'] and 'No such process' not in result['msg']
    assert 'The old master 100 still serves' in result['msg']
    assert (100, signal.SIGTERM) not in fake.kills and fake.pidfile.read_text().strip() == '100'


@pytest.mark.parametrize('journal_lag', [0, 3])
def test_a_broken_release_under_systemd_is_explained_from_the_unit_journal(tmp_path, monkeypatch, journal_lag):
    """gunicorn under systemd logs to stderr, the journal: no log file in /proc, the cause is in the journal,
    possibly a little after the new master died."""
    fake = make_fake(tmp_path, monkeypatch, broken=True)
    systemd = with_systemd(fake, monkeypatch, pidfile=str(fake.pidfile), journal=True, journal_lag=journal_lag)
    result, failed = run(fake, mode='upgrade')
    assert failed
    assert 'RuntimeError: release 2 is broken' in result['msg']
    assert result['exit_code'] == 3
    assert any('RuntimeError' in line for line in result['log_tail'])
    assert (100, signal.SIGTERM) not in fake.kills
    cursor_queries = [argv for sent, argv in systemd.queries if '--show-cursor' in argv]
    assert len(cursor_queries) == 1 and [sent for sent, argv in systemd.queries if '--show-cursor' in argv] == [0]


def test_a_silent_journal_is_named_as_such(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, broken=True)
    with_systemd(fake, monkeypatch, pidfile=str(fake.pidfile), journal=True)
    monkeypatch.setattr(_gunicorn_reload, 'JOURNAL_SETTLE_SECONDS', 0.2)
    monkeypatch.setattr(fake, 'logs', lambda *lines: None)  # the broken release writes nothing anywhere
    result, failed = run(fake, mode='upgrade')
    assert failed
    assert 'none shown in the journal of app.service' in result['msg']


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


@pytest.mark.timeout(5)
def test_a_fifo_in_place_of_the_pidfile_fails_at_once(gunicorn):
    gunicorn.pidfile.unlink()
    os.mkfifo(str(gunicorn.pidfile), 0o600)
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert result['msg'] == 'pidfile=%s: it is a FIFO, not a regular file; nothing was signalled' % gunicorn.pidfile
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
    before = os.stat(str(gunicorn.pidfile))
    result, failed = run(gunicorn, check_mode=True, mode='upgrade')
    assert not failed and result['changed']
    assert result['msg'].startswith('would send USR2 to gunicorn master 100')
    assert 'hand the pidfile over to the new master' in result['msg']
    assert result['workers_before'] == sorted(gunicorn.workers_of(100))
    assert gunicorn.kills == []
    assert result['pidfile_handover'] is False
    after = os.stat(str(gunicorn.pidfile))
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (before.st_ino, before.st_mtime_ns, before.st_mode)
    assert gunicorn.pidfile.read_text() == '100\n'
    assert sorted(os.listdir(str(gunicorn.root))) == ['etc', 'gunicorn.log', 'gunicorn.pid', 'proc', 'tmp']


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


# ---------------------------------------------------------------- the pidfile handover (gunicorn issue 2856)

def new_master_of(fake):
    return [pid for pid in fake.processes if fake.processes[pid]['environ'].get('GUNICORN_PID') == '100'][0]


def files_beside_the_pidfile(fake):
    return sorted(name for name in os.listdir(str(fake.root)) if name not in ('proc', 'tmp', 'etc', 'gunicorn.log'))


def test_upgrade_hands_the_pidfile_over_before_the_old_master_gets_term(gunicorn):
    seen = []
    real_step = gunicorn.step

    def step_and_read_the_pidfile():
        real_step()
        seen.append(gunicorn.pidfile_text())

    gunicorn.step = step_and_read_the_pidfile
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    new_master = result['master_pid']
    # Never missing, never a third PID: the old master leaves the handed-over file alone, the new one keeps it.
    assert None not in seen and set(seen) == {'100', str(new_master)}
    assert seen.index(str(new_master)) > len(seen) - 1 - seen[::-1].index('100')
    # What the pidfile said when each signal reached the old master: USR2 with it, TERM already with the new one.
    assert [(pid, signal.Signals(sig).name, named) for pid, sig, named in gunicorn.pidfile_at_kill] == [
        (100, 'SIGUSR2', '100'), (100, 'SIGTERM', str(new_master))]
    assert result['pidfile_handover'] is True
    assert gunicorn.pidfile.read_text() == '%d\n' % new_master
    assert stat.S_IMODE(os.stat(str(gunicorn.pidfile)).st_mode) == 0o644
    assert files_beside_the_pidfile(gunicorn) == ['gunicorn.pid'], 'no temporary file, no .2 left'


def test_upgrade_without_wait_hands_the_pidfile_over_too(gunicorn):
    result, failed = run(gunicorn, mode='upgrade', wait=False)
    assert not failed, result['msg']
    assert result['pidfile_handover'] is True
    assert gunicorn.pidfile_at_kill[-1][:2] == (100, signal.SIGTERM)
    assert gunicorn.pidfile_at_kill[-1][2] == str(result['master_pid']) != '100'


def runs_as(monkeypatch, uid, gid):
    """Every process of the fake runs as uid:gid (the fake /proc is the test user's)."""
    monkeypatch.setattr(_proc, 'process_owner', lambda pid, proc_root=None: (uid, gid, True))


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another owner needs root')
def test_the_handed_over_pidfile_keeps_the_owner_and_group_of_the_old_one(gunicorn, monkeypatch):
    os.chown(str(gunicorn.pidfile), 4321, 4322)
    runs_as(monkeypatch, 4321, 4322)
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    status = os.stat(str(gunicorn.pidfile))
    assert gunicorn.pidfile.read_text().strip() == str(result['master_pid'])
    assert (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) == (4321, 4322, 0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another owner needs root')
def test_a_group_that_cannot_be_kept_does_not_stop_the_handover(gunicorn, monkeypatch):
    os.chown(str(gunicorn.pidfile), os.geteuid(), 4322)
    monkeypatch.setattr(os, 'fchown', refuse_fchown)
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    assert result['pidfile_handover'] is True
    assert os.stat(str(gunicorn.pidfile)).st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another owner needs root')
def test_an_owner_that_cannot_be_kept_aborts_the_upgrade(gunicorn, monkeypatch):
    os.chown(str(gunicorn.pidfile), 4321, 4322)
    runs_as(monkeypatch, 4321, 4322)
    monkeypatch.setattr(os, 'fchown', refuse_fchown)
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert 'cannot hand pidfile=%s over to it' % gunicorn.pidfile in result['msg']
    assert 'cannot give the new file the owner 4321:4322 of the old one' in result['msg']
    assert_aborted_before_term(gunicorn, result)


def refuse_fchown(fd, uid, gid):
    raise OSError(errno.EPERM, 'Operation not permitted')


def assert_aborted_before_term(fake, result):
    new_master = [pid for pid, sig in fake.kills if sig == signal.SIGTERM][0]
    assert new_master != 100
    assert signals(fake) == [(100, 'SIGUSR2'), (new_master, 'SIGTERM')]
    assert 'upgrade aborted, new master %d' % new_master in result['msg']
    assert 'so the old master 100 was not stopped; stopped it (TERM)' in result['msg']
    assert 'The old master 100 still serves' in result['msg']
    assert result['pidfile_handover'] is False
    assert 100 in fake.processes and new_master not in fake.processes
    assert fake.pidfile.read_text() == '100\n'
    assert files_beside_the_pidfile(fake) == ['gunicorn.pid'], 'no temporary file, no .2 left'


def test_a_pidfile_that_cannot_be_written_aborts_the_upgrade_and_spares_the_old_master(gunicorn, monkeypatch):
    real_rename = os.rename

    def refuse_to_replace_the_pidfile(source, target):
        if str(target) == str(gunicorn.pidfile):
            raise OSError(errno.EACCES, 'Permission denied', str(source))
        return real_rename(source, target)

    monkeypatch.setattr(os, 'rename', refuse_to_replace_the_pidfile)
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert 'cannot hand pidfile=%s over to it ([Errno 13] Permission denied' % gunicorn.pidfile in result['msg']
    assert_aborted_before_term(gunicorn, result)


@pytest.mark.parametrize('change, fragment', [
    (lambda fake: fake.pidfile.write_text('4242\n'), 'pidfile={pidfile} names pid 4242, not the old master 100,'),
    (lambda fake: fake.pidfile.unlink(), 'pidfile={pidfile} does not exist'),
])
def test_a_pidfile_changed_during_the_upgrade_stops_nothing(gunicorn, change, fragment):
    real_usr2 = gunicorn.on_usr2

    def usr2_then_change_the_pidfile_once_booted(pid):
        real_usr2(pid)
        boot = gunicorn.pending[-1]

        def boot_then_change():
            boot()
            change(gunicorn)
        gunicorn.pending[-1] = boot_then_change

    gunicorn.on_usr2 = usr2_then_change_the_pidfile_once_booted
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert fragment.format(pidfile=gunicorn.pidfile) in result['msg']
    assert 'the pidfile was not handed over and nothing was stopped' in result['msg']
    new_master = new_master_of(gunicorn)
    assert 'write %d to pidfile=%s and stop 100 to finish the upgrade, or stop %d to abort it' % (
        new_master, gunicorn.pidfile, new_master) in result['msg']
    assert signals(gunicorn) == [(100, 'SIGUSR2')]
    assert result['signals'] == ['USR2 100'] and result['pidfile_handover'] is False
    assert 100 in gunicorn.processes and new_master in gunicorn.processes


# ---------------------------------------------------------------- systemd follows the new master

def test_systemd_with_pidfile_follows_the_new_master(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile))
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    new_master = result['master_pid']
    assert result['systemd_unit'] == 'app.service'
    assert result['systemd_main_pid'] == new_master == systemd.main_pid
    assert systemd.restarts == 0
    assert 'systemd unit app.service follows it (MainPID %d, not restarted)' % new_master in result['msg']
    # Asked before USR2 (no signal sent yet), then after the promotion.
    assert [sent for sent, argv in systemd.queries] == [0, 2]
    assert systemd.queries[0][1] == ['/usr/bin/systemctl', 'show', '--property=MainPID,NRestarts,ActiveState,PIDFile',
                                     'app.service']


def test_systemd_that_has_not_reaped_the_old_master_yet_is_waited_for(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile), lag=3)
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    assert result['systemd_main_pid'] == result['master_pid']
    assert len(systemd.queries) == 5


def test_systemd_without_pidfile_restarts_the_unit_and_the_task_fails(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=None)
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert 'systemd did not follow the new master' in result['msg']
    assert 'unit app.service reports MainPID=900, ActiveState=active, NRestarts 0 -> 1' in result['msg']
    assert 'the unit needs PIDFile=%s (it has no PIDFile=)' % gunicorn.pidfile in result['msg']
    assert result['systemd_main_pid'] == 900 and systemd.restarts == 1
    assert result['pidfile_handover'] is True


def test_systemd_that_adopts_another_process_fails_the_task(gunicorn, monkeypatch):
    other = gunicorn.root / 'other.pid'
    gunicorn.add(300, 1, ['/usr/bin/sleep', '1000'], {}, 7000)
    other.write_text('300\n')
    with_systemd(gunicorn, monkeypatch, pidfile=str(other))
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert 'systemd did not follow the new master %d: unit app.service reports MainPID=300, ActiveState=active;' % (
        new_master_of(gunicorn)) in result['msg']
    assert 'the unit needs PIDFile=%s (it has PIDFile=%s)' % (gunicorn.pidfile, other) in result['msg']
    assert result['systemd_main_pid'] == 300


def test_systemd_that_restarted_the_unit_fails_the_task_even_if_it_names_the_new_master(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile))
    real_exited = systemd.exited

    def exited_and_counted(pid):
        real_exited(pid)
        if systemd.later:
            systemd.later['restarts'] += 1

    gunicorn.exit_hooks = [exited_and_counted]
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert 'NRestarts 0 -> 1 (systemd restarted the unit)' in result['msg']
    assert ('the unit has PIDFile=%s as it needs; it also needs Type=notify or Type=forking' % gunicorn.pidfile
            in result['msg'])


def test_systemd_whose_main_process_is_a_wrapper_only_needs_the_unit_active(gunicorn, monkeypatch):
    with_systemd(gunicorn, monkeypatch, pidfile=None, main_pid=50)
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    assert result['systemd_main_pid'] == 50
    assert ('systemd unit app.service active and not restarted (its MainPID 50 is not a gunicorn master)'
            in result['msg'])


def test_systemd_that_cannot_be_asked_is_skipped_with_a_warning(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile), failing=True)
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, text: warnings.append(text))
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    assert result['systemd_unit'] == 'app.service' and result['systemd_main_pid'] is None
    assert len(systemd.queries) == 1
    assert len(warnings) == 1 and 'runs in app.service, but systemd cannot be asked about it' in warnings[0]
    assert 'System has not been booted with systemd' in warnings[0]


SHOW = '/usr/bin/systemctl show --property=MainPID,NRestarts,ActiveState,PIDFile app.service'


def test_a_systemctl_that_hangs_before_usr2_skips_the_proof_with_a_warning_naming_it(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile), hangs_after=0)
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, text: warnings.append(text))
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    assert len(systemd.queries) == 1
    assert warnings == ['gunicorn master 100 runs in app.service, but systemd cannot be asked about it (%s did not '
                        'finish within 30s (killed)): not checking that systemd follows the upgrade' % SHOW]


def test_a_systemctl_that_hangs_after_the_upgrade_fails_the_task_naming_it(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile), hangs_after=1)
    result, failed = run(gunicorn, mode='upgrade')
    assert failed
    assert result['msg'].startswith('upgrade failed after ')
    assert result['msg'].endswith('the new master %d serves, but systemd cannot be asked whether it follows it: %s '
                                  'did not finish within 30s (killed)' % (new_master_of(gunicorn), SHOW))
    assert [argv[0] for sent, argv in systemd.queries] == ['/usr/bin/systemctl'] * 2


def test_a_journalctl_that_hangs_leaves_the_cause_unknown_and_is_not_run_again(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, broken=True)
    systemd = with_systemd(fake, monkeypatch, pidfile=str(fake.pidfile), journal=True, journal_hangs=True)
    result, failed = run(fake, mode='upgrade')
    assert failed
    assert ('Cause: unknown: the journal of app.service could not be read (/usr/bin/journalctl --unit app.service '
            '--no-pager --quiet --lines=0 --show-cursor did not finish within 10s (killed))') in result['msg']
    assert [argv[0] for sent, argv in systemd.queries].count('/usr/bin/journalctl') == 1
    assert (100, signal.SIGTERM) not in fake.kills


def test_a_unit_systemd_does_not_report_active_is_not_checked(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile))
    systemd.state = 'inactive'  # not the unit the master runs in, as in a container that shares the host's cgroups
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, text: warnings.append(text))
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    assert result['systemd_main_pid'] is None and len(systemd.queries) == 1
    assert warnings == ['gunicorn master 100 runs in app.service, which systemd reports as ActiveState=inactive: '
                        'not checking that systemd follows the upgrade']


def test_systemd_is_not_asked_after_an_upgrade_without_wait(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile))
    result, failed = run(gunicorn, mode='upgrade', wait=False)
    assert not failed, result['msg']
    assert result['systemd_unit'] == 'app.service' and result['systemd_main_pid'] is None
    assert [sent for sent, argv in systemd.queries] == [0]


def test_a_master_of_a_user_manager_unit_is_not_checked(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=None,
                           cgroup='0::/user.slice/user-1000.slice/user@1000.service/app.slice/app.service\n')
    gunicorn.exit_hooks = []
    result, failed = run(gunicorn, mode='upgrade')
    assert not failed, result['msg']
    assert result['systemd_unit'] is None and systemd.queries == []


def test_check_mode_under_systemd_reports_the_unit_and_asks_nothing(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile))
    result, failed = run(gunicorn, check_mode=True, mode='upgrade')
    assert not failed
    assert result['systemd_unit'] == 'app.service' and result['systemd_main_pid'] is None
    assert systemd.queries == [] and gunicorn.kills == []
    assert gunicorn.pidfile.read_text() == '100\n'


def tmp_path_of(fake):
    return fake.root


# ---------------------------------------------------------------- root without CAP_SYS_PTRACE
# The masters run as NoPtrace's owner, uid 1000, and the fake's pidfile is root's: expected_user names that user.

def test_hup_as_root_without_cap_sys_ptrace_reads_as_the_owner(gunicorn, monkeypatch):
    no_ptrace = NoPtrace(monkeypatch, gunicorn.proc, owner=(1000, 1001, True))
    result, failed = run(gunicorn, expected_user='1000')
    assert not failed, result['msg']
    assert 'hup complete' in result['msg'] and len(result['workers_after']) == 3
    assert no_ptrace.owner_reads and set(no_ptrace.owner_reads) == {(1000, 1001, _proc.OWNER_READ_SECONDS)}


def test_upgrade_as_root_without_cap_sys_ptrace_reads_as_the_owner(gunicorn, monkeypatch):
    NoPtrace(monkeypatch, gunicorn.proc)
    result, failed = run(gunicorn, mode='upgrade', expected_user='1000')
    assert not failed, result['msg']
    assert signals(gunicorn) == [(100, 'SIGUSR2'), (100, 'SIGTERM')]
    assert gunicorn.pidfile.read_text().strip() == str(result['master_pid']) != '100'


def test_a_broken_release_as_root_without_cap_sys_ptrace_is_explained_from_the_log(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, broken=True)
    NoPtrace(monkeypatch, fake.proc)
    result, failed = run(fake, expected_user='1000')
    assert failed and 'the service is DOWN' in result['msg']
    assert 'RuntimeError: release 2 is broken' in result['msg'] and result['exit_code'] == 3


def test_root_whose_read_as_the_owner_fails_signals_nothing(gunicorn, monkeypatch):
    no_ptrace = NoPtrace(monkeypatch, gunicorn.proc)
    no_ptrace.failure = 'gave no answer within 5 s (the reading process was killed)'
    result, failed = run(gunicorn, expected_user='1000')
    assert failed and not result['changed'] and gunicorn.kills == []
    assert result['msg'] == ('cannot read environ and fd of pid 100: root may not without CAP_SYS_PTRACE (Permission '
                             'denied), and reading it as its owner (uid 1000, gid 1000) gave no answer within 5 s (the '
                             'reading process was killed); nothing was signalled')


@pytest.mark.parametrize('config, extra_args, said', [
    ('workers = 3\npreload_app = True\n', (), 'preloads the application (preload_app, from {config} line 2)'),
    ('preload_app = False\n', ('--preload',), 'preloads the application (preload_app, from the command line '
                                              '(--preload))'),
    ('import os\npreload_app = bool(os.environ.get("PRELOAD"))\n', (),
     'cannot tell whether gunicorn master 100 (pidfile={pidfile}) preloads the application: {config} line 2 sets '
     'preload_app to something other than true or false'),
    (None, (), 'cannot tell whether gunicorn master 100 (pidfile={pidfile}) preloads the application: its config '
               'file {config} cannot be read: No such file or directory'),
])
@pytest.mark.parametrize('check_mode', [False, True])
def test_hup_on_a_master_that_preloads_or_may_is_refused_before_any_signal(tmp_path, monkeypatch, config,
                                                                           extra_args, said, check_mode):
    # Lost: nothing; the master and its workers serve on untouched. Left: the same processes, no signal sent.
    fake = make_fake(tmp_path, monkeypatch, config=config, extra_args=extra_args)
    workers = sorted(fake.workers_of(100))
    result, failed = run(fake, check_mode=check_mode, mode='hup')
    assert failed and not result['changed']
    assert said.format(config=fake.config, pidfile=fake.pidfile) in result['msg']
    assert result['msg'].endswith('use mode=upgrade; nothing was signalled')
    assert fake.kills == [] and sorted(fake.workers_of(100)) == workers and result['signals'] == []


def test_upgrade_of_a_master_that_preloads_goes_ahead(tmp_path, monkeypatch):
    # USR2 execs a new master, which imports the release itself: preloading is no obstacle.
    fake = make_fake(tmp_path, monkeypatch, config='preload_app = True\n')
    result, failed = run(fake, mode='upgrade')
    assert not failed, result['msg']
    assert result['msg'].startswith('upgrade complete, master 100 -> ')

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""gunicorn_reload's pending_upgrade=settle on the fake gunicorn: an upgrade an earlier run left pending is
finished when the new master's workers boot, aborted otherwise, and only the proven masters are signalled."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal

import pytest

from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.test_gunicorn_reload import (
    make_fake, run, with_systemd)


@pytest.fixture
def gunicorn(tmp_path, monkeypatch):
    return make_fake(tmp_path, monkeypatch)


def leave_pending(fake, pidfile_names_new=False):
    """What an interrupted upgrade leaves: USR2 sent, the new master started (and its workers booted unless the fake
    was made never_ready), the old master not stopped. Returns the new master's PID."""
    os.kill(fake.master, signal.SIGUSR2)
    while fake.pending:
        fake.step()
    new = fake.upgrade_child(fake.master)
    assert new and (fake.root / 'gunicorn.pid.2').read_text() == '%d\n' % new
    if pidfile_names_new:
        fake.pidfile.write_text('%d\n' % new)  # the earlier run had handed the pidfile over
    fake.kills, fake.pidfile_at_kill = [], []
    return new


def at_kill(fake):
    return [(pid, signal.Signals(sig).name, named) for pid, sig, named in fake.pidfile_at_kill]


def upgrade_pidfile(fake):
    return fake.root / 'gunicorn.pid.2'


# ---------------------------------------------------------------- finish

@pytest.mark.parametrize('pidfile_names_new', [False, True], ids=['pidfile-names-old', 'pidfile-names-new'])
def test_a_pending_upgrade_whose_new_workers_booted_is_finished(gunicorn, pidfile_names_new):
    new = leave_pending(gunicorn, pidfile_names_new)
    result, failed = run(gunicorn, mode='none', pending_upgrade='settle')
    assert not failed, result['msg']
    assert result['changed'] and result['pending_settled'] == 'finished'
    assert result['pending_masters'] == {'old': 100, 'new': new}
    # TERM reaches the old master only once the pidfile names the new one; the new master gets nothing.
    assert at_kill(gunicorn) == [(100, 'SIGTERM', str(new))]
    assert result['signals'] == ['TERM 100']
    assert 100 not in gunicorn.processes and gunicorn.master == new
    assert gunicorn.pidfile.read_text() == '%d\n' % new and not upgrade_pidfile(gunicorn).exists()
    assert result['master_pid'] == new
    detail = result['pending_detail']
    assert detail.startswith('finished the pending upgrade: new master %d (all 3 of its workers booted); ' % new)
    assert ('handed pidfile=%s over to it, ' % gunicorn.pidfile in detail) is (not pidfile_names_new)
    assert 'sent TERM to the old master 100, which exited; the new master was promoted and serves with 3' in detail
    assert result['msg'] == detail


def test_finishing_under_systemd_waits_for_its_main_pid(gunicorn, monkeypatch):
    systemd = with_systemd(gunicorn, monkeypatch, pidfile=str(gunicorn.pidfile), lag=2)
    new = leave_pending(gunicorn)
    result, failed = run(gunicorn, mode='none', pending_upgrade='settle')
    assert not failed, result['msg']
    assert systemd.main_pid == new and systemd.restarts == 0
    assert result['pending_detail'].endswith('systemd unit app.service follows it (MainPID %d, not restarted)' % new)


def test_settling_then_the_requested_upgrade(gunicorn):
    new = leave_pending(gunicorn)
    result, failed = run(gunicorn, mode='upgrade', pending_upgrade='settle')
    assert not failed, result['msg']
    third = result['master_pid']
    assert third not in (100, new) and gunicorn.pidfile.read_text() == '%d\n' % third
    assert result['signals'] == ['TERM 100', 'USR2 %d' % new, 'TERM %d' % new]
    assert result['pending_settled'] == 'finished' and result['master_pid_before'] == new
    assert result['msg'].startswith('finished the pending upgrade: new master %d' % new)
    assert '; then upgrade complete, master %d -> %d' % (new, third) in result['msg']
    assert result['pidfile_handover'] is True


def test_an_old_master_already_told_to_stop_is_only_waited_for(gunicorn):
    """An earlier run handed the pidfile over and sent TERM; the old master closed its listeners and drains."""
    new = leave_pending(gunicorn, pidfile_names_new=True)
    os.kill(100, signal.SIGTERM)
    leave = gunicorn.pending.pop()
    gunicorn.pending += [lambda: None] * 4 + [leave]
    gunicorn.processes[100]['fds'].pop('5')  # gunicorn's stop() closes the listening sockets first
    gunicorn.write()
    gunicorn.kills, gunicorn.pidfile_at_kill = [], []
    result, failed = run(gunicorn, mode='none', pending_upgrade='settle')
    assert not failed, result['msg']
    assert gunicorn.kills == [] and result['pending_settled'] == 'finished'
    assert 'the old master 100 had already been told to stop (it closed its listening sockets)' in result['msg']
    assert gunicorn.master == new and gunicorn.pidfile.read_text() == '%d\n' % new


def test_an_old_master_told_to_stop_is_never_left_alone_by_an_abort(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, never_ready=True)
    new = leave_pending(fake, pidfile_names_new=True)
    fake.processes[100]['fds'].pop('5')  # stopping, but not gone within the timeout
    fake.write()
    result, failed = run(fake, mode='none', pending_upgrade='settle', timeout=0.3)
    assert failed and fake.kills == []
    assert result['msg'].startswith('settling the pending upgrade (old master 100, new master %d) failed after ' % new)
    assert 'finishing it, the new master %d was not promoted within timeout=0.3s' % new in result['msg']
    assert new in fake.processes and result['pending_settled'] is None


# ---------------------------------------------------------------- abort

@pytest.mark.parametrize('pidfile_names_new', [False, True], ids=['pidfile-names-old', 'pidfile-names-new'])
def test_a_pending_upgrade_whose_new_workers_do_not_boot_is_aborted(tmp_path, monkeypatch, pidfile_names_new):
    fake = make_fake(tmp_path, monkeypatch, never_ready=True)
    old_workers = sorted(fake.workers_of(100))
    new = leave_pending(fake, pidfile_names_new)
    new_workers = fake.workers_of(new)
    result, failed = run(fake, mode='none', pending_upgrade='settle', timeout=0.3)
    assert not failed, result['msg']
    assert result['pending_settled'] == 'aborted'
    # The pidfile names the old master before the new one is stopped; the old master gets nothing.
    assert at_kill(fake) == [(new, 'SIGTERM', '100')]
    assert result['signals'] == ['TERM %d' % new]
    assert new not in fake.processes and not set(new_workers) & set(fake.processes)
    assert fake.pidfile.read_text() == '100\n' and not upgrade_pidfile(fake).exists()
    assert sorted(fake.workers_of(100)) == old_workers and result['master_pid'] == 100
    detail = result['pending_detail']
    assert detail.startswith('aborted the pending upgrade: new master %d: its workers did not all boot within '
                             'timeout=0.3s (new master %d: workers not booted: ' % (new, new))
    assert ('pidfile=%s names the old master 100 again, ' % fake.pidfile in detail) is pidfile_names_new
    assert 'stopped it (TERM)' in detail and 'removed %s.2' % fake.pidfile in detail
    assert detail.endswith('The old master 100 serves with workers %s' % old_workers)


def test_a_new_master_whose_workers_fail_to_boot_is_aborted_at_once(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, never_ready=True)
    new = leave_pending(fake)

    def workers_fail():
        for worker in fake.workers_of(new):
            fake.remove(worker)
        fake.logs('RuntimeError: release 2 is broken', 'Worker (pid:%d) exited with code 3.' % new)

    fake.pending += [lambda: None] * 4 + [workers_fail]
    result, failed = run(fake, mode='none', pending_upgrade='settle', timeout=30)
    assert not failed, result['msg']
    assert result['pending_settled'] == 'aborted' and result['elapsed'] < 5
    assert result['signals'] == ['TERM %d' % new]
    assert ('new master %d: its workers exited with code 3. Cause: RuntimeError: release 2 is broken' % new
            in result['pending_detail'])


def test_aborting_then_the_requested_upgrade_retries_it(tmp_path, monkeypatch):
    fake = make_fake(tmp_path, monkeypatch, never_ready=True)
    new = leave_pending(fake)
    fake.never_ready = False  # the release was fixed since
    result, failed = run(fake, mode='upgrade', pending_upgrade='settle', timeout=0.3)
    assert not failed, result['msg']
    assert result['pending_settled'] == 'aborted'
    assert result['signals'][:3] == ['TERM %d' % new, 'USR2 100', 'TERM 100']
    assert '; then upgrade complete, master 100 -> %d' % result['master_pid'] in result['msg']


# ---------------------------------------------------------------- check mode, refusals

@pytest.mark.parametrize('never_ready, decision, fragment', [
    (False, 'finished', 'would finish the pending upgrade: new master {new} booted all 3 of its workers; would hand '
                        'pidfile={pidfile} over to it, send TERM to the old master 100'),
    (True, 'aborted', 'would abort the pending upgrade unless the workers of new master {new} all boot within '
                      'timeout=5.0s (0 of 3 booted now): would send TERM to the new master and keep the old '
                      'master 100'),
])
def test_check_mode_says_what_it_would_do_and_sends_nothing(tmp_path, monkeypatch, never_ready, decision, fragment):
    fake = make_fake(tmp_path, monkeypatch, never_ready=never_ready)
    new = leave_pending(fake)
    before = os.stat(str(fake.pidfile))
    result, failed = run(fake, check_mode=True, mode='upgrade', pending_upgrade='settle')
    assert not failed, result['msg']
    assert fake.kills == [] and result['signals'] == [] and result['changed']
    assert result['pending_settled'] == decision
    assert result['pending_detail'].startswith(fragment.format(new=new, pidfile=fake.pidfile))
    assert result['msg'].startswith(result['pending_detail'] + '; then would send USR2')
    serving = new if decision == 'finished' else 100
    assert '; then would send USR2 to gunicorn master %d' % serving in result['msg']
    after = os.stat(str(fake.pidfile))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert upgrade_pidfile(fake).exists() and new in fake.processes


def test_fail_keeps_refusing_and_names_both_masters(gunicorn):
    new = leave_pending(gunicorn)
    result, failed = run(gunicorn, mode='upgrade', pending_upgrade='fail')
    assert failed and gunicorn.kills == []
    assert result['msg'] == (
        'an upgrade is already pending: new master %d (%s.2) runs beside master 100 and is not promoted; gunicorn '
        'ignores another USR2 until it exits. Stop master 100 to promote it, or stop %d to abort it; nothing was '
        'signalled' % (new, gunicorn.pidfile, new))
    assert result['pending_settled'] is None and result['pending_detail'] is None


def test_a_new_master_the_upgrade_pidfile_does_not_name_is_not_settled(gunicorn):
    new = leave_pending(gunicorn)
    upgrade_pidfile(gunicorn).write_text('4242\n')
    result, failed = run(gunicorn, mode='none', pending_upgrade='settle')
    assert failed and gunicorn.kills == [] and not result['changed']
    assert result['msg'] == ('cannot settle the pending upgrade: new master %d runs beside master 100, but %s.2 names '
                             'pid 4242, not it: it cannot be proven to be this instance\'s; nothing was signalled'
                             % (new, gunicorn.pidfile))


def test_without_a_pending_upgrade_settle_changes_nothing(gunicorn):
    result, failed = run(gunicorn, mode='none', pending_upgrade='settle')
    assert not failed and not result['changed'] and gunicorn.kills == []
    assert result['msg'] == 'gunicorn master 100 (pidfile=%s) has no upgrade pending; mode=none: nothing to do' % (
        gunicorn.pidfile)
    result, failed = run(gunicorn, mode='hup', pending_upgrade='settle')
    assert not failed and result['msg'].startswith('hup complete') and result['pending_settled'] is None

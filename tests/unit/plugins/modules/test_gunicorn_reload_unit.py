# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""gunicorn_reload and gunicorn_info with ``unit`` on the fake gunicorn under a fake systemd.

The pidfile must name the unit's MainPID (or the new master of an upgrade of it) in the unit's cgroup, asked of
systemd at each identification: before the reload, and again after settling a pending upgrade, once systemd has
followed the new master. Anything else is refused naming the unit and the PID, and nothing is signalled.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import time

import pytest

from ansible.module_utils import basic

from ansible_collections.graceful.wsgi.plugins.modules import gunicorn_info
from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _proc, _systemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.fake_gunicorn import FakeSystemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.test_gunicorn_reload import (
    make_fake, run, signals)
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

IDENTITY_SHOW = ['/usr/bin/systemctl', 'show', '--property=MainPID,ControlGroup,ActiveState,LoadState', 'app.service']


class UnitSystemd(FakeSystemd):
    """FakeSystemd that also reports the unit's ControlGroup and LoadState, which the identity proof asks for."""

    def __init__(self, gunicorn, control_group='/system.slice/app.service', **kwargs):
        super(UnitSystemd, self).__init__(gunicorn, **kwargs)
        self.control_group = control_group
        self.asked = []  # the full argv of every systemctl command, identity queries included

    def run(self, args, timeout=None):
        if args[0] != '/usr/bin/systemctl':
            return super(UnitSystemd, self).run(args, timeout)
        self.asked.append(list(args))
        asked = args[2].split('=', 1)[1].split(',')
        known = [name for name in asked if name in FakeSystemd.ORDER]
        rc, out, err = super(UnitSystemd, self).run(args[:2] + ['--property=%s' % ','.join(known)] + args[3:], timeout)
        if rc == 0:
            extra = dict(ControlGroup=self.control_group if self.main_pid else '', LoadState='loaded')
            out += ''.join('%s=%s\n' % (name, extra[name]) for name in asked if name in extra)
        return rc, out, err


@pytest.fixture
def gunicorn(tmp_path, monkeypatch):
    return make_fake(tmp_path, monkeypatch)


def under_systemd(fake, monkeypatch, **kwargs):
    """The fake runs as app.service (PIDFile= its pidfile), whose systemd answers through _systemd.run."""
    systemd = UnitSystemd(fake, pidfile=str(fake.pidfile), **kwargs)
    monkeypatch.setattr(_systemd, 'run', systemd.run)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path',
                        lambda self, name, *args, **kw: '/usr/bin/%s' % name if name in ('systemctl', 'journalctl')
                        else None)
    return systemd


def another_apps_master(fake, monkeypatch, pid=300):
    """A second gunicorn master with booted workers, in other.service."""
    fake.spawn_master(pid, ppid=1, environ={})
    for dummy in range(2):
        fake.spawn_worker(pid, booted=True)
    fake.write()
    real_cgroup = _proc.read_cgroup
    monkeypatch.setattr(_proc, 'read_cgroup', lambda number, proc_root=None: '0::/system.slice/other.service\n'
                        if number == pid or fake.processes.get(number, {}).get('ppid') == pid
                        else real_cgroup(number, proc_root))
    return pid


def test_upgrade_of_the_units_master_is_proven_and_followed(gunicorn, monkeypatch):
    systemd = under_systemd(gunicorn, monkeypatch)
    result, failed = run(gunicorn, mode='upgrade', unit='app')
    assert not failed, result['msg']
    new = result['master_pid']
    assert new != 100 and systemd.main_pid == new and systemd.restarts == 0
    assert result['systemd_unit'] == 'app.service' and result['systemd_main_pid'] == new
    assert signals(gunicorn) == [(100, 'SIGUSR2'), (100, 'SIGTERM')]
    assert systemd.asked[0] == IDENTITY_SHOW, 'the identity is proven before anything else'


@pytest.mark.parametrize('mode', ['hup', 'upgrade'])
def test_a_pidfile_naming_another_apps_master_is_refused_and_nothing_is_signalled(gunicorn, monkeypatch, mode):
    systemd = under_systemd(gunicorn, monkeypatch)
    other = another_apps_master(gunicorn, monkeypatch)
    other_workers = sorted(gunicorn.workers_of(other))
    gunicorn.pidfile.write_text('%d\n' % other)
    result, failed = run(gunicorn, mode=mode, unit='app.service')
    assert failed and not result['changed'] and result['signals'] == []
    assert result['msg'] == (
        'pidfile=%s names pid %d (%s), a gunicorn master running as root in other.service, which is neither the main '
        'process of unit=app.service (MainPID 100) nor a new master that process started: another app\'s master; '
        'nothing was signalled' % (gunicorn.pidfile, other, ' '.join(gunicorn.argv)))
    # What was protected: both masters and their workers, untouched; systemd only asked.
    assert gunicorn.kills == []
    assert sorted(gunicorn.workers_of(other)) == other_workers and other in gunicorn.processes
    assert systemd.asked == [IDENTITY_SHOW]


def test_the_main_process_outside_the_units_cgroup_is_refused(gunicorn, monkeypatch):
    under_systemd(gunicorn, monkeypatch, control_group='/system.slice/other.service')
    result, failed = run(gunicorn, mode='upgrade', unit='app')
    assert failed and gunicorn.kills == []
    assert ('names pid 100 (%s), which runs in cgroup /system.slice/app.service, not in /system.slice/other.service '
            'of unit=app.service (MainPID 100); nothing was signalled' % ' '.join(gunicorn.argv)) in result['msg']


def test_a_unit_that_is_not_running_is_refused(gunicorn, monkeypatch):
    systemd = under_systemd(gunicorn, monkeypatch)
    systemd.main_pid, systemd.state = 0, 'inactive'
    result, failed = run(gunicorn, unit='app')
    assert failed and gunicorn.kills == []
    assert result['msg'] == ('unit=app.service has no main process (LoadState=loaded, ActiveState=inactive, MainPID=0, '
                             'ControlGroup=?): gunicorn is not running in it; nothing was signalled')


def test_check_mode_asks_systemd_who_the_master_is_and_signals_nothing(gunicorn, monkeypatch):
    systemd = under_systemd(gunicorn, monkeypatch)
    result, failed = run(gunicorn, check_mode=True, mode='upgrade', unit='app')
    assert not failed, result['msg']
    assert result['msg'].startswith('would send USR2 to gunicorn master 100')
    assert systemd.asked == [IDENTITY_SHOW] and gunicorn.kills == []
    assert result['systemd_unit'] == 'app.service'


def leave_pending(fake):
    """USR2 sent and the pidfile handed over by an interrupted run; the old master, still systemd's MainPID, runs."""
    os.kill(100, signal.SIGUSR2)
    while fake.pending:
        fake.step()
    new = fake.upgrade_child(100)
    fake.pidfile.write_text('%d\n' % new)
    fake.kills, fake.pidfile_at_kill = [], []
    return new


def test_settling_a_pending_upgrade_then_reloading_proves_the_master_at_each_step(gunicorn, monkeypatch):
    systemd = under_systemd(gunicorn, monkeypatch)
    new = leave_pending(gunicorn)
    result, failed = run(gunicorn, mode='hup', pending_upgrade='settle', unit='app')
    assert not failed, result['msg']
    assert result['pending_settled'] == 'finished' and result['master_pid'] == new == systemd.main_pid
    assert result['signals'] == ['TERM 100', 'HUP %d' % new]
    identity = [argv for argv in systemd.asked if argv == IDENTITY_SHOW]
    assert len(identity) == 2, 'before settling (the new master, child of MainPID 100), and after (MainPID %d)' % new


def test_a_pending_upgrade_of_another_apps_master_is_refused(gunicorn, monkeypatch):
    """The pidfile names a new master whose old master is not the unit's MainPID: nothing is settled."""
    systemd = under_systemd(gunicorn, monkeypatch)
    leave_pending(gunicorn)
    other = another_apps_master(gunicorn, monkeypatch)
    systemd.main_pid = other
    result, failed = run(gunicorn, mode='none', pending_upgrade='settle', unit='app')
    assert failed and gunicorn.kills == [] and not result['changed']
    assert 'nor a new master that process started' in result['msg'] and '(MainPID %d)' % other in result['msg']


@pytest.mark.parametrize('unit', ['-H', '--host=root@example.com', 'app/../ssh', 'app\nssh', ''])
def test_a_unit_that_is_no_service_name_is_refused_before_anything_runs(gunicorn, monkeypatch, unit):
    systemd = under_systemd(gunicorn, monkeypatch)
    started = time.monotonic()
    result, failed = run(gunicorn, mode='upgrade', unit=unit)
    assert failed and result['msg'].startswith('unit=%s: not a systemd service name' % unit)
    assert result['msg'].endswith('; nothing was signalled')
    assert systemd.asked == [] and gunicorn.kills == []
    assert time.monotonic() - started < 2.0


def test_a_unit_without_systemctl_is_refused(gunicorn, monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, *args, **kw: None)
    result, failed = run(gunicorn, unit='app')
    assert failed and gunicorn.kills == []
    assert result['msg'] == ('unit=app: systemctl not found, so no master can be proven to be the main process of '
                             'app.service; nothing was signalled')


def test_expected_user_that_the_master_does_not_run_as_is_refused_naming_both(gunicorn):
    result, failed = run(gunicorn, expected_user='65534')
    assert failed and gunicorn.kills == []
    assert result['msg'] == ('pidfile=%s names pid 100 (%s), a gunicorn master running as root, not as %s: another '
                             'app\'s master, or a pidfile written by someone else; nothing was signalled'
                             % (gunicorn.pidfile, ' '.join(gunicorn.argv),
                                _gunicorn.Expected.from_options(expected_user='65534').user_words))


def info(fake, **args):
    with set_module_args(dict(pidfile=str(fake.pidfile), **args)):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            gunicorn_info.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def test_info_with_a_unit_reports_its_master_and_refuses_another_apps(gunicorn, monkeypatch):
    systemd = under_systemd(gunicorn, monkeypatch)
    result, failed = info(gunicorn, unit='app')
    assert not failed, result['msg']
    assert result['master_pid'] == 100 and systemd.asked == [IDENTITY_SHOW]
    other = another_apps_master(gunicorn, monkeypatch)
    gunicorn.pidfile.write_text('%d\n' % other)
    result, failed = info(gunicorn, unit='app')
    assert failed and 'names pid %d (' % other in result['msg'] and 'unit=app.service (MainPID 100)' in result['msg']
    assert gunicorn.kills == []

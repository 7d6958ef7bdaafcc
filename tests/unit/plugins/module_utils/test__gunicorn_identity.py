# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Whom a gunicorn pidfile may name (_gunicorn.identify_master given an Expected).

With a unit: its main process, or the new master of an upgrade of it, in its cgroup, as ``systemctl show`` reports
them (faked at _systemd.show) and /proc/PID/cgroup says (faked at _proc.read_cgroup). Without: a master running as
the expected user, else as the pidfile's owner. The rest of /proc is the fake gunicorn's tree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _proc, _systemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.fake_gunicorn import FakeGunicorn

SYSTEMCTL = '/usr/bin/systemctl'
APP_CGROUP = '/system.slice/app.service'
OTHER_CGROUP = '/system.slice/other.service'
STRANGER = 5555  # a uid that is neither root, the test's user, nor any fake process's


class Systemd:
    """``systemctl show`` of app.service as _gunicorn asks it, faked at _systemd.show."""

    def __init__(self, monkeypatch, main_pid=100, control_group=APP_CGROUP, active='active'):
        self.properties = dict(MainPID=str(main_pid), ControlGroup=control_group, ActiveState=active,
                               LoadState='loaded')
        self.error = None
        self.calls = []
        monkeypatch.setattr(_systemd, 'show', self.show)

    def show(self, systemctl, unit, properties, timeout=None):
        self.calls.append((systemctl, unit, tuple(properties)))
        if self.error:
            raise _systemd.SystemdError(self.error)
        return dict((key, value) for key, value in self.properties.items() if key in properties)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    gunicorn = FakeGunicorn(tmp_path)
    monkeypatch.setattr(_proc, 'PROC', str(gunicorn.proc))
    monkeypatch.setattr(os, 'kill', gunicorn.kill)
    return gunicorn


@pytest.fixture
def cgroups(monkeypatch):
    """{pid: text of /proc/PID/cgroup}; a process not in it is in app.service."""
    texts = {}
    monkeypatch.setattr(_proc, 'read_cgroup', lambda pid, proc_root=None: texts.get(pid, '0::%s\n' % APP_CGROUP))
    return texts


@pytest.fixture
def systemd(monkeypatch):
    return Systemd(monkeypatch)


def by_unit():
    return _gunicorn.Expected.from_options(unit='app', systemctl=SYSTEMCTL)


def another_apps_master(fake, pid=300):
    """A second gunicorn master with booted workers, not of this app (as another unit's would be)."""
    fake.spawn_master(pid, ppid=1, environ={})
    for dummy in range(2):
        fake.spawn_worker(pid, booted=True)
    fake.write()
    return pid


def owned_by_a_stranger(path):
    """Give ``path`` to STRANGER as root; a file of a user that is not root already is one to the fake's root."""
    if os.geteuid() == 0:
        os.chown(str(path), STRANGER, STRANGER)
    return os.stat(str(path)).st_uid


def refused(pidfile, expected=None):
    with pytest.raises(_gunicorn.GunicornError) as caught:
        _gunicorn.identify_master(str(pidfile), expected=expected)
    return str(caught.value)


# ---------------------------------------------------------------- the options

@pytest.mark.parametrize('value, name', [
    ('app', 'app.service'), ('app.service', 'app.service'), ('web-app_2', 'web-app_2.service'),
    ('app@blue', 'app@blue.service'), ('app\\x2dblue', 'app\\x2dblue.service'), ('a:b', 'a:b.service'),
])
def test_a_service_name_with_or_without_its_suffix(value, name):
    assert _gunicorn.service_name(value) == name


@pytest.mark.parametrize('value', [
    '', '.service', '-H', '--host=evil', 'app/../other', '../app', 'app name', 'app\n', 'app;reboot', 'app$',
    'ａpp', 'a' * 248,
])
def test_what_is_no_service_name_is_refused_naming_the_option(value):
    with pytest.raises(_gunicorn.GunicornError) as caught:
        _gunicorn.service_name(value)
    assert str(caught.value).startswith('unit=%s: not a systemd service name' % value)


def test_expected_user_by_name_or_uid():
    assert _gunicorn.user_identity('root') == ('root', 0)
    assert _gunicorn.user_identity('0') == (None, 0)
    assert _gunicorn.user_identity('%d' % STRANGER)[1] == STRANGER
    for unknown in ('no-such-user-here', '12ab', '', '-1'):
        with pytest.raises(_gunicorn.GunicornError, match='^expected_user=%s: no such user on this host$' % unknown):
            _gunicorn.user_identity(unknown)


def test_a_unit_without_systemctl_cannot_be_proven():
    with pytest.raises(_gunicorn.GunicornError) as caught:
        _gunicorn.Expected.from_options(unit='app', systemctl=None)
    assert str(caught.value) == ('unit=app: systemctl not found, so no master can be proven to be the main process of '
                                 'app.service')


@pytest.mark.parametrize('text, inside', [
    ('0::/system.slice/app.service\n', True),
    ('0::/system.slice/app.service/payload\n', True),           # a delegated sub-cgroup of the unit
    ('0::/system.slice/app.service-canary.service\n', False),    # a prefix of the name is not the unit
    ('0::/system.slice/other.service\n', False),
    ('12:name=systemd:/system.slice/app.service\n11:memory:/system.slice/app.service\n0::/\n', True),  # cgroup v1
    ('11:memory:/system.slice/app.service\n0::/\n', False),     # only a controller's hierarchy: not systemd's
    ('', False), (None, False),
])
def test_in_control_group(text, inside):
    assert _gunicorn.in_control_group(text, APP_CGROUP) is inside


# ---------------------------------------------------------------- with a unit

def test_the_units_main_process_in_its_cgroup_is_its_master(fake, cgroups, systemd):
    master = _gunicorn.identify_master(str(fake.pidfile), expected=by_unit())
    assert master.pid == 100 and sorted(master.workers) == sorted(fake.workers_of(100))
    assert systemd.calls == [(SYSTEMCTL, 'app.service', ('MainPID', 'ControlGroup', 'ActiveState', 'LoadState'))]


def test_a_pidfile_naming_another_apps_master_is_refused_naming_the_unit_and_both_masters(fake, cgroups, systemd):
    other = another_apps_master(fake)
    cgroups[other] = '0::%s\n' % OTHER_CGROUP
    fake.pidfile.write_text('%d\n' % other)
    message = refused(fake.pidfile, by_unit())
    assert message == ('pidfile=%s names pid 300 (%s), a gunicorn master running as root in other.service, which is '
                       'neither the main process of unit=app.service (MainPID 100) nor a new master that process '
                       'started: another app\'s master' % (fake.pidfile, ' '.join(fake.argv)))
    assert fake.kills == []


def test_the_main_pid_outside_the_units_cgroup_is_refused(fake, cgroups, systemd):
    cgroups[100] = '0::%s\n' % OTHER_CGROUP
    assert refused(fake.pidfile, by_unit()) == (
        'pidfile=%s names pid 100 (%s), which runs in cgroup %s, not in %s of unit=app.service (MainPID 100)'
        % (fake.pidfile, ' '.join(fake.argv), OTHER_CGROUP, APP_CGROUP))


def test_a_master_in_the_units_cgroup_that_is_not_its_main_process_is_refused(fake, cgroups, systemd):
    """Two masters in one unit (one started by hand beside systemd's): only MainPID is the unit's."""
    other = another_apps_master(fake)
    fake.pidfile.write_text('%d\n' % other)
    message = refused(fake.pidfile, by_unit())
    assert 'names pid 300 (' in message and 'running as root in app.service' in message
    assert 'neither the main process of unit=app.service (MainPID 100) nor a new master' in message


def test_a_child_of_the_main_process_that_is_no_new_master_is_refused(fake, cgroups, systemd):
    """A gunicorn child of the main process sharing no heartbeat with it and not exec'd by USR2 (a fork of the app,
    say) is neither the master nor a worker."""
    fake.add(400, 100, fake.argv, {}, start=6000)
    fake.write()
    fake.pidfile.write_text('400\n')
    message = refused(fake.pidfile, by_unit())
    assert message.startswith('pidfile=%s names pid 400 (' % fake.pidfile)
    assert 'neither the main process of unit=app.service (MainPID 100) nor a new master' in message


def test_a_worker_of_the_main_process_is_named_as_such(fake, cgroups, systemd):
    worker = sorted(fake.workers_of(100))[0]
    fake.pidfile.write_text('%d\n' % worker)
    assert 'a gunicorn worker of master 100, not a master' in refused(fake.pidfile, by_unit())


def pending_upgrade(fake, pidfile_names_new):
    os.kill(100, signal.SIGUSR2)
    while fake.pending:
        fake.step()
    new = fake.upgrade_child(100)
    if pidfile_names_new:
        fake.pidfile.write_text('%d\n' % new)  # an earlier run handed the pidfile over, systemd's MainPID is still 100
    return new


@pytest.mark.parametrize('pidfile_names_new', [False, True], ids=['pidfile-names-old', 'pidfile-names-new'])
def test_during_an_upgrade_of_the_main_process_either_master_is_proven(fake, cgroups, systemd, pidfile_names_new):
    new = pending_upgrade(fake, pidfile_names_new)
    master = _gunicorn.identify_master(str(fake.pidfile), expected=by_unit())
    assert master.pid == (new if pidfile_names_new else 100)
    pending = _gunicorn.find_pending_upgrade(master, str(fake.pidfile))
    assert (pending.old.pid, pending.new.pid) == (100, new)


def test_after_the_promotion_systemd_names_the_new_master(fake, cgroups, systemd):
    new = pending_upgrade(fake, pidfile_names_new=True)
    os.kill(100, signal.SIGTERM)
    while fake.pending:
        fake.step()
    # systemd has not reaped the old master yet: its MainPID names a process that is gone.
    assert refused(fake.pidfile, by_unit()) == 'unit=app.service: its main process 100 (MainPID) is not running'
    systemd.properties['MainPID'] = str(new)
    assert _gunicorn.identify_master(str(fake.pidfile), expected=by_unit()).pid == new


def test_a_new_master_of_another_process_than_the_main_one_is_refused(fake, cgroups, systemd):
    pending_upgrade(fake, pidfile_names_new=True)
    systemd.properties['MainPID'] = '300'
    another_apps_master(fake)
    message = refused(fake.pidfile, by_unit())
    assert 'neither the main process of unit=app.service (MainPID 300) nor a new master' in message


@pytest.mark.parametrize('properties, message', [
    (dict(MainPID='0', ActiveState='inactive', ControlGroup=''),
     'unit=app.service has no main process (LoadState=loaded, ActiveState=inactive, MainPID=0, ControlGroup=?): '
     'gunicorn is not running in it'),
    (dict(MainPID='0', ActiveState='inactive', ControlGroup='', LoadState='not-found'),
     'unit=app.service has no main process (LoadState=not-found, ActiveState=inactive, MainPID=0, ControlGroup=?): '
     'gunicorn is not running in it'),
    (dict(MainPID='4242'), 'unit=app.service: its main process 4242 (MainPID) is not running'),
])
def test_a_unit_without_a_running_main_process_proves_nothing(fake, cgroups, systemd, properties, message):
    systemd.properties.update(properties)
    assert refused(fake.pidfile, by_unit()) == message


def test_a_systemd_that_cannot_be_asked_proves_nothing(fake, cgroups, systemd):
    systemd.error = '/usr/bin/systemctl show ... did not finish within 30s (killed)'
    assert refused(fake.pidfile, by_unit()) == ('unit=app.service: systemd cannot be asked for its main process: '
                                                '/usr/bin/systemctl show ... did not finish within 30s (killed)')


def test_with_a_unit_the_pidfile_belongs_to_its_masters_user_or_root(fake, cgroups, systemd, monkeypatch):
    fake.pidfile.write_text('root:$y$j9T$secret:19000:0:99999:7:::\n')
    owner = owned_by_a_stranger(fake.pidfile)
    monkeypatch.setattr(_proc, 'process_owner', lambda pid, proc_root=None: (4321, 4321, True))
    message = refused(fake.pidfile, by_unit())
    assert message == ('pidfile=%s: it is owned by %s, not by uid 4321, the user of the main process 100 of '
                       'unit=app.service or root; it was not read' % (fake.pidfile, _proc.describe_user(owner)))
    assert 'secret' not in message and 'PID' not in message


# ---------------------------------------------------------------- without a unit

@pytest.mark.skipif(os.geteuid() != 0, reason='giving the pidfile to another user needs root')
def test_the_master_runs_as_the_pidfiles_owner(fake):
    owned_by_a_stranger(fake.pidfile)
    message = refused(fake.pidfile)
    expected = ('pidfile=%s names pid 100 (%s), a gunicorn master running as root, not as the owner of the '
                'pidfile, uid %d (set expected_user or unit when the master runs as another user): another '
                'app\'s master, or a pidfile written by someone else')
    assert message == expected % (fake.pidfile, ' '.join(fake.argv), STRANGER)


def test_the_master_runs_as_the_expected_user(fake):
    expected = _gunicorn.Expected.from_options(expected_user='%d' % STRANGER)
    message = refused(fake.pidfile, expected)
    assert message == ('pidfile=%s names pid 100 (%s), a gunicorn master running as root, not as expected_user=%d: '
                       'another app\'s master, or a pidfile written by someone else'
                       % (fake.pidfile, ' '.join(fake.argv), STRANGER))
    assert _gunicorn.identify_master(str(fake.pidfile), expected=_gunicorn.Expected.from_options(
        expected_user='root')).pid == 100


def test_with_an_expected_user_the_pidfile_belongs_to_that_user_or_root(fake):
    owner = owned_by_a_stranger(fake.pidfile)
    expected = _gunicorn.Expected.from_options(expected_user='%d' % (owner + 1))
    assert refused(fake.pidfile, expected) == ('pidfile=%s: it is owned by %s, not by expected_user=%d or root; it '
                                               'was not read' % (fake.pidfile, _proc.describe_user(owner), owner + 1))


@pytest.mark.skipif(os.geteuid() != 0, reason='giving the upgrade pidfile to another user needs root')
def test_an_upgrade_pidfile_of_another_user_is_no_proof_of_the_new_master(fake):
    new = pending_upgrade(fake, pidfile_names_new=False)
    upgrade = fake.root / 'gunicorn.pid.2'
    owner = owned_by_a_stranger(upgrade)
    master = _gunicorn.identify_master(str(fake.pidfile))
    with pytest.raises(_gunicorn.GunicornError) as caught:
        _gunicorn.find_pending_upgrade(master, str(fake.pidfile))
    assert str(caught.value) == ("new master %d runs beside master 100, but it cannot be proven to be this instance's: "
                                 "upgrade pidfile=%s: it is owned by %s, not by the gunicorn master's user, root; it "
                                 "was not read" % (new, upgrade, _proc.describe_user(owner)))
    assert _gunicorn.stale_upgrade_pidfile(str(fake.pidfile), owners=_gunicorn.master_owners(master)) is None

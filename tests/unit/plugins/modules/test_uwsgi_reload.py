# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import signal

import pytest

from ansible.module_utils import basic

from ansible_collections.graceful.wsgi.plugins.modules import uwsgi_reload
from ansible_collections.graceful.wsgi.plugins.module_utils import _proc, _uwsgi, _uwsgi_helpers, _uwsgi_reload
from ansible_collections.graceful.wsgi.plugins.module_utils._proc import ProcessInfo
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

MASTER = 100
UWSGI_ARGV = ['/venv/bin/uwsgi', '--ini', '/srv/app/uwsgi.ini']


class FakeInstance:
    """A uWSGI instance as the module sees it: stats documents, /proc entries, signals.

    A worker told to stop (SIGHUP, FIFO command) goes through the states uWSGI shows:
    old pid -> pid 0 -> new pid loading (accepting 0) -> new pid accepting, one state per stats read.
    """

    def __init__(self, workers=4, broken=False, lazy=True, mules=0, spoolers=(), titled=False, gateways=()):
        self.workers = dict((i, {'pid': MASTER + i, 'phase': None, 'respawns': 1}) for i in range(1, workers + 1))
        # Mules and spoolers (children of the master too) go through the same phases when told to stop: a mule at
        # SIGHUP, a spooler at SIGTERM only. A broken mule's replacement exits at once, and is forked again.
        self.mules = dict((i, {'pid': 300 + i, 'phase': None, 'respawns': 1}) for i in range(1, mules + 1))
        self.spoolers = dict((directory, {'pid': 400 + n, 'phase': None, 'respawns': 1, 'running': 0})
                             for n, directory in enumerate(spoolers))
        self.broken_mules = False
        self.titled = titled
        self.gateways = list(gateways)
        self.next_pid = 500
        self.broken = broken
        self.lazy = lazy
        self.kills = []
        self.reads = 0
        self.alive = True
        self.fifo_commands = []
        self.environ = {}
        self.hidden = False
        self.as_owner = False
        self.owner_reads = []
        self.services = []
        # The user the master runs as: the one running the tests, who creates the control files below.
        self.master_uid = os.geteuid()

    def document(self):
        self.reads += 1
        workers = []
        for wid, state in sorted(self.workers.items()):
            self.advance(state)
            loading = state['phase'] == 'loading'
            has_app = not loading and not (self.broken and state['pid'] >= 500)
            workers.append({'id': wid, 'pid': state['pid'], 'accepting': 0 if loading else 1, 'requests': 0,
                            'status': 'idle', 'respawn_count': state['respawns'], 'last_spawn': 0,
                            'apps': [{'mountpoint': ''}] if has_app else []})
        for state in list(self.mules.values()) + list(self.spoolers.values()):
            self.advance(state)
            if self.broken_mules and state in self.mules.values() and state['pid'] >= 500:
                state['phase'] = 'dead'
        spoolers = [{'dir': directory, 'pid': state['pid'], 'running': state['running'], 'tasks': 0}
                    for directory, state in sorted(self.spoolers.items())]
        return {'pid': MASTER, 'version': '2.0.31', 'workers': workers, 'spoolers': spoolers}

    def children(self, pid, proc_root='/proc'):
        if pid != MASTER:
            return []
        states = list(self.workers.values()) + list(self.mules.values()) + list(self.spoolers.values())
        return [state['pid'] for state in states if state['pid']] + [900 + n for n in range(len(self.gateways))]

    def ini(self):
        lines = ['[uwsgi]', 'lazy-apps = %s' % ('true' if self.lazy else 'false')]
        lines += ['mule = tasks.py'] * len(self.mules) + ['%s = :80%02d' % (name, n) for n, name in enumerate(self.gateways)]
        return '\n'.join(lines) + '\n'

    def advance(self, state):
        phase = state['phase']
        if phase == 'stopping':
            state.update(pid=0, phase='dead')
        elif phase == 'dead':
            state.update(pid=self.next_pid, phase='loading', respawns=state['respawns'] + 1)
            self.next_pid += 1
        elif phase == 'loading':
            state['phase'] = None

    def read_stats(self, address, timeout=2.0):
        if not self.alive:
            raise _uwsgi.UwsgiError('stats=%s: no such socket' % address[1])
        return self.document()

    def stop_worker(self, pid):
        for state in self.workers.values():
            if state['pid'] == pid:
                state['phase'] = 'stopping'

    def kill(self, pid, sig):
        self.kills.append((pid, sig))
        if pid == MASTER:
            for state in self.workers.values():
                state['phase'] = 'stopping'
            return
        self.stop_worker(pid)
        for state in self.mules.values():
            if state['pid'] == pid and sig == signal.SIGHUP:
                state['phase'] = 'stopping'
        for state in self.spoolers.values():
            if state['pid'] == pid and sig == signal.SIGTERM:
                state['phase'] = 'stopping'

    def read_process(self, pid, proc_root='/proc'):
        if pid == MASTER and self.alive:
            return ProcessInfo(pid, 1, 'S', UWSGI_ARGV, 'uwsgi')
        if any(s['pid'] == pid for s in self.workers.values()) and self.alive:
            return ProcessInfo(pid, MASTER, 'S', UWSGI_ARGV, 'uwsgi')
        for wid, state in self.mules.items():
            if state['pid'] == pid and self.alive:
                return ProcessInfo(pid, MASTER, 'S', ['uWSGI mule %d' % wid] if self.titled else UWSGI_ARGV, 'uwsgi')
        if (any(s['pid'] == pid for s in self.spoolers.values()) or 900 <= pid < 900 + len(self.gateways)) \
                and self.alive:
            return ProcessInfo(pid, MASTER, 'S', UWSGI_ARGV, 'uwsgi')
        if pid == 4242:
            return ProcessInfo(pid, 1, 'S', ['/usr/sbin/sshd', '-D'], 'sshd')
        return None

    def read_link(self, pid, name, proc_root='/proc'):
        self.guard(pid, name)
        return '/srv/app' if name == 'cwd' and pid == MASTER else None

    def read_environ(self, pid, proc_root='/proc'):
        self.guard(pid, 'environ')
        return dict(self.environ) if pid == MASTER else None

    def guard(self, pid, name):
        """/proc/PID/<name> is hidden (root without CAP_SYS_PTRACE, or another user) unless read as the owner."""
        if self.hidden and not self.as_owner:
            raise OSError(errno.EACCES, 'Permission denied', '/proc/%d/%s' % (pid, name))

    def run_as(self, uid, gid, function, timeout):
        self.owner_reads.append((uid, gid))
        self.as_owner = True
        try:
            return function()
        finally:
            self.as_owner = False

    def process_owner(self, pid, proc_root='/proc'):
        return (self.master_uid, self.master_uid, True) if self.read_process(pid) else None

    def fifo_command(self, path, command, service):
        self.services.append(service)
        self.fifo_commands.append(command)
        if command in ('c', 'w', 'r', 'R'):
            for state in self.workers.values():
                state['phase'] = 'stopping'
        if command in ('r', 'R'):
            # The whole instance re-executes: its mules and spoolers with it.
            for state in list(self.mules.values()) + list(self.spoolers.values()):
                state['phase'] = 'stopping'


def put_in_place(fake, monkeypatch, tmp_path):
    """The fake instance in place of the host: its stats, FIFO, /proc and signals; its FIFO at fake.fifo."""
    monkeypatch.setattr(_uwsgi, 'read_stats', fake.read_stats)
    monkeypatch.setattr(_uwsgi, 'fifo_command', fake.fifo_command)
    monkeypatch.setattr(_uwsgi_reload._proc, 'read_process', fake.read_process)
    monkeypatch.setattr(_uwsgi_reload._proc, 'is_alive', lambda pid: fake.read_process(pid) is not None)
    monkeypatch.setattr(_uwsgi_reload._proc, 'read_link_or_raise', fake.read_link)
    monkeypatch.setattr(_uwsgi_reload._proc, 'read_environ_or_raise', fake.read_environ)
    monkeypatch.setattr(_uwsgi_reload._proc, 'process_owner', fake.process_owner)
    monkeypatch.setattr(_uwsgi_reload._proc, 'read_text', lambda path: fake.ini())
    monkeypatch.setattr(_uwsgi_reload._proc, 'child_pids', fake.children)
    monkeypatch.setattr(_uwsgi_reload.os, 'kill', fake.kill)
    monkeypatch.setattr(_uwsgi_reload.time, 'sleep', lambda s: None)
    fake.fifo = str(tmp_path / 'master.fifo')
    os.mkfifo(fake.fifo, 0o600)
    return fake


@pytest.fixture
def instance(monkeypatch, tmp_path):
    fake = put_in_place(FakeInstance(), monkeypatch, tmp_path)
    fake.touch = str(tmp_path / 'chain.touch')
    with open(fake.touch, 'w'):
        pass
    fake.pidfile = str(tmp_path / 'uwsgi.pid')
    with open(fake.pidfile, 'w') as handle:
        handle.write('%d\n' % MASTER)
    fake.tmp = tmp_path
    return fake


def run(args):
    args.setdefault('timeout', 5)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            uwsgi_reload.main()
    return caught.type, caught.value.args[0]


def test_chain_through_fifo_waits_for_every_worker(instance):
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleExitJson, result['msg']
    assert result['changed'] is True
    assert instance.fifo_commands == ['c']
    assert [w['pid'] for w in result['workers_before']] == [101, 102, 103, 104]
    assert all(w['pid'] >= 500 and w['accepting'] for w in result['workers_after'])
    assert result['msg'].startswith('chain reload complete: 4 workers replaced')
    assert instance.kills == []


@pytest.mark.parametrize('mode, command', [('graceful', 'r'), ('workers', 'w'), ('brutal', 'R')])
def test_fifo_modes_send_their_command(instance, mode, command):
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'mode': mode})
    assert kind is AnsibleExitJson, result['msg']
    assert instance.fifo_commands == [command]
    assert result['mode'] == mode


def test_rolling_never_exceeds_max_unavailable(instance):
    in_flight_max = []
    original_kill = instance.kill

    def kill(pid, sig):
        original_kill(pid, sig)
        in_flight_max.append(len([s for s in instance.workers.values() if s['phase'] in ('stopping', 'dead', 'loading')]))

    _uwsgi_reload.os.kill = kill
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'mode': 'rolling', 'max_unavailable': '50%'})
    assert kind is AnsibleExitJson, result['msg']
    assert [sig for _pid, sig in instance.kills] == [signal.SIGHUP] * 4
    assert [pid for pid, _sig in instance.kills] == [101, 102, 103, 104]
    assert max(in_flight_max) == 2
    assert result['min_accepting'] == 2
    assert instance.fifo_commands == []


def test_rolling_stops_at_first_broken_worker(instance):
    instance.broken = True
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'mode': 'rolling'})
    assert kind is AnsibleFailJson
    assert 'worker 1 (pid 500) respawned without an application (respawn_count 2)' in result['msg']
    assert 'stopped before replacing workers 2, 3, 4' in result['msg']
    assert [pid for pid, _sig in instance.kills] == [101]
    assert result['snapshot']['workers'][0]['apps'] == []


def test_chain_with_broken_release_fails_fast(instance):
    instance.broken = True
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'timeout': 300})
    assert kind is AnsibleFailJson
    assert result['elapsed'] < 1
    assert 'respawned without an application' in result['msg']
    assert instance.reads < 10


def test_rolling_refuses_without_lazy_apps(instance):
    instance.lazy = False
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'mode': 'rolling'})
    assert kind is AnsibleFailJson
    assert 'mode=rolling needs lazy-apps' in result['msg']
    assert instance.kills == []


@pytest.mark.parametrize('check_mode', [False, True])
def test_fork_is_refused_before_anything_is_read_or_sent(instance, check_mode):
    args = {'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'mode': 'fork'}
    if check_mode:
        args['_ansible_check_mode'] = True
    kind, result = run(args)
    assert kind is AnsibleFailJson and result['msg'] == _uwsgi_reload.FORK_REFUSAL
    assert not result['changed'] and result['mode'] == 'fork'
    assert instance.kills == [] and instance.fifo_commands == []


def test_check_mode_sends_nothing(instance):
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'mode': 'rolling', '_ansible_check_mode': True})
    assert kind is AnsibleExitJson
    assert result['changed'] is True
    assert result['msg'].startswith('would reload (rolling) via SIGHUP to each worker, at most 1 at a time')
    assert instance.kills == [] and instance.fifo_commands == []


def test_check_mode_still_validates_paths(instance):
    kind, result = run({'master_fifo': str(instance.tmp / 'missing.fifo'), 'stats': '/run/stats.sock', '_ansible_check_mode': True})
    assert kind is AnsibleFailJson
    assert 'master_fifo=%s: does not exist' % (instance.tmp / 'missing.fifo') in result['msg']


def test_touch_file_triggers_and_wait_false_returns_at_once(instance):
    before = os.stat(instance.touch).st_mtime
    os.utime(instance.touch, (before - 100, before - 100))
    kind, result = run({'touch_file': instance.touch, 'wait': False})
    assert kind is AnsibleExitJson
    assert os.stat(instance.touch).st_mtime > before - 100
    assert 'not waiting for proof' in result['msg']
    assert instance.reads == 0


def test_pidfile_graceful_signals_the_proven_master(instance):
    kind, result = run({'pidfile': instance.pidfile, 'stats': '/run/stats.sock', 'mode': 'graceful'})
    assert kind is AnsibleExitJson
    assert instance.kills == [(MASTER, signal.SIGHUP)]


def test_pidfile_naming_another_program_is_never_signalled(instance):
    with open(instance.pidfile, 'w') as handle:
        handle.write('4242\n')
    kind, result = run({'pidfile': instance.pidfile, 'mode': 'graceful', 'wait': False})
    assert kind is AnsibleFailJson
    assert 'names pid 4242 (/usr/sbin/sshd -D), which is not a uWSGI process' in result['msg']
    assert instance.kills == []


def test_pidfile_disagreeing_with_stats_fails(instance):
    with open(instance.pidfile, 'w') as handle:
        handle.write('4242\n')
    kind, result = run({'pidfile': instance.pidfile, 'stats': '/run/stats.sock', 'mode': 'graceful'})
    assert kind is AnsibleFailJson
    assert 'names pid 4242, but the master answering stats=/run/stats.sock is pid 100' in result['msg']
    assert instance.kills == []


def test_stale_pidfile_fails(instance):
    with open(instance.pidfile, 'w') as handle:
        handle.write('77777\n')
    kind, result = run({'pidfile': instance.pidfile, 'mode': 'graceful', 'wait': False})
    assert kind is AnsibleFailJson
    assert 'names pid 77777, which is not running (stale pidfile)' in result['msg']


@pytest.mark.timeout(5)
def test_a_fifo_in_place_of_the_pidfile_fails_at_once(instance):
    os.unlink(instance.pidfile)
    os.mkfifo(instance.pidfile, 0o600)
    kind, result = run({'pidfile': instance.pidfile, 'mode': 'graceful', 'wait': False})
    assert kind is AnsibleFailJson
    assert result['msg'] == 'pidfile=%s: it is a FIFO, not a regular file' % instance.pidfile
    assert instance.kills == []


def test_master_death_fails_at_once(instance):
    original = instance.fifo_command

    def die(path, command, service):
        original(path, command, service)
        instance.alive = False

    _uwsgi.fifo_command = die
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleFailJson
    assert 'the uWSGI master (pid 100) died during the reload; the instance is down' in result['msg']


def test_timeout_names_workers_left_behind(instance):
    _uwsgi.fifo_command = lambda path, command, service: None  # the instance ignores the command
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'timeout': 0.01, 'poll_interval': 0.01})
    assert kind is AnsibleFailJson
    assert 'chain reload not complete after timeout=0.01s' in result['msg']
    assert 'worker 1 still runs the old pid 101' in result['msg']


@pytest.mark.parametrize('args, message', [
    ({'stats': '/s'}, 'one of the following is required: master_fifo, touch_file, pidfile'),
    ({'master_fifo': '/f'}, 'wait is True but all of the following are missing: stats'),
    ({'touch_file': '/t', 'mode': 'brutal', 'wait': False}, 'mode is brutal but all of the following are missing: master_fifo'),
    ({'pidfile': '/p', 'mode': 'chain', 'wait': False}, 'mode is chain but any of the following are missing: master_fifo, touch_file'),
    ({'master_fifo': '/f', 'mode': 'rolling', 'wait': False, 'stats': '/s'}, 'mode=rolling is driven by the module itself'),
    ({'master_fifo': '/f', 'stats': '/s', 'timeout': 0}, 'timeout=0.0: must be positive'),
])
def test_argument_rules(instance, args, message):
    kind, result = run(args)
    assert kind is AnsibleFailJson
    assert message in result['msg']


def test_bad_max_unavailable_names_the_option(instance):
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/s', 'mode': 'rolling', 'max_unavailable': 'half'})
    assert kind is AnsibleFailJson
    assert 'max_unavailable=half' in result['msg']


def test_path_that_is_not_a_fifo(instance):
    kind, result = run({'master_fifo': instance.touch, 'stats': '/s'})
    assert kind is AnsibleFailJson
    assert 'master_fifo=%s: not a FIFO (a regular file)' % instance.touch in result['msg']


def test_rolling_replaces_idle_workers_before_busy_ones(instance):
    document = instance.document

    def busy_first_two():
        snapshot = document()
        for worker in snapshot['workers']:
            if worker['pid'] in (101, 102):
                worker['status'] = 'busy'
        return snapshot

    instance.document = busy_first_two
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock', 'mode': 'rolling'})
    assert kind is AnsibleExitJson, result['msg']
    assert [pid for pid, _sig in instance.kills] == [103, 104, 101, 102]


# ---------------------------------------------------------------- the master's cwd and environment hidden

@pytest.fixture
def hidden(instance, monkeypatch):
    """/proc hides the master's cwd and environ; lazy-apps is set only in its environment (the ini says false)."""
    instance.hidden = True
    instance.lazy = False
    instance.environ = {'UWSGI_LAZY_APPS': '1'}
    instance.warnings = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, text: instance.warnings.append(text))
    monkeypatch.setattr(_proc, 'start_ticks', lambda pid, proc_root='/proc': 4242)
    monkeypatch.setattr(_proc, 'process_owner', lambda pid, proc_root='/proc': (1000, 1001, True))
    monkeypatch.setattr(_proc, 'run_as', instance.run_as)
    return instance


def test_root_without_cap_sys_ptrace_reads_the_masters_environment_as_its_owner(hidden, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 0)
    kind, result = run({'master_fifo': hidden.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleExitJson, result['msg']
    assert hidden.fifo_commands == ['c'] and hidden.owner_reads == [(1000, 1001)]
    assert hidden.warnings == []


def test_another_user_that_cannot_read_the_environment_is_warned_not_refused(hidden, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    kind, result = run({'master_fifo': hidden.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleExitJson, result['msg']  # the ini's "false" is not the whole story: no refusal on it
    assert hidden.owner_reads == []
    assert hidden.warnings == [
        'could not confirm lazy-apps for pid 100 (/venv/bin/uwsgi --ini /srv/app/uwsgi.ini) (cannot read '
        '/proc/100/cwd and environ: Permission denied); without it mode=chain respawns workers with the code the '
        'master loaded']


def test_a_visible_environment_without_lazy_apps_is_still_refused(hidden, monkeypatch):
    hidden.hidden = False
    hidden.environ = {}
    kind, result = run({'master_fifo': hidden.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleFailJson and 'mode=chain needs lazy-apps' in result['msg']
    assert hidden.owner_reads == [] and hidden.fifo_commands == []


# ---------------------------------------------------------------- whose control files are trusted

def master_of_another_user(instance, path):
    """Make the master's user neither root nor the owner of ``path`` (given away to a third user when running as
    root): ``path`` is then a file someone else put in the instance's directory."""
    if os.geteuid() == 0:
        os.chown(path, 4321, 4321)
    instance.master_uid = 4322 if os.geteuid() == 0 else os.geteuid() + 1
    return _uwsgi.describe_uid(os.stat(path).st_uid)


def test_the_fifo_is_trusted_as_the_user_of_the_proven_master(instance):
    instance.master_uid = 4322
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleExitJson, result['msg']  # the FIFO is the test runner's: root's, or the master's own
    (service,) = instance.services
    assert service.uid == 4322 and service.source == 'the user of the uWSGI master, pid %d' % MASTER


@pytest.mark.parametrize('option', ['master_fifo', 'touch_file'])
def test_a_control_file_of_another_user_than_the_masters_is_refused(instance, option):
    path = instance.fifo if option == 'master_fifo' else instance.touch
    os.utime(instance.touch, (1, 1))
    owner = master_of_another_user(instance, path)
    kind, result = run({option: path, 'stats': '/run/stats.sock'})
    assert kind is AnsibleFailJson
    assert result['msg'] == '%s=%s: owned by %s, neither root nor %s (the user of the uWSGI master, pid %d)' % (
        option, path, owner, _uwsgi.describe_uid(instance.master_uid), MASTER)
    assert instance.fifo_commands == [] and instance.kills == [] and os.stat(instance.touch).st_mtime == 1


def test_without_a_proven_master_the_owner_of_the_directory_stands_for_the_instances_user(instance):
    kind, result = run({'master_fifo': instance.fifo, 'wait': False})
    assert kind is AnsibleExitJson, result['msg']
    (service,) = instance.services
    assert service.uid == os.stat(str(instance.tmp)).st_uid
    assert service.source == ('the owner of %s; with no uWSGI master proven through stats or pidfile, the directory\'s '
                              'owner stands for the instance\'s user' % instance.tmp)


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a FIFO and its directory to two other users needs root')
def test_without_a_proven_master_a_fifo_of_another_user_than_the_directorys_is_refused(instance):
    os.chown(instance.fifo, 4321, 4321)
    os.chown(str(instance.tmp), 4322, 4322)
    kind, result = run({'master_fifo': instance.fifo, 'wait': False})
    assert kind is AnsibleFailJson
    assert result['msg'] == (
        'master_fifo=%s: owned by uid 4321, neither root nor uid 4322 (the owner of %s; with no uWSGI master proven '
        'through stats or pidfile, the directory\'s owner stands for the instance\'s user)' % (instance.fifo, instance.tmp))
    assert instance.fifo_commands == []


def test_a_pidfile_of_another_user_than_the_masters_is_never_signalled(instance):
    owner = master_of_another_user(instance, instance.pidfile)
    kind, result = run({'pidfile': instance.pidfile, 'mode': 'graceful', 'wait': False})
    assert kind is AnsibleFailJson
    assert result['msg'] == (
        'pidfile=%s is owned by %s but names pid %d (%s), a uWSGI master running as %s: a pidfile names a master of '
        'its own user, or is root\'s; nothing was signalled'
        % (instance.pidfile, owner, MASTER, ' '.join(UWSGI_ARGV), _uwsgi.describe_uid(instance.master_uid)))
    assert instance.kills == []


def test_a_fifo_refusal_is_not_retried_but_a_missing_reader_is(monkeypatch):
    calls = []

    def refuse(path, command, service):
        calls.append(path)
        raise _uwsgi.UwsgiError('master_fifo=%s: not a FIFO (a symbolic link, not followed)' % path)

    monkeypatch.setattr(_uwsgi, 'fifo_command', refuse)
    with pytest.raises(_uwsgi.UwsgiError):
        _uwsgi_reload.send_fifo('/run/app/master.fifo', 'c', None)
    assert calls == ['/run/app/master.fifo']

    def not_ready(path, command, service):
        calls.append(path)
        if len(calls) < 4:
            raise _uwsgi.NotReady('master_fifo=%s: no process reads this FIFO' % path)

    monkeypatch.setattr(_uwsgi, 'fifo_command', not_ready)
    monkeypatch.setattr(_uwsgi_reload.time, 'sleep', lambda seconds: None)
    _uwsgi_reload.send_fifo('/run/app/master.fifo', 'c', None)
    assert len(calls) == 4


def test_a_directory_closed_to_this_user_is_named_as_such(instance, monkeypatch):
    def closed(path, *args, **kwargs):
        raise OSError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(_uwsgi_reload.os, 'stat', closed)
    kind, result = run({'master_fifo': instance.fifo, 'wait': False})
    assert kind is AnsibleFailJson
    assert result['msg'] == ('master_fifo=%s: permission denied (a directory on the way is closed to this user)'
                             % instance.fifo)
    assert instance.fifo_commands == []


@pytest.fixture
def helpers(monkeypatch, tmp_path):
    """Builds an instance with mules and spoolers (FakeInstance's keywords); their replacements settle at once."""
    def make(**kwargs):
        monkeypatch.setattr(_uwsgi_helpers, 'SETTLE_SECONDS', 0.0)
        return put_in_place(FakeInstance(**kwargs), monkeypatch, tmp_path)

    return make


def signals_to(fake, pids):
    return [(pid, signal.Signals(sig).name) for pid, sig in fake.kills if pid in pids]


@pytest.mark.parametrize('mode', ['chain', 'rolling', 'workers'])
def test_a_reload_of_the_workers_replaces_the_mules_and_spoolers_too(helpers, mode):
    fake = helpers(mules=2, spoolers=['/var/spool/app'])
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock', 'mode': mode})
    assert kind is AnsibleExitJson, result['msg']
    assert result['mules_before'] == [301, 302] and result['spoolers_before'] == {'/var/spool/app': 400}
    assert len(result['mules_after']) == 2 and not set(result['mules_after']) & {301, 302}
    assert result['spoolers_after']['/var/spool/app'] not in (0, 400)
    # uWSGI's own signals: SIGHUP ends a mule; a spooler ignores it and ends at SIGTERM.
    assert signals_to(fake, {301, 302, 400}) == [(301, 'SIGHUP'), (302, 'SIGHUP'), (400, 'SIGTERM')]
    assert ', then its 2 mules and 1 spooler in ' in result['msg']


@pytest.mark.parametrize('mode', ['graceful', 'brutal'])
def test_a_reload_of_the_whole_instance_is_proven_over_its_mules_and_spoolers_without_signalling_them(helpers, mode):
    fake = helpers(mules=1, spoolers=['/var/spool/app'])
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock', 'mode': mode})
    assert kind is AnsibleExitJson, result['msg']
    assert signals_to(fake, {301, 400}) == []
    assert result['mules_after'] and result['mules_after'] != [301]
    assert result['spoolers_after']['/var/spool/app'] not in (0, 400)


def test_a_spooler_running_a_task_is_stopped_only_once_it_is_idle(helpers, monkeypatch):
    fake = helpers(spoolers=['/var/spool/app'])
    fake.spoolers['/var/spool/app']['running'] = 1
    reads = []

    def read_stats(address, timeout=2.0):
        document = fake.document()
        reads.append([k for k in fake.kills if k[0] == 400])
        if len(reads) == 12:
            fake.spoolers['/var/spool/app']['running'] = 0
        return document

    monkeypatch.setattr(_uwsgi, 'read_stats', read_stats)
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleExitJson, result['msg']
    assert all(not seen for seen in reads[:12]), 'no SIGTERM while it ran a task'
    assert signals_to(fake, {400}) == [(400, 'SIGTERM')]


def test_mules_that_keep_failing_leave_a_failure_that_names_them_and_the_mixed_instance(helpers, monkeypatch):
    fake = helpers(mules=2)
    monkeypatch.setattr(_uwsgi_helpers, 'SETTLE_SECONDS', 0.05)
    fake.broken_mules = True
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock', 'timeout': 1})
    assert kind is AnsibleFailJson
    assert result['msg'].startswith('chain reload replaced the workers, but not the 2 mules within timeout=1.0s: '
                                    'mules 301, 302 replaced by ')
    assert result['msg'].endswith('the instance runs mixed code')
    assert 'a mule whose code fails exits and is forked again: see the uWSGI log' in result['msg']
    assert result['mules_before'] == [301, 302] and len(result['workers_after']) == 4


def test_untitled_mules_beside_gateways_are_refused_before_anything_is_sent(helpers):
    fake = helpers(mules=1, gateways=['http'])
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleFailJson
    assert result['msg'] == ('cannot tell which of the children 301, 900 of the uWSGI master 100 are mules: its '
                             'configuration declares gateways too (http); set auto-procname, which titles each mule '
                             '"uWSGI mule N"')
    assert fake.kills == [] and fake.fifo_commands == []


def test_titled_mules_are_told_apart_from_gateways(helpers):
    fake = helpers(mules=1, gateways=['http'], titled=True)
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleExitJson, result['msg']
    assert result['mules_before'] == [301] and signals_to(fake, {301, 900}) == [(301, 'SIGHUP')]


def test_a_reload_of_the_workers_only_without_wait_is_refused_when_mules_would_keep_the_old_code(helpers):
    fake = helpers(mules=1, spoolers=['/var/spool/app'])
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock', 'wait': False})
    assert kind is AnsibleFailJson
    assert result['msg'] == ('mode=chain replaces the workers only; the instance\'s 1 mule and 1 spooler would keep '
                             'the old code. The module replaces them once the workers are proven, which needs '
                             'wait=true; nothing was sent')
    assert fake.kills == [] and fake.fifo_commands == []


def test_check_mode_names_the_mules_and_spoolers_it_would_replace(helpers):
    fake = helpers(mules=2, spoolers=['/var/spool/a', '/var/spool/b'])
    kind, result = run({'master_fifo': fake.fifo, 'stats': '/run/stats.sock', '_ansible_check_mode': True})
    assert kind is AnsibleExitJson and result['changed']
    assert result['msg'].endswith(', then replace the 2 mules and 2 spoolers')
    assert fake.kills == [] and fake.fifo_commands == []


def test_a_master_outside_this_hosts_proc_is_warned_about_its_mules(instance, monkeypatch):
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, text: warnings.append(text))
    seen = instance.read_process
    monkeypatch.setattr(_uwsgi_reload._proc, 'read_process', lambda pid, proc_root='/proc': None if pid == MASTER
                        else seen(pid))
    kind, result = run({'master_fifo': instance.fifo, 'stats': '/run/stats.sock'})
    assert kind is AnsibleExitJson, result['msg']
    assert result['mules_before'] == [] and 'cannot see the uWSGI master in /proc, so its mules could not be ' \
        'looked for; mode=chain does not replace mules' in warnings

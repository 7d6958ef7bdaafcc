# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import shutil
import time

import pytest

from ansible.module_utils import basic

from ansible_collections.graceful.wsgi.plugins.modules import release_proof
from ansible_collections.graceful.wsgi.plugins.module_utils import _health, _proc, _release, _systemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.no_ptrace import NoPtrace
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

UPTIME = 5000.0
SWITCHED_AGO = 100.0
MASTER = 800
REAL_RUN = _systemd.run  # the server fixture replaces it
PYTHON_MAPS = '55d0c000-55d0d000 r-xp 00001000 08:01 131 /usr/bin/python3.11\n'


class FakeServer:
    """An app_root with releases v1 and v2 (current -> v2) and a master with workers as a fake /proc tree.

    Times are seconds relative to the switch; the tree's boot is placed so that they come out right.
    """

    def __init__(self, root):
        self.proc = root / 'proc'
        self.proc.mkdir()
        self.app_root = root / 'demo'
        for name in ('v1', 'v2'):
            (self.app_root / 'releases' / name).mkdir(parents=True)
        os.symlink('releases/v2', str(self.app_root / 'current'))
        self.now = time.time()
        self.switched_at = self.now - SWITCHED_AGO
        os.utime(str(self.app_root / 'current'), (self.switched_at, self.switched_at), follow_symlinks=False)
        (self.proc / 'uptime').write_text('%.2f 100.00\n' % UPTIME)
        self.boot = self.now - UPTIME
        self.processes = {}
        self.add(MASTER, ppid=1, cwd=str(self.app_root), after=-3000.0)
        self.add(901, cwd=self.release('v2'), after=2.0)
        self.add(902, cwd=self.release('v2'), after=2.1)

    def release(self, name):
        return str(self.app_root / 'releases' / name)

    def add(self, pid, ppid=MASTER, cwd=None, after=1.0, maps=PYTHON_MAPS, state='S'):
        self.processes[pid] = dict(ppid=ppid, cwd=cwd, after=after, maps=maps, state=state)
        self.write()

    def remove(self, pid):
        del self.processes[pid]
        self.write()

    def write(self):
        for entry in self.proc.iterdir():
            if entry.name.isdigit():
                shutil.rmtree(str(entry))
        tick = _proc.clock_tick()
        for pid, info in self.processes.items():
            base = self.proc / str(pid)
            (base / 'task' / str(pid)).mkdir(parents=True)
            ticks = int(round((self.switched_at + info['after'] - self.boot) / tick))
            fields = [info['state'], str(info['ppid'])] + ['0'] * 17 + [str(ticks)] + ['0'] * 10
            (base / 'stat').write_text('%d (python3) %s\n' % (pid, ' '.join(fields)))
            (base / 'cmdline').write_bytes(b'/srv/demo/current/venv/bin/python3\0')
            os.symlink(info['cwd'], str(base / 'cwd'))
            (base / 'maps').write_text(info['maps'])
            children = [str(child) for child, other in sorted(self.processes.items()) if other['ppid'] == pid]
            (base / 'task' / str(pid) / 'children').write_text(' '.join(children))


class FrozenClock:

    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now


@pytest.fixture
def server(tmp_path, monkeypatch):
    fake = FakeServer(tmp_path)
    monkeypatch.setattr(_proc, 'PROC', str(fake.proc))
    # The boot time comes from now minus the tree's uptime: the test's clock must not move it.
    monkeypatch.setattr(_proc, 'time', FrozenClock(fake.now))
    # Commands run only through _systemd.run, which bounds them.
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, args, **kw: unexpected_command(args))
    monkeypatch.setattr(_systemd, 'run', lambda args, timeout=None: unexpected_command(args))
    return fake


def unexpected_command(args):
    raise AssertionError('unexpected command: %r' % (args,))


def with_systemctl(monkeypatch, main_pid=MASTER, state='active', rc=0):
    queries = []

    def run(args, timeout=None):
        queries.append(list(args))
        if rc:
            return rc, '', 'Failed to connect to bus: No such file or directory\n'
        return 0, 'MainPID=%d\nActiveState=%s\n' % (main_pid, state), ''

    monkeypatch.setattr(_systemd, 'run', run)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, *args, **kw: '/usr/bin/' + name)
    return queries


def run(server, check=False, **args):
    args = dict(args)
    args.setdefault('app_root', str(server.app_root))
    if 'service' not in args:
        args.setdefault('master_pid', MASTER)
    args.setdefault('timeout', 0)
    args.setdefault('poll_interval', 0.01)
    args = dict((key, value) for key, value in args.items() if value is not None)
    if check:
        args['_ansible_check_mode'] = True
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            release_proof.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def expected_prefix(server, subject='master %d' % MASTER):
    return 'release proof failed for %s: expected every worker in %s (current switched %s); ' % (
        subject, server.release('v2'), _release.iso_utc(server.switched_at))


def test_proves_workers_in_the_release_started_after_the_switch(server):
    server.add(903, cwd=server.release('v2'), after=2.2, maps=PYTHON_MAPS + (
        '7f00-7f01 r-xp 00000000 08:01 77 %s/venv/lib/_speedups.so\n' % server.release('v2')))
    result, failed = run(server, release='v2', min_workers=3)
    assert not failed and not result['changed'] and result['proven']
    assert result['release'] == 'v2' and result['release_path'] == server.release('v2')
    assert result['switched_at'] == _release.iso_utc(server.switched_at) and result['master_pid'] == MASTER
    assert [worker['pid'] for worker in result['workers']] == [901, 902, 903]
    assert [worker['started_after_switch'] for worker in result['workers']] == [
        pytest.approx(2.0, abs=0.03), pytest.approx(2.1, abs=0.03), pytest.approx(2.2, abs=0.03)]
    assert all(worker['cwd'] == server.release('v2') and worker['stray_mapped_files'] == []
               for worker in result['workers'])
    assert result['msg'] == ("release v2 proven for master 800: 3 workers in %s, started after the switch at %s, none "
                             "mapping another release's files" % (server.release('v2'),
                                                                  _release.iso_utc(server.switched_at)))


def test_check_mode_proves_the_same(server):
    result, failed = run(server, check=True)
    assert not failed and result['proven'] and not result['changed'] and len(result['workers']) == 2


def test_fails_naming_a_worker_in_the_old_release(server):
    server.add(903, cwd=server.release('v1'), after=-12.3)
    result, failed = run(server)
    assert failed and not result['proven']
    assert result['msg'] == expected_prefix(server) + (
        'worker 903 runs in %s, started 12.3 s before the switch; not proven within timeout=0.0s'
        % server.release('v1'))
    assert [worker['pid'] for worker in result['workers']] == [901, 902, 903]
    assert result['workers'][2]['started_after_switch'] == pytest.approx(-12.3, abs=0.03)


def test_fails_naming_a_worker_started_before_the_switch(server):
    server.add(903, cwd=server.release('v2'), after=-0.5)
    result, failed = run(server)
    assert failed
    assert result['msg'] == expected_prefix(server) + (
        'worker 903 started 0.50 s before the switch; not proven within timeout=0.0s')


def test_a_worker_started_in_the_switch_tick_passes(server):
    server.add(903, cwd=server.release('v2'), after=0.0)
    result, failed = run(server)
    assert not failed, result['msg']


def test_fails_naming_a_file_mapped_from_another_release(server):
    stray = '%s/venv/lib/python3.11/site-packages/_speedups.cpython-311-x86_64-linux-gnu.so' % server.release('v1')
    server.add(903, cwd=server.release('v2'), after=3.0,
               maps=PYTHON_MAPS + '7f00-7f01 r-xp 00000000 08:01 77 %s\n' % stray)
    result, failed = run(server)
    assert failed
    assert result['msg'] == expected_prefix(server) + (
        'worker 903 maps a file of another release: %s; not proven within timeout=0.0s' % stray)
    assert result['workers'][2]['stray_mapped_files'] == [stray]


def test_waits_for_old_workers_to_finish(server, monkeypatch):
    server.add(903, cwd=server.release('v1'), after=-40.0)
    looks = []

    def look(*args, **kwargs):
        looks.append(1)
        if len(looks) == 3:
            server.remove(903)  # its last request done, the old worker exits
        return workers_of(*args, **kwargs)

    workers_of = _release.workers_of
    monkeypatch.setattr(_release, 'workers_of', look)
    result, failed = run(server, timeout=10)
    assert not failed and result['proven'] and len(looks) == 3
    assert [worker['pid'] for worker in result['workers']] == [901, 902]


def test_unreadable_cwd_fails_at_once_saying_so(server, monkeypatch):
    readlink = os.readlink
    hidden = str(server.proc / '902' / 'cwd')

    def denied(path, *args, **kwargs):
        if str(path) == hidden:
            raise OSError(errno.EACCES, 'Permission denied', hidden)
        return readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, 'readlink', denied)
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)  # not root: nothing is read as the worker's owner
    monkeypatch.setattr(_proc, 'run_as', lambda *args: pytest.fail('read as the owner for another user'))
    result, failed = run(server, timeout=30)
    assert failed and result['elapsed'] < 5
    assert result['msg'] == ('cannot read %s of worker 902 (Permission denied): run the module as the user the server '
                             'runs as, or as root' % hidden)


def test_root_without_cap_sys_ptrace_reads_each_worker_as_its_owner(server, monkeypatch):
    no_ptrace = NoPtrace(monkeypatch, server.proc, owner=(1000, 1001, True))
    result, failed = run(server, release='v2', min_workers=2)
    assert not failed and result['proven'], result['msg']
    assert [(worker['pid'], worker['cwd']) for worker in result['workers']] == [
        (901, server.release('v2')), (902, server.release('v2'))]
    assert no_ptrace.owner_reads == [(1000, 1001, _proc.OWNER_READ_SECONDS)] * 2  # one read of cwd and maps each


def test_root_without_cap_sys_ptrace_still_names_a_worker_of_the_old_release(server, monkeypatch):
    server.add(903, cwd=server.release('v1'), after=-12.3)
    NoPtrace(monkeypatch, server.proc)
    result, failed = run(server)
    assert failed and result['msg'] == expected_prefix(server) + (
        'worker 903 runs in %s, started 12.3 s before the switch; not proven within timeout=0.0s'
        % server.release('v1'))


def test_a_failed_read_as_the_owner_fails_at_once_naming_worker_what_and_bound(server, monkeypatch):
    no_ptrace = NoPtrace(monkeypatch, server.proc)
    no_ptrace.failure = 'gave no answer within 5 s (the reading process was killed)'
    result, failed = run(server, timeout=30)
    assert failed and result['elapsed'] < 5
    assert result['msg'] == (
        'worker 901: cannot read cwd and maps of pid 901: root may not without CAP_SYS_PTRACE (Permission denied), '
        'and reading it as its owner (uid 1000, gid 1000) gave no answer within 5 s (the reading process was killed)')


def test_zombies_and_exited_workers_are_not_judged(server):
    server.add(903, cwd=server.release('v1'), after=-40.0, state='Z')
    result, failed = run(server)
    assert not failed and [worker['pid'] for worker in result['workers']] == [901, 902]


def test_missing_current_fails_naming_it(server):
    (server.app_root / 'current').unlink()
    result, failed = run(server, timeout=30)
    assert failed and result['msg'] == 'app_root=%s: %s/current does not exist' % (server.app_root, server.app_root)
    assert 'workers' not in result


def test_current_that_is_no_symlink_fails_naming_it(server):
    (server.app_root / 'current').unlink()
    (server.app_root / 'current').mkdir()
    result, failed = run(server)
    assert failed and result['msg'].startswith('app_root=%s: %s/current is not a symlink' % (
        server.app_root, server.app_root))


def test_release_mismatch_fails_at_once(server):
    result, failed = run(server, release='v1', timeout=30)
    assert failed and result['elapsed'] < 5
    assert result['msg'] == 'release=v1: %s/current points to %s, not to %s' % (
        server.app_root, server.release('v2'), server.release('v1'))


@pytest.mark.parametrize('release', ['', '../v2', '..'])
def test_release_must_be_a_name(server, release):
    result, failed = run(server, release=release)
    assert failed and result['msg'] == 'release=%s: must be the name of a directory in %s/releases' % (
        release, server.app_root)


def test_too_few_workers_names_the_count(server):
    result, failed = run(server, min_workers=3)
    assert failed
    assert result['msg'] == expected_prefix(server) + (
        'master 800 has 2 workers (child processes), fewer than min_workers=3; not proven within timeout=0.0s')


def test_missing_master_fails_at_once(server):
    result, failed = run(server, master_pid=4242, timeout=30)
    assert failed and result['elapsed'] < 5
    assert result['msg'] == 'master_pid=4242: no such process (or only a zombie)'


def test_service_main_pid_is_the_master(server, monkeypatch):
    queries = with_systemctl(monkeypatch)
    server.add(903, cwd=server.release('v1'), after=-12.3)
    result, failed = run(server, service='demo.service', timeout=0.05)
    assert failed and result['master_pid'] == MASTER
    assert result['msg'] == expected_prefix(server, 'demo.service (master 800)') + (
        'worker 903 runs in %s, started 12.3 s before the switch; not proven within timeout=0.05s'
        % server.release('v1'))
    assert queries[0] == ['/usr/bin/systemctl', 'show', '--property=MainPID,ActiveState', 'demo.service']
    assert len(queries) > 1  # asked again at every check


def test_service_without_main_process(server, monkeypatch):
    with_systemctl(monkeypatch, main_pid=0, state='inactive')
    result, failed = run(server, service='demo.service')
    assert failed and result['master_pid'] is None and result['workers'] == []
    assert result['msg'] == expected_prefix(server, 'demo.service') + (
        'the unit has no live main process (MainPID=0, ActiveState=inactive); not proven within timeout=0.0s')


def test_systemctl_failing_fails_at_once(server, monkeypatch):
    with_systemctl(monkeypatch, rc=1)
    result, failed = run(server, service='demo.service', timeout=30)
    assert failed and result['elapsed'] < 5
    assert result['msg'] == ('service=demo.service: /usr/bin/systemctl show --property=MainPID,ActiveState '
                             'demo.service failed (rc=1): Failed to connect to bus: No such file or directory')


def test_a_systemctl_that_hangs_is_killed_and_fails_at_once_naming_it(server, monkeypatch, tmp_path):
    systemctl = tmp_path / 'systemctl'
    systemctl.write_text('#!/bin/sh\nsleep 30\n')
    systemctl.chmod(0o755)
    monkeypatch.setattr(_systemd, 'run', REAL_RUN)
    monkeypatch.setattr(_systemd, 'COMMAND_TIMEOUT', 0.2)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, *args, **kw: str(systemctl))
    started = time.monotonic()
    result, failed = run(server, service='demo.service', timeout=30)
    assert failed and time.monotonic() - started < 5
    assert result['msg'] == ('service=demo.service: %s show --property=MainPID,ActiveState demo.service did not '
                             'finish within 0.2s (killed)' % systemctl)


@pytest.mark.parametrize('args, message', [
    (dict(master_pid=None), 'one of the following is required: service, master_pid'),
    (dict(service='demo.service'), 'parameters are mutually exclusive: service|master_pid'),
    (dict(min_workers=0), 'min_workers=0: must be at least 1 (no worker proves nothing)'),
    (dict(poll_interval=0), 'poll_interval=0.0: must be positive'),
    (dict(timeout=-1), 'timeout=-1.0: must not be negative'),
])
def test_refuses_bad_options(server, args, message):
    full = dict(master_pid=MASTER)
    full.update(args)
    result, failed = run(server, **full)
    assert failed and message in result['msg']


class Health:
    """Stands in for the health gate's HTTP requests on a simulated clock: each answer is (status, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = 0
        self.now = 0.0

    def http_get(self, url, headers, validate_certs, timeout, opener=None):
        self.requests += 1
        self.now += 0.1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def health(monkeypatch):
    def install(*answers):
        fake = Health(answers)
        real_run_gate = _health.run_gate
        monkeypatch.setattr(_health, 'http_get', fake.http_get)
        monkeypatch.setattr(_health, 'run_gate', lambda *args, **kwargs: real_run_gate(
            *args, clock=lambda: fake.now, sleep=lambda seconds: setattr(fake, 'now', fake.now + seconds), **kwargs))
        return fake
    return install


HEALTH = dict(url='http://127.0.0.1:8000/healthz', successes=3, timeout=5)


def test_health_gate_then_proof_in_one_task(server, health):
    fake = health((503, 'starting'), (200, 'ok v2'))
    result, failed = run(server, release='v2', health=HEALTH)
    assert not failed and result['proven'] and len(result['workers']) == 2
    assert fake.requests == 4
    assert result['health']['passed'] and result['health']['consecutive'] == 3 and result['health']['failures'] == 1
    assert result['health']['url'] == HEALTH['url'] and result['health']['body'] == 'ok v2'


def test_a_failed_health_gate_fails_before_the_proof(server, health, monkeypatch):
    health((500, 'broken'))
    judged = []
    monkeypatch.setattr(_release, 'judge_workers', lambda *args: judged.append(args))
    result, failed = run(server, release='v2', health=dict(HEALTH, timeout=1))
    assert failed and not result['proven'] and judged == []
    assert result['msg'].startswith('health gate failed: %s did not answer 3 consecutive successes' % HEALTH['url'])
    assert result['health']['passed'] is False and result['health']['status'] == 500
    assert 'workers' not in result


def test_a_proof_that_fails_after_the_gate_passed_says_the_gate_passed(server, health):
    health((200, 'ok'))
    server.add(903, cwd=server.release('v1'), after=2.2)
    result, failed = run(server, release='v2', health=HEALTH)
    assert failed and result['msg'].startswith(expected_prefix(server))
    assert result['health']['passed'] is True


def test_bad_health_options_fail_at_once_naming_them(server, health):
    fake = health((200, 'ok'))
    result, failed = run(server, release='v2', health=dict(HEALTH, url='ftp://x/healthz'))
    assert failed and result['msg'] == 'health.url=ftp://x/healthz: not an http:// or https:// URL with a host'
    assert fake.requests == 0

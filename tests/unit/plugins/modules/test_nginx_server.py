# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nginx_server with the OS faked: a server directory in a temporary tree, nginx's workers as a fake /proc, and
nginx -t and systemctl as a recorded runner. The real test is the rollout scenarios' drains under load."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import nginx_server
from ansible_collections.graceful.wsgi.plugins.module_utils import _nginx, _nginx_server, _proc, _systemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

UP = '# Ansible managed\nserver 10.0.0.11:8000 max_fails=1 fail_timeout=10s;  # web1\n'
DOWN = '# Ansible managed\nserver 10.0.0.11:8000 max_fails=1 fail_timeout=10s down;  # web1\n'


class FakeNginx:
    """Fake /proc with nginx's workers, and the runner of nginx -t and systemctl reload."""

    def __init__(self, proc_root, test_rc=0, reload_rc=0, workers_exit=True):
        self.proc_root = proc_root
        self.test_rc = test_rc
        self.reload_rc = reload_rc
        self.workers_exit = workers_exit
        self.commands = []
        self.seen_at_test = None
        self.workers = {}
        self.add_process(1, 'nginx: master process /usr/sbin/nginx', 100)

    def add_process(self, pid, title, ticks):
        directory = self.proc_root / str(pid)
        directory.mkdir()
        fields = ['S', '1'] + ['0'] * 17 + [str(ticks), '0', '0']
        (directory / 'stat').write_text('%d (nginx) %s\n' % (pid, ' '.join(fields)))
        (directory / 'cmdline').write_bytes(title.encode() + b'\0')

    def add_worker(self, pid, ticks=200):
        self.add_process(pid, 'nginx: worker process', ticks)
        self.workers[pid] = ticks

    def remove(self, pid):
        directory = self.proc_root / str(pid)
        for entry in directory.iterdir():
            entry.unlink()
        directory.rmdir()

    def run(self, argv, timeout=None):
        self.commands.append(list(argv))
        if argv[1:] == ['-t', '-q']:
            return self.test_rc, '', '' if self.test_rc == 0 else 'nginx: [emerg] invalid parameter "dwn" in servers/web1.conf:2'
        if argv[:2] == ['systemctl', 'reload']:
            if self.reload_rc == 0 and self.workers_exit:
                for pid in list(self.workers):
                    self.remove(pid)
            return self.reload_rc, '', '' if self.reload_rc == 0 else 'Job for nginx.service failed'
        raise AssertionError('unexpected command %r' % (argv,))


@pytest.fixture(autouse=True)
def trust_the_test_user(monkeypatch):
    monkeypatch.setattr(_nginx, 'TRUSTED_UID', os.geteuid())


@pytest.fixture
def config_dir(tmp_path):
    servers = tmp_path / 'shop' / 'servers'
    servers.mkdir(parents=True)
    (servers / 'web1.conf').write_text(UP)
    return tmp_path / 'shop'


@pytest.fixture
def fake(tmp_path, monkeypatch):
    proc_root = tmp_path / 'proc'
    proc_root.mkdir()
    nginx = FakeNginx(proc_root)
    monkeypatch.setattr(_proc, 'PROC', str(proc_root))
    monkeypatch.setattr(_systemd, 'run', nginx.run)
    monkeypatch.setattr(_nginx_server.time, 'sleep', lambda seconds: None)
    # The controller running the unit tests need not have nginx installed.
    monkeypatch.setattr(nginx_server.AnsibleModule, 'get_bin_path', lambda module, name, **kwargs: '/usr/sbin/' + name)
    return nginx


def run(check=False, one_server='web1', **args):
    args.setdefault('app', 'shop')
    if 'servers' not in args and one_server:
        args.setdefault('server', one_server)
    args.update(_ansible_check_mode=check)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            nginx_server.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def test_a_drain_writes_the_file_reloads_and_waits_for_the_old_workers(config_dir, fake):
    fake.add_worker(41)
    fake.add_worker(42)
    result, failed = run(content=DOWN, config_dir=str(config_dir), wait_for_requests=True, timeout=5)
    assert not failed, result
    assert result['changed'] and result['reloaded']
    assert result['old_workers'] == [41, 42]
    assert (config_dir / 'servers' / 'web1.conf').read_text() == DOWN
    assert [command[1:] for command in fake.commands] == [['-t', '-q'], ['reload', 'nginx.service']]
    # Written under a dot name and renamed: nothing else is left in the directory nginx includes.
    assert sorted(os.listdir(config_dir / 'servers')) == ['web1.conf']
    assert oct((config_dir / 'servers' / 'web1.conf').stat().st_mode & 0o777) == '0o644'


def test_an_unchanged_file_touches_nothing(config_dir, fake):
    fake.add_worker(41)
    result, failed = run(content=UP, config_dir=str(config_dir), wait_for_requests=True)
    assert not failed and not result['changed'] and not result['reloaded']
    assert fake.commands == []


def test_check_mode_reports_the_change_and_writes_nothing(config_dir, fake):
    result, failed = run(check=True, content=DOWN, config_dir=str(config_dir), wait_for_requests=True)
    assert not failed and result['changed'] and not result['reloaded']
    assert (config_dir / 'servers' / 'web1.conf').read_text() == UP
    assert fake.commands == []


def test_an_enable_does_not_wait_for_the_old_workers(config_dir, fake):
    (config_dir / 'servers' / 'web1.conf').write_text(DOWN)
    fake.workers_exit = False
    fake.add_worker(41)
    result, failed = run(content=UP, config_dir=str(config_dir), timeout=0.5)
    assert not failed, result
    assert result['reloaded'] and result['waited'] == 0.0


def test_a_configuration_nginx_rejects_is_put_back_and_named(config_dir, fake):
    fake.test_rc = 1
    result, failed = run(content=DOWN.replace('down', 'dwn'), config_dir=str(config_dir), wait_for_requests=True)
    assert failed
    assert 'rejects the configuration' in result['msg'] and str(config_dir / 'servers' / 'web1.conf') in result['msg']
    assert 'invalid parameter "dwn"' in result['msg']
    assert (config_dir / 'servers' / 'web1.conf').read_text() == UP
    assert [command[1:] for command in fake.commands] == [['-t', '-q']]


def test_a_new_file_nginx_rejects_is_removed(config_dir, fake):
    fake.test_rc = 1
    result, failed = run(server='web2', content=DOWN, config_dir=str(config_dir))
    assert failed
    assert not (config_dir / 'servers' / 'web2.conf').exists()


def test_a_failed_reload_puts_the_file_back(config_dir, fake):
    fake.reload_rc = 1
    result, failed = run(content=DOWN, config_dir=str(config_dir), wait_for_requests=True)
    assert failed
    assert 'systemctl reload nginx.service failed' in result['msg'] and 'Job for nginx.service failed' in result['msg']
    assert (config_dir / 'servers' / 'web1.conf').read_text() == UP


def test_workers_that_do_not_finish_fail_the_drain_within_the_timeout(config_dir, fake):
    fake.workers_exit = False
    fake.add_worker(41)
    result, failed = run(content=DOWN, config_dir=str(config_dir), wait_for_requests=True, timeout=0.3)
    assert failed
    assert 'pid 41' in result['msg'] and 'after 0.3s' in result['msg'] and 'web1' in result['msg']


def test_a_worker_pid_reused_by_another_process_counts_as_gone(config_dir, fake):
    fake.workers_exit = False
    fake.add_worker(41, ticks=200)

    def reload_and_reuse(argv, timeout=None):
        fake.commands.append(list(argv))
        if argv[:2] == ['systemctl', 'reload']:
            fake.remove(41)
            fake.add_process(41, 'nginx: worker process', 999)
        return 0, '', ''
    _systemd.run = reload_and_reuse
    result, failed = run(content=DOWN, config_dir=str(config_dir), wait_for_requests=True, timeout=0.3)
    assert not failed, result
    assert result['old_workers'] == [41]


def test_a_symlinked_server_file_is_refused_without_quoting_it(config_dir, fake, tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('password=hunter2\n')
    path = config_dir / 'servers' / 'web1.conf'
    path.unlink()
    path.symlink_to(secret)
    result, failed = run(content=DOWN, config_dir=str(config_dir))
    assert failed and 'symbolic link' in result['msg'] and 'hunter2' not in result['msg']
    assert fake.commands == []
    assert secret.read_text() == 'password=hunter2\n'


@pytest.mark.parametrize('option, value', [('app', '../etc'), ('server', 'web1/../../x'), ('server', 'a..b'),
                                           ('service', 'nginx; reboot'), ('timeout', 0), ('command_timeout', -1)])
def test_bad_input_is_refused_naming_the_option(config_dir, fake, option, value):
    result, failed = run(content=DOWN, config_dir=str(config_dir), **{option: value})
    assert failed and result['msg'].startswith(option + '=')
    assert fake.commands == []
    assert (config_dir / 'servers' / 'web1.conf').read_text() == UP


def test_a_missing_config_dir_is_named(tmp_path, fake):
    result, failed = run(content=DOWN, config_dir=str(tmp_path / 'nowhere'))
    assert failed and str(tmp_path / 'nowhere') in result['msg']


# ---------------------------------------------------------------- every server in one call (servers, prune)

WEB2_UP = UP.replace('10.0.0.11', '10.0.0.12').replace('web1', 'web2')
WEB3_DOWN = DOWN.replace('10.0.0.11', '10.0.0.13').replace('web1', 'web3')


def every_server(config_dir):
    return dict((path.name, path.read_text()) for path in sorted((config_dir / 'servers').iterdir()))


def test_every_server_written_and_the_unlisted_removed_in_one_call(config_dir, fake):
    (config_dir / 'servers' / 'old9.conf').write_text(DOWN.replace('web1', 'old9'))
    servers = [dict(name='web1', content=UP), dict(name='web2', content=WEB2_UP), dict(name='web3', content=WEB3_DOWN)]
    result, failed = run(servers=servers, prune=True, config_dir=str(config_dir))
    assert not failed, result
    assert every_server(config_dir) == {'web1.conf': UP, 'web2.conf': WEB2_UP, 'web3.conf': WEB3_DOWN}
    assert result['written'] == [str(config_dir / 'servers' / name) for name in ('web2.conf', 'web3.conf')]
    assert result['removed'] == [str(config_dir / 'servers' / 'old9.conf')]
    assert result['changed'] and result['reloaded']
    assert [command[1:] for command in fake.commands] == [['-t', '-q'], ['reload', 'nginx.service']]
    assert result['msg'] == '2 of the 3 server files in %s (and 1 removed) written, nginx reloaded' % (
        config_dir / 'servers')


def test_every_server_unchanged_touches_nothing(config_dir, fake):
    result, failed = run(servers=[dict(name='web1', content=UP)], prune=True, config_dir=str(config_dir))
    assert not failed and not result['changed'] and not result['reloaded']
    assert result['msg'] == 'the server files in %s already hold this state: nginx left as it was' % (
        config_dir / 'servers')
    assert fake.commands == []


def test_without_prune_an_unlisted_server_stays(config_dir, fake):
    result, failed = run(servers=[dict(name='web2', content=WEB2_UP)], config_dir=str(config_dir))
    assert not failed, result
    assert every_server(config_dir) == {'web1.conf': UP, 'web2.conf': WEB2_UP}
    assert result['removed'] == []


def test_every_server_in_check_mode_writes_and_removes_nothing(config_dir, fake):
    result, failed = run(check=True, servers=[dict(name='web2', content=WEB2_UP)], prune=True,
                         config_dir=str(config_dir))
    assert not failed and result['changed'] and not result['reloaded']
    assert result['written'] == [str(config_dir / 'servers' / 'web2.conf')]
    assert result['removed'] == [str(config_dir / 'servers' / 'web1.conf')]
    assert every_server(config_dir) == {'web1.conf': UP}
    assert fake.commands == []


def test_without_reload_the_files_are_written_and_nginx_is_left_to_the_caller(config_dir, fake):
    result, failed = run(servers=[dict(name='web1', content=DOWN), dict(name='web2', content=WEB2_UP)],
                         reload=False, config_dir=str(config_dir))
    assert not failed, result
    assert result['changed'] and not result['reloaded']
    assert every_server(config_dir) == {'web1.conf': DOWN, 'web2.conf': WEB2_UP}
    assert fake.commands == []


def test_a_configuration_nginx_rejects_puts_every_file_back(config_dir, fake):
    fake.test_rc = 1
    servers = [dict(name='web1', content=DOWN.replace('down', 'dwn')), dict(name='web2', content=WEB2_UP)]
    result, failed = run(servers=servers, prune=True, config_dir=str(config_dir))
    assert failed and 'rejects the configuration' in result['msg'] and '(put back as it was)' in result['msg']
    assert every_server(config_dir) == {'web1.conf': UP}


def test_a_failed_reload_puts_a_removed_file_back(config_dir, fake):
    fake.reload_rc = 1
    result, failed = run(servers=[dict(name='web2', content=WEB2_UP)], prune=True, config_dir=str(config_dir))
    assert failed and 'systemctl reload nginx.service failed' in result['msg']
    assert every_server(config_dir) == {'web1.conf': UP}


def test_a_symlinked_file_among_the_servers_fails_before_anything_is_written(config_dir, fake, tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('password=hunter2\n')
    (config_dir / 'servers' / 'web2.conf').symlink_to(secret)
    result, failed = run(servers=[dict(name='web1', content=DOWN), dict(name='web2', content=WEB2_UP)],
                         config_dir=str(config_dir))
    assert failed and 'web2.conf: is a symbolic link' in result['msg'] and 'hunter2' not in result['msg']
    assert (config_dir / 'servers' / 'web1.conf').read_text() == UP
    assert secret.read_text() == 'password=hunter2\n'


@pytest.mark.parametrize('args, message', [
    (dict(servers=[dict(name='web1/../x', content=UP)]), "servers[0].name='web1/../x'"),
    (dict(servers=[dict(name='web1', content=UP), dict(name='web1', content=DOWN)]), 'servers: names web1 more'),
    (dict(servers=[dict(name='web1', content=UP)], server='web1', content=UP), 'parameters are mutually exclusive'),
    (dict(), 'one of the following is required: server, servers'),
    (dict(server='web1'), 'parameters are required together: server, content'),
    (dict(server='web1', content=UP, prune=True), 'prune is True but all of the following are missing: servers'),
])
def test_bad_servers_input_is_refused_naming_the_option(config_dir, fake, args, message):
    result, failed = run(one_server=None, config_dir=str(config_dir), **args)
    assert failed and message in result['msg'], result['msg']
    assert every_server(config_dir) == {'web1.conf': UP}
    assert fake.commands == []

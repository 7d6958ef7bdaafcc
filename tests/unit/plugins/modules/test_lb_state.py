# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import lb_state
from ansible_collections.graceful.wsgi.plugins.module_utils import _haproxy, _nginx
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.fake_haproxy import FakeHaproxy, server
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

SHOP = {'shop': [server('web1'), server('web2', '10.0.0.12', admin=1, op_state=0, status='MAINT'),
                 server('web3', '10.0.0.13', op_state=0, status='DOWN')],
        'shop-canary': [server('web9', '10.0.0.19')]}


@pytest.fixture(autouse=True)
def trust_the_test_user(monkeypatch):
    monkeypatch.setattr(_nginx, 'TRUSTED_UID', os.geteuid())
    monkeypatch.setattr(_haproxy, 'TRUSTED_UID', os.geteuid())


@pytest.fixture
def admin_socket():
    directory = tempfile.mkdtemp(prefix='lbs-')
    yield os.path.join(directory, 'admin.sock')
    shutil.rmtree(directory)


@pytest.fixture
def nginx_dir(tmp_path):
    servers = tmp_path / 'shop' / 'servers'
    servers.mkdir(parents=True)
    (servers / 'web1.conf').write_text('# Ansible managed\nserver 10.0.0.11:8000 max_fails=1 fail_timeout=10s;  '
                                       '# web1\n')
    (servers / 'web2.conf').write_text('# Ansible managed\nserver 10.0.0.12:8000 max_fails=1 fail_timeout=10s down;'
                                       '  # web2\n')
    return tmp_path / 'shop'


def run(check=False, **args):
    args.update(_ansible_check_mode=check)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            lb_state.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def states(result):
    return dict((name, report['state']) for name, report in result['servers'].items())


# ---------------------------------------------------------------- nginx

@pytest.mark.parametrize('check', [False, True])
def test_nginx_reports_every_server_of_the_app(nginx_dir, check):
    result, failed = run(check=check, lb='nginx', app='shop', config_dir=str(nginx_dir))
    assert not failed and result['changed'] is False, result
    assert states(result) == {'web1': 'enabled', 'web2': 'drained'}
    assert (result['enabled'], result['drained'], result['missing']) == (['web1'], ['web2'], [])
    assert result['servers']['web2'] == dict(state='drained', detail='marked down in %s/servers/web2.conf' % nginx_dir,
                                             address='10.0.0.12:8000', path='%s/servers/web2.conf' % nginx_dir)
    assert result['msg'] == 'nginx %s: 1 enabled (web1), 1 drained (web2)' % nginx_dir


def test_nginx_named_servers_and_the_default_config_dir(nginx_dir, monkeypatch):
    monkeypatch.setattr(lb_state, 'NGINX_DIR', str(nginx_dir.parent))
    result, failed = run(lb='nginx', app='shop', servers=['web2', 'web3', 'web2'])
    assert not failed, result
    assert states(result) == {'web2': 'drained', 'web3': 'missing'}
    assert (result['enabled'], result['drained'], result['missing']) == ([], ['web2'], ['web3'])
    assert result['msg'] == 'nginx %s: 1 drained (web2), 1 missing (web3)' % nginx_dir


def test_nginx_without_the_config_dir_fails_naming_it(tmp_path):
    result, failed = run(lb='nginx', app='shop', config_dir=str(tmp_path / 'absent'))
    assert failed and result['changed'] is False
    assert result['msg'] == ('config_dir=%s/absent: %s/absent does not exist (is the role lb_nginx set up for this '
                             'app on this host?)' % (tmp_path, tmp_path))


def test_nginx_with_no_servers_yet(tmp_path):
    (tmp_path / 'servers').mkdir()
    result, failed = run(lb='nginx', app='shop', config_dir=str(tmp_path))
    assert not failed and result['servers'] == {} and result['msg'] == 'nginx %s: no servers' % tmp_path


# ---------------------------------------------------------------- haproxy

@pytest.mark.parametrize('check', [False, True])
def test_haproxy_reports_the_backend_named_after_the_app(admin_socket, check):
    with FakeHaproxy(admin_socket, SHOP) as fake:
        result, failed = run(check=check, lb='haproxy', app='shop', socket=admin_socket)
    assert not failed and result['changed'] is False, result
    assert fake.commands == ['show servers state shop;show stat']
    assert states(result) == {'web1': 'enabled', 'web2': 'drained', 'web3': 'enabled'}
    assert result['servers']['web2'] == dict(
        state='drained', detail='in maintenance: disabled through the admin socket (status MAINT, 0 open sessions)',
        admin='MAINT', status='MAINT', weight=1, sessions=0, address='10.0.0.12:8000')
    assert result['servers']['web3']['status'] == 'DOWN'
    assert result['msg'] == 'haproxy backend shop: 2 enabled (web1, web3), 1 drained (web2)'


def test_haproxy_named_servers_of_another_backend_at_the_default_socket(admin_socket, monkeypatch):
    monkeypatch.setattr(lb_state, 'HAPROXY_SOCKET', admin_socket)
    with FakeHaproxy(admin_socket, SHOP) as fake:
        result, failed = run(lb='haproxy', app='shop', backend='shop-canary', servers=['web9', 'web1'])
    assert not failed, result
    assert fake.commands == ['show servers state shop-canary;show stat']
    assert states(result) == {'web9': 'enabled', 'web1': 'missing'}
    assert result['servers']['web1'] == dict(state='missing', detail='backend shop-canary has no server of this name',
                                             admin=None, status=None, weight=None, sessions=None, address=None)
    assert result['missing'] == ['web1']


def test_haproxy_unknown_backend(admin_socket):
    with FakeHaproxy(admin_socket, SHOP):
        result, failed = run(lb='haproxy', app='blog', socket=admin_socket)
    assert failed and result['msg'] == 'backend=blog: HAProxy has no such backend'


def test_haproxy_that_does_not_answer_fails_at_the_timeout(admin_socket):
    with FakeHaproxy(admin_socket, SHOP, mode='trickle', trickle_interval=0.05):
        started = time.monotonic()
        result, failed = run(lb='haproxy', app='shop', socket=admin_socket, timeout=0.4)
        elapsed = time.monotonic() - started
    assert failed and result['msg'].startswith('socket=%s: no complete answer within 0.4s (' % admin_socket)
    assert elapsed < 1.4


def test_haproxy_socket_that_is_not_a_socket(tmp_path):
    path = tmp_path / 'admin.sock'
    path.write_text('not a socket')
    result, failed = run(lb='haproxy', app='shop', socket=str(path))
    assert failed and result['msg'] == 'socket=%s: is a regular file, not a socket' % path


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize('args, message', [
    (dict(lb='nginx', app='../etc'), "app='../etc': use letters, digits, \".\", \"_\" and \"-\", starting with a "
                                     "letter or a digit"),
    (dict(lb='nginx', app='shop\n'), "app='shop\\n': use letters, digits"),
    (dict(lb='nginx', app='shop', servers=['web1', 'web1/../../x']), "servers: 'web1/../../x': use letters"),
    (dict(lb='haproxy', app='shop', servers=['-web1']), "servers: '-web1': use letters"),
    (dict(lb='haproxy', app='shop', backend='shop;disable server shop/web1'), "backend='shop;disable server "
                                                                              "shop/web1': use letters"),
    (dict(lb='haproxy', app='shop', config_dir='/tmp'), 'config_dir is an option of lb=nginx, not of lb=haproxy'),
    (dict(lb='nginx', app='shop', socket='/tmp/s'), 'socket is an option of lb=haproxy, not of lb=nginx'),
    (dict(lb='nginx', app='shop', backend='shop'), 'backend is an option of lb=haproxy, not of lb=nginx'),
    (dict(lb='haproxy', app='shop', timeout=0), 'timeout=0.0: must be more than 0 seconds'),
    (dict(lb='traefik', app='shop'), 'value of lb must be one of: nginx, haproxy, got: traefik'),
    (dict(app='shop'), 'missing required arguments: lb'),
])
def test_bad_parameters_fail_before_anything_is_read(args, message):
    result, failed = run(**args)
    assert failed and message in result['msg'], result


def test_a_backend_may_have_a_colon():
    assert lb_state.check_params(dict(lb='haproxy', app='shop', servers=None, backend='be:shop', config_dir=None,
                                      socket=None, timeout=5.0)) is None


def test_summary_sorts_each_state():
    result = lb_state.summary({'b': {'state': 'drained'}, 'a': {'state': 'drained'}, 'c': {'state': 'enabled'}}, 'x')
    assert (result['enabled'], result['drained'], result['missing']) == (['c'], ['a', 'b'], [])
    assert result['msg'] == 'x: 1 enabled (c), 2 drained (a, b)'

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi_config


# ------------------------------------------------------------------ ini options

@pytest.mark.parametrize('text, expected', [
    ('[uwsgi]\nsocket = /run/app/web-1.sock\nsocket = /run/app/other.sock\n', ['/run/app/web-1.sock']),
    ('[uwsgi]\nuwsgi_socket = 127.0.0.1:3031\n', ['127.0.0.1:3031']),
    ('[uwsgi]\nsubscribe2 = server=127.0.0.1:2626,key=shop,addr=10.0.0.5:3031\nsocket = :3031\n',
     ['10.0.0.5:3031', ':3031']),
    ('[uwsgi]\nsubscribe-to = 10.0.0.5:3031=/run/sub.sock:shop\nsocket = :3031\n', ['10.0.0.5:3031', ':3031']),
    ('[uwsgi]\nsubscribe-to = /run/sub.sock:shop\nsocket = 127.0.0.1:3101\n', ['127.0.0.1:3101']),
    ('[uwsgi]\nmodule = app\n', []),
    ('[other]\nsocket = /x\n', []),
    ('not an ini [[[', []),
    (None, []),
])
def test_subscription_addresses(text, expected):
    assert _uwsgi_config.subscription_addresses(text) == expected


@pytest.mark.parametrize('text, expected', [
    ('[uwsgi]\nsubscribe-to = 127.0.0.1:2626:shop\nst = /run/sub.sock:shop\nsubscribe-to = 127.0.0.1:2626:shop\n',
     ['127.0.0.1:2626', '/run/sub.sock']),
    ('[uwsgi]\nsubscribe2 = server=10.0.0.1:2626,key=shop,addr=10.0.0.5:3031\n', ['10.0.0.1:2626']),
    ('[uwsgi]\nsubscribe-to = @/etc/subscriptions.txt\n', []),
    ('[uwsgi]\nsocket = :3031\n', []),
    # A key holding ':' (a Host with its port) is the key's, not the server's.
    ('[uwsgi]\nsubscribe-to = /run/shop-fastrouter/subscription.sock:shop.example:8080\n'
     'subscribe-to = 127.0.0.1:2626:shop.example:8080\n',
     ['/run/shop-fastrouter/subscription.sock', '127.0.0.1:2626']),
    ('[uwsgi]\nsubscribe-to = 127.0.0.1:3031=/run/sub.sock:shop\n', ['/run/sub.sock']),
    ('[uwsgi]\nsubscribe-to = /run/sub.sock\nsubscribe-to = 127.0.0.1:2626\n', []),
])
def test_subscription_servers(text, expected):
    assert _uwsgi_config.subscription_servers(text) == expected


@pytest.mark.parametrize('value, expected', [
    ('/run/shop-fastrouter/subscription.sock:shop',
     {'server': '/run/shop-fastrouter/subscription.sock', 'key': 'shop', 'address': None}),
    ('/run/sub.sock:shop.example:8080,5', {'server': '/run/sub.sock', 'key': 'shop.example:8080', 'address': None}),
    ('127.0.0.1:2626:shop', {'server': '127.0.0.1:2626', 'key': 'shop', 'address': None}),
    (':2626:shop', {'server': ':2626', 'key': 'shop', 'address': None}),
    ('127.0.0.1:2626:shop.example:8080', {'server': '127.0.0.1:2626', 'key': 'shop.example:8080', 'address': None}),
    ('10.0.0.5:3031=/run/sub.sock:shop', {'server': '/run/sub.sock', 'key': 'shop', 'address': '10.0.0.5:3031'}),
    ('=0=127.0.0.1:2626:shop', {'server': '127.0.0.1:2626', 'key': 'shop', 'address': None}),
    ('/run/sub.sock:@/etc/keys.txt', {'server': '/run/sub.sock', 'key': None, 'address': None}),
    # uWSGI sends nothing for these.
    ('/run/sub.sock', None),
    ('127.0.0.1:2626', None),
    ('shop', None),
    ('=0', None),
    ('@/etc/subscriptions.txt', None),
    ('', None),
])
def test_parse_subscribe_to_reads_as_uwsgi_does(value, expected):
    assert _uwsgi_config.parse_subscribe_to(value) == expected


# ------------------------------------------------------------------ lazy-apps evidence

def files(mapping):
    return mapping.get


@pytest.mark.parametrize('cmdline, environ, texts, expected', [
    (['uwsgi', '--lazy-apps', '--http-socket', ':80'], {}, {}, True),
    (['uwsgi', '--lazy-apps=false'], {}, {}, False),
    (['uwsgi', '--http-socket', ':80'], {'UWSGI_LAZY_APPS': '1'}, {}, True),
    (['uwsgi', '--ini', 'app.ini'], {}, {'/srv/app.ini': '[uwsgi]\nlazy-apps = true\n'}, True),
    (['uwsgi', '--ini=/etc/app.ini'], {}, {'/etc/app.ini': '[uwsgi]\nlazy-apps\n'}, True),
    (['uwsgi', '--ini', 'app.ini'], {}, {'/srv/app.ini': '[uwsgi]\nlazy_apps = 1\n'}, True),
    (['uwsgi', '--ini', 'app.ini'], {}, {'/srv/app.ini': '[uwsgi]\nlazy-apps = false\nmaster = true\n'}, False),
    (['uwsgi', '--ini', 'app.ini:prod'], {}, {'/srv/app.ini': '[uwsgi]\nmaster=1\n[prod]\nlazy = true\n'}, True),
    (['uwsgi', '--ini', 'app.ini'], {}, {'/srv/app.ini': '[uwsgi]\nini = base.ini\n', '/srv/base.ini': '[uwsgi]\nlazy-apps = true\n'}, True),
    (['uwsgi', 'app.ini'], {}, {'/srv/app.ini': '[uwsgi]\nlazy-apps = true\n'}, True),
    (['uwsgi', '--ini', 'gone.ini'], {}, {}, None),
    (['uwsgi', '--yaml', 'app.yml'], {}, {}, None),
    (['uwsgi', '--http-socket', ':80'], {}, {}, False),
])
def test_lazy_apps_declared(cmdline, environ, texts, expected):
    assert _uwsgi_config.lazy_apps_declared(cmdline, environ, '/srv', files(texts)) is expected


@pytest.mark.parametrize('cmdline, environ, texts, expected', [
    (['uwsgi', '--emperor', '/etc/uwsgi/vassals', '--emperor-nofollow'], {}, {}, True),
    (['uwsgi', '--emperor', '/etc/uwsgi/vassals', '--emperor-nofollow=false'], {}, {}, False),
    (['uwsgi', '--emperor', '/etc/uwsgi/vassals'], {'UWSGI_EMPEROR_NOFOLLOW': '1'}, {}, True),
    (['uwsgi', '--ini', 'emperor.ini'], {}, {'/srv/emperor.ini': '[uwsgi]\nemperor = vassals\nemperor_nofollow = true\n'},
     True),
    (['uwsgi', '--ini', 'emperor.ini'], {}, {'/srv/emperor.ini': '[uwsgi]\nemperor = vassals\n'}, False),
    (['uwsgi', '--ini', 'emperor.ini'], {'UWSGI_LAZY_APPS': '1'}, {'/srv/emperor.ini': '[uwsgi]\nlazy-apps = 1\n'},
     False),  # another flag is not this one
    (['uwsgi', '--xml', 'emperor.xml'], {}, {}, None),
])
def test_flag_declared_reads_any_flag_from_the_command_line_environment_and_ini(cmdline, environ, texts, expected):
    assert _uwsgi_config.flag_declared(('emperor-nofollow',), cmdline, environ, '/srv', files(texts)) is expected


def test_magic_table_of_a_symlink_keeps_the_links_name(tmp_path):
    (tmp_path / 'shop.ini').write_text('')
    vassals = tmp_path / 'vassals'
    vassals.mkdir()
    (vassals / 'shop_2.ini').symlink_to(tmp_path / 'shop.ini')
    table = _uwsgi_config.magic_table(str(vassals / 'shop_2.ini'), str(vassals))
    assert (table['n'], table['s'], table['e'], table['o']) == ('shop_2', 'shop_2.ini', 'ini', 'shop_2.ini')
    assert (table['p'], table['d'], table['c']) == (str(vassals / 'shop_2.ini'), str(vassals), 'vassals')
    assert table['N'] == 'shop_2' and table['0'] == str(vassals).split('/')[1] and table['9'] == ''


def test_magic_table_of_a_file_is_its_real_path(tmp_path):
    (tmp_path / 'real').mkdir()
    (tmp_path / 'real' / 'web.ini').write_text('')
    (tmp_path / 'alias').symlink_to(tmp_path / 'real')
    table = _uwsgi_config.magic_table(str(tmp_path / 'alias' / 'web.ini'))
    assert (table['n'], table['d'], table['c']) == ('web', str((tmp_path / 'real').resolve()), 'real')


def test_magic_sub_replaces_what_the_table_defines_and_keeps_placeholders():
    table = {'n': 'shop_2', 'd': '/etc/vassals', '%': '%', '(': '%('}
    assert _uwsgi_config.magic_sub('socket = /run/shop/%n.sock', table) == 'socket = /run/shop/shop_2.sock'
    assert _uwsgi_config.magic_sub('chdir = %d\nx = 100%%\ny = %(base)/a\nz = %k\nend %', table) == \
        'chdir = /etc/vassals\nx = 100%\ny = %(base)/a\nz = %k\nend %'

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor
from ansible_collections.graceful.wsgi.plugins.module_utils import _fastrouter


def test_vassal_configs_keeps_the_suffix_only_and_sorts():
    names = ['b.ini', 'a.ini', 'a.ini.bak', '.hidden.ini', 'router.yml', '.ini', 'notes']
    assert _emperor.vassal_configs(names, '.ini') == ['a.ini', 'b.ini']


def test_select_vassals_accepts_names_with_or_without_suffix():
    configs = ['web-1.ini', 'web-2.ini', 'web-3.ini']
    assert _emperor.select_vassals(configs, None, '.ini', '/e') == configs
    assert _emperor.select_vassals(configs, ['web-2', 'web-1.ini', 'web-2.ini'], '.ini', '/e') == ['web-2.ini', 'web-1.ini']


def test_select_vassals_names_the_option_and_directory_for_unknown_vassals():
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.select_vassals(['web-1.ini'], ['web-9', 'web-1'], '.ini', '/etc/vassals')
    assert str(caught.value) == 'vassals: web-9 not found in emperor_dir=/etc/vassals (its vassals: web-1.ini)'


def test_shared_files_finds_configs_that_are_one_file():
    assert _emperor.shared_files({'a.ini': '/x.ini', 'b.ini': '/x.ini', 'c.ini': '/c.ini'}) == [['a.ini', 'b.ini']]
    assert _emperor.shared_files({'a.ini': '/a.ini'}) == []


@pytest.mark.parametrize('monitor, cwd, expected', [
    ('/etc/vassals', '/', '/etc/vassals'),
    ('dir:///etc/vassals', '/', '/etc/vassals'),
    ('glob:///etc/vassals/*.ini', '/', '/etc/vassals'),
    ('/etc/vassals/*.ini', '/', '/etc/vassals'),
    ('vassals', '/etc', '/etc/vassals'),
    ('zmq://127.0.0.1:5250', '/', None),
])
def test_watched_directory(monitor, cwd, expected):
    assert _emperor.watched_directory(monitor, cwd, realpath=lambda p: p.rstrip('/') or '/') == expected


def test_check_emperor_document_accepts_the_emperor_of_the_directory():
    document = {'emperor': ['/etc/vassals'], 'vassals': [], 'cwd': '/'}
    _emperor.check_emperor_document(document, 'emperor_stats=/run/e.sock', '/etc/vassals', lambda p: p)


def test_check_emperor_document_refuses_another_emperor_and_non_emperors():
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.check_emperor_document({'emperor': ['/srv/other'], 'vassals': []}, 'emperor_stats=/run/e.sock',
                                        '/etc/vassals', lambda p: p)
    assert str(caught.value) == ('emperor_stats=/run/e.sock is the stats server of an Emperor watching /srv/other, '
                                 'not emperor_dir=/etc/vassals')
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.check_emperor_document({'pid': 1, 'workers': []}, 'emperor_stats=/run/app.sock', '/e', lambda p: p)
    assert 'not the stats server of a uWSGI Emperor' in str(caught.value)


def test_check_fastrouter_document():
    _emperor.check_fastrouter_document({'subscriptions': []}, 'fastrouter_stats=x')
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.check_fastrouter_document({'vassals': []}, 'fastrouter_stats=/run/e.sock')
    assert str(caught.value).startswith('fastrouter_stats=/run/e.sock: JSON without "subscriptions"')


def test_fastrouter_nodes_prefers_a_live_node_and_find_node_falls_back_to_the_socket_name():
    document = {'subscriptions': [
        {'key': 'shop', 'nodes': [{'name': '/run/app/web-1.sock', 'death_mark': 1}]},
        {'key': 'shop2', 'nodes': [{'name': '/run/app/web-1.sock', 'death_mark': 0}, {'name': '10.0.0.5:3031'}]},
    ]}
    nodes = _fastrouter.fastrouter_nodes(document)
    assert nodes['/run/app/web-1.sock']['death_mark'] == 0
    assert _emperor.find_node(nodes, ['10.0.0.5:3031'], 'web-2')['name'] == '10.0.0.5:3031'
    assert _emperor.find_node(nodes, [], 'web-1')['name'] == '/run/app/web-1.sock'
    # An ini that names its address is matched by that address only.
    assert _emperor.find_node(nodes, ['/run/app/other.sock'], 'web-1') is None


def test_observe_counts_a_vassal_active_only_when_running_accepting_and_subscribed():
    emperor = {'vassals': [
        {'id': 'a.ini', 'pid': 10, 'accepting': 1}, {'id': 'b.ini', 'pid': 11, 'accepting': 0},
        {'id': 'c.ini', 'pid': 12, 'accepting': 1}, {'id': 'd.ini', 'pid': 13, 'accepting': 1}],
        'blacklist': [{'id': 'e.ini', 'attempt': 3, 'throttle_level': 3001}]}
    router = {'subscriptions': [{'key': 'k', 'nodes': [
        {'name': '/s/a.sock', 'death_mark': 0}, {'name': '/s/b.sock', 'death_mark': 0},
        {'name': '/s/c.sock', 'death_mark': 1}]}]}
    vassals = dict((c, ['/s/%s.sock' % c[0]]) for c in ('a.ini', 'b.ini', 'c.ini', 'd.ini', 'e.ini'))
    seen = _emperor.observe(emperor, router, vassals, '.ini')
    assert [c for c in sorted(seen) if seen[c]['active']] == ['a.ini']
    assert _emperor.why_not_active('b.ini', seen['b.ini'], vassals['b.ini']) == \
        'b.ini: running (pid 11) but not accepting requests yet'
    assert _emperor.why_not_active('c.ini', seen['c.ini'], vassals['c.ini']) == \
        'c.ini: accepting but its FastRouter node /s/c.sock is marked dead (unsubscribed)'
    assert _emperor.why_not_active('d.ini', seen['d.ini'], vassals['d.ini']) == \
        'd.ini: accepting but not subscribed to the FastRouter (no node /s/d.sock)'
    assert _emperor.why_not_active('e.ini', seen['e.ini'], vassals['e.ini']).startswith(
        'e.ini: not running: the Emperor blacklisted it after 3 failed start(s)')


@pytest.mark.parametrize('current, last_mod, now, expected', [
    (900, 900, 1000, 1000),      # the usual case: now
    (1000, 1000, 1000, 1001),    # written this very second: one past it, or the Emperor sees no change
    (1005, 1000, 1000, 1006),    # an mtime in the future (clock skew): still past it
    (1000, None, 1000, 1001),    # not running: past the file's own mtime
])
def test_next_mtime_always_moves_past_what_the_emperor_saw(current, last_mod, now, expected):
    assert _emperor.next_mtime(current, last_mod, now) == expected


def test_touch_config_moves_the_mtime_of_a_config_or_of_what_its_symlink_points_to(tmp_path):
    config = tmp_path / 'shop.ini'
    config.write_text('[uwsgi]\n')
    os.utime(str(config), (5, 900))
    assert _emperor.touch_config(str(config), 950, 1000) == 1000
    assert config.stat().st_mtime == 1000 and config.stat().st_atime == 5
    # The Emperor stat()s a config through its symlink: the file it points to is the one touched.
    app = tmp_path / 'app'
    app.mkdir()
    target = app / 'uwsgi.ini'
    target.write_text('[uwsgi]\n')
    os.utime(str(target), (5, 900))
    link = tmp_path / 'linked.ini'
    link.symlink_to(target)
    assert _emperor.touch_config(str(link), 1000, 1000) == 1001
    assert target.stat().st_mtime == 1001


@pytest.mark.timeout(5)
@pytest.mark.parametrize('linked', [False, True])
def test_touch_config_of_a_fifo_fails_at_once(tmp_path, linked):
    fifo = tmp_path / 'app' / 'uwsgi.ini'
    fifo.parent.mkdir()
    os.mkfifo(str(fifo), 0o600)
    config = tmp_path / 'shop.ini'
    if linked:
        config.symlink_to(fifo)
    else:
        config = fifo
    started = time.monotonic()
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.touch_config(str(config), 1000, 1000)
    via = ' (through its symlink to %s)' % fifo if linked else ''
    assert str(caught.value) == 'vassal config %s: not a regular file%s (a FIFO); nothing touched' % (config, via)
    assert time.monotonic() - started < 1.0


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a symlink to another user needs root')
def test_touch_config_never_follows_a_symlink_of_the_apps_user(tmp_path):
    """The config links to the app's uwsgi.ini, which the app's user replaced by a symlink to a file of root's:
    that file's mtime does not move."""
    secret = tmp_path / 'shadow'
    secret.write_text('')
    os.utime(str(secret), (1, 1))
    app_ini = tmp_path / 'app' / 'uwsgi.ini'
    app_ini.parent.mkdir()
    app_ini.symlink_to(secret)
    os.lchown(str(app_ini), 4321, 4321)
    config = tmp_path / 'shop.ini'
    config.symlink_to(app_ini)
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.touch_config(str(config), 1000, 1000)
    assert str(caught.value) == ('vassal config %s: leads through the symbolic link %s of uid 4321, neither root nor '
                                 'this user: not followed; nothing touched' % (config, app_ini))
    assert secret.stat().st_mtime == 1


def test_touch_config_never_follows_a_symlink_swapped_in_after_it_was_resolved(tmp_path, monkeypatch):
    secret = tmp_path / 'shadow'
    secret.write_text('')
    os.utime(str(secret), (1, 1))
    target = tmp_path / 'app' / 'uwsgi.ini'
    target.parent.mkdir()
    target.write_text('[uwsgi]\n')
    config = tmp_path / 'shop.ini'
    config.symlink_to(target)
    resolve = _emperor._config_target

    def resolve_then_swap(path):
        resolved = resolve(path)
        target.unlink()
        target.symlink_to(secret)
        return resolved

    monkeypatch.setattr(_emperor, '_config_target', resolve_then_swap)
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.touch_config(str(config), 1000, 1000)
    assert str(caught.value) == ('vassal config %s: not a regular file (through its symlink to %s) (a symbolic link, '
                                 'not followed); nothing touched' % (config, target))
    assert secret.stat().st_mtime == 1


def test_touch_config_that_no_longer_leads_to_the_file_opened_touches_nothing(tmp_path, monkeypatch):
    first = tmp_path / 'v1.ini'
    first.write_text('[uwsgi]\n')
    os.utime(str(first), (1, 1))
    second = tmp_path / 'v2.ini'
    second.write_text('[uwsgi]\n')
    config = tmp_path / 'shop.ini'
    config.symlink_to(first)
    resolve = _emperor._config_target

    def resolve_then_repoint(path):
        resolved = resolve(path)
        config.unlink()
        config.symlink_to(second)
        return resolved

    monkeypatch.setattr(_emperor, '_config_target', resolve_then_repoint)
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.touch_config(str(config), 1000, 1000)
    assert str(caught.value) == ('vassal config %s: changed while it was being touched (it no longer leads to %s); '
                                 'nothing touched' % (config, first))
    assert first.stat().st_mtime == 1


def test_touch_config_follows_a_chain_of_relative_symlinks_and_names_a_dangling_one(tmp_path):
    real = tmp_path / 'available' / 'shop.ini'
    real.parent.mkdir()
    real.write_text('[uwsgi]\n')
    os.utime(str(real), (1, 1))
    enabled = tmp_path / 'enabled'
    enabled.mkdir()
    (enabled / 'shop.ini').symlink_to('../available/shop.ini')
    config = tmp_path / 'vassals' / 'shop.ini'
    config.parent.mkdir()
    config.symlink_to('../enabled/shop.ini')
    assert _emperor.touch_config(str(config), 900, 1000) == 1000 and real.stat().st_mtime == 1000
    real.unlink()
    with pytest.raises(_emperor.EmperorError, match='^vassal config %s: cannot be touched \\(its symlink leads to '
                       '.*available/shop.ini\\): No such file or directory$' % config):
        _emperor.touch_config(str(config), 1000, 1000)


def fake_process(proc_root, pid, cmdline, cwd, environ=b''):
    base = proc_root / str(pid)
    base.mkdir(parents=True)
    (base / 'stat').write_text('%d (%s) S 1 ' % (pid, os.path.basename(cmdline[0])[:15]) + ' '.join(['0'] * 40) + '\n')
    (base / 'cmdline').write_bytes(b'\0'.join(arg.encode() for arg in cmdline) + b'\0')
    (base / 'environ').write_bytes(environ)
    os.symlink(str(cwd), str(base / 'cwd'))


@pytest.mark.parametrize('cmdline, ini, expected', [
    (['/usr/bin/uwsgi', '--emperor', 'vassals', '--emperor-nofollow'], None,
     (True, 'pid 321 runs with emperor-nofollow')),
    (['/usr/bin/uwsgi', '--ini', 'emperor.ini'], '[uwsgi]\nemperor = vassals\nemperor-nofollow = true\n',
     (True, 'pid 321 runs with emperor-nofollow')),
    (['/usr/bin/uwsgi', '--emperor', 'vassals'], None, (False, 'pid 321 runs without emperor-nofollow')),
    (['/usr/bin/uwsgi', '--ini', 'gone.ini'], None,
     (None, 'pid 321 reads a config file that cannot be read here (/usr/bin/uwsgi --ini gone.ini)')),
    (['/usr/bin/sleep', '1000'], None, (None, 'its stats name pid 321, which is not a running uWSGI process')),
])
def test_emperor_nofollow_is_read_from_the_emperors_own_command_line_and_config(tmp_path, cmdline, ini, expected):
    proc_root = tmp_path / 'proc'
    etc = tmp_path / 'etc'
    etc.mkdir()
    if ini is not None:
        (etc / 'emperor.ini').write_text(ini)
    fake_process(proc_root, 321, cmdline, etc)
    assert _emperor.emperor_nofollow({'pid': 321}, str(proc_root)) == expected


def test_emperor_nofollow_from_the_environment_and_without_a_pid(tmp_path):
    proc_root = tmp_path / 'proc'
    fake_process(proc_root, 321, ['uwsgi', '--emperor', 'vassals'], tmp_path, environ=b'UWSGI_EMPEROR_NOFOLLOW=1\0')
    assert _emperor.emperor_nofollow({'pid': 321}, str(proc_root))[0] is True
    assert _emperor.emperor_nofollow({'vassals': []}, str(proc_root)) == (None, 'its stats name no pid')
    assert _emperor.emperor_nofollow({'pid': True}, str(proc_root)) == (None, 'its stats name no pid')


def test_touch_link_moves_the_links_own_mtime_and_never_its_files(tmp_path):
    target = tmp_path / 'shop.ini'
    target.write_text('')
    os.utime(str(target), (100, 100))
    link = tmp_path / 'shop_1.ini'
    link.symlink_to(target)
    os.utime(str(link), (100, 100), follow_symlinks=False)
    mtime = _emperor.touch_link(str(link), 100, 1800000000.5)
    assert mtime == 1800000000 and link.lstat().st_mtime == 1800000000
    assert target.stat().st_mtime == 100


def test_touch_link_of_a_config_that_is_no_longer_a_link_touches_nothing(tmp_path):
    config = tmp_path / 'shop_1.ini'
    config.write_text('')
    os.utime(str(config), (100, 100))
    with pytest.raises(_emperor.EmperorError) as caught:
        _emperor.touch_link(str(config), 100, 1800000000.0)
    assert str(caught.value) == ('vassal config %s: changed while it was being touched (no longer a symbolic link); '
                                 'nothing touched' % config)
    assert config.stat().st_mtime == 100


def test_the_fleet_expands_magic_variables_by_the_links_name(tmp_path):
    shared = tmp_path / 'shop.ini'
    shared.write_text('[uwsgi]\nsocket = /run/shop/%n.sock\nsubscribe-to = /run/shop-fastrouter/sub.sock:shop\n')
    vassals = tmp_path / 'vassals'
    vassals.mkdir()
    for name in ('shop_1.ini', 'shop_2.ini'):
        (vassals / name).symlink_to(shared)
    fleet = _emperor.Fleet(dict(emperor_dir=str(vassals), vassal_suffix='.ini', emperor_stats='/run/e.sock',
                                fastrouter_stats='/run/f.sock'))
    fleet.load_configs()
    assert fleet.addresses == {'shop_1.ini': ['/run/shop/shop_1.sock'], 'shop_2.ini': ['/run/shop/shop_2.sock']}
    assert fleet.servers['shop_1.ini'] == ['/run/shop-fastrouter/sub.sock']

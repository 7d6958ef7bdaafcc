# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor


def entry(pid=100, accepting=1, last_mod=1000, last_accepting=1000):
    return {'pid': pid, 'accepting': accepting, 'last_mod': last_mod, 'last_accepting': last_accepting}


def state(active=True, **kwargs):
    live = {'name': '/run/a.sock', 'death_mark': 0}
    return {'entry': entry(**kwargs) if active else None, 'blacklisted': None, 'node': live if active else None,
            'active': active}


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


@pytest.mark.parametrize('text, expected', [
    ('[uwsgi]\nsocket = /run/app/web-1.sock\nsocket = /run/app/other.sock\n', ['/run/app/web-1.sock']),
    ('[uwsgi]\nuwsgi_socket = 127.0.0.1:3031\n', ['127.0.0.1:3031']),
    ('[uwsgi]\nsubscribe2 = server=127.0.0.1:2626,key=shop,addr=10.0.0.5:3031\nsocket = :3031\n',
     ['10.0.0.5:3031', ':3031']),
    ('[uwsgi]\nmodule = app\n', []),
    ('[other]\nsocket = /x\n', []),
    ('not an ini [[[', []),
    (None, []),
])
def test_subscription_addresses(text, expected):
    assert _emperor.subscription_addresses(text) == expected


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
    nodes = _emperor.fastrouter_nodes(document)
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


def test_came_back_needs_the_new_mtime_accepting_after_going_down_and_a_live_subscription():
    vassal = _emperor.VassalReload('a.ini', True)
    vassal.touched_at, vassal.touched_mtime = 1000.5, 1001
    assert not _emperor.went_down(vassal, state(last_mod=1000, accepting=0))      # not the reload: before it
    assert _emperor.went_down(vassal, state(last_mod=1001, accepting=0))
    assert not _emperor.came_back(vassal, state(last_mod=1000))          # the Emperor did not see the touch yet
    assert not _emperor.came_back(vassal, state(last_mod=1001))          # never seen down, accepting from before
    vassal.seen_down = True
    assert _emperor.came_back(vassal, state(last_mod=1001))
    gone = state(last_mod=1001)
    gone['node'] = None
    assert not _emperor.came_back(vassal, gone)
    fresh = _emperor.VassalReload('a.ini', True)
    fresh.touched_at, fresh.touched_mtime = 1000.5, 1001
    assert _emperor.came_back(fresh, state(last_mod=1001, last_accepting=1001))   # accepted a second after


def observation(active):
    return dict((config, state(is_active)) for config, is_active in active.items())


def test_plan_takes_down_as_many_as_the_floor_allows_idle_ones_first():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True, 'd.ini': False})
    plan = _emperor.Plan(sorted(first), first, min_active=1, timeout=60)
    assert plan.to_start(first) == ['d.ini', 'a.ini', 'b.ini']
    plan = _emperor.Plan(sorted(first), first, min_active=2, timeout=60)
    assert plan.to_start(first) == ['d.ini', 'a.ini']


def test_plan_does_not_count_vassals_in_flight_as_standing():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True})
    plan = _emperor.Plan(sorted(first), first, min_active=2, timeout=60)
    assert plan.to_start(first) == ['a.ini']
    plan.started('a.ini', 1000.0, 0.0, first)
    # a still serves while it drains, but it is about to go down.
    assert plan.to_start(first) == []


def test_plan_stops_touching_after_a_timeout_and_waits_for_the_ones_in_flight():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True, 'd.ini': True})
    plan = _emperor.Plan(sorted(first), first, min_active=2, timeout=10)
    for config in plan.to_start(first):
        plan.started(config, 1000.0, 0.0, first)
        plan.touched(config, 1000.0, 0.5, 1001, True)
    down = observation({'a.ini': False, 'b.ini': False, 'c.ini': True, 'd.ini': True})
    plan.update(down, 5.0)
    assert plan.lowest_active == 2 and not plan.done()
    plan.update(down, 10.0)
    assert [plan.vassals[c].state for c in sorted(first)] == ['timeout', 'timeout', 'not_started', 'not_started']
    assert plan.done() and plan.to_start(first) == []


def test_drained_when_the_node_is_gone_or_dead_without_sessions():
    assert _emperor.drained({'node': None})
    assert _emperor.drained({'node': {'death_mark': 1, 'ref': 0}})
    assert not _emperor.drained({'node': {'death_mark': 1, 'ref': 2}})
    assert not _emperor.drained({'node': {'death_mark': 0, 'ref': 0}})


def test_plan_touches_a_draining_vassal_once_drained_or_when_it_cannot_be_drained():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True})
    plan = _emperor.Plan(['a.ini', 'b.ini'], first, min_active=1, timeout=60)
    for config in plan.to_start(first):
        plan.started(config, 1000.0, 0.0, first)
    assert plan.to_touch(first, lambda config: True) == []
    assert plan.to_touch(first, lambda config: config == 'a.ini') == ['b.ini']
    gone = dict(first, **{'a.ini': dict(first['a.ini'], node=None)})
    assert plan.to_touch(gone, lambda config: True) == ['a.ini']


@pytest.mark.parametrize('text, expected', [
    ('[uwsgi]\nsubscribe-to = 127.0.0.1:2626:shop\nst = /run/sub.sock:shop\nsubscribe-to = 127.0.0.1:2626:shop\n',
     ['127.0.0.1:2626', '/run/sub.sock']),
    ('[uwsgi]\nsubscribe2 = server=10.0.0.1:2626,key=shop,addr=10.0.0.5:3031\n', ['10.0.0.1:2626']),
    ('[uwsgi]\nsubscribe-to = @/etc/subscriptions.txt\n', []),
    ('[uwsgi]\nsocket = :3031\n', []),
])
def test_subscription_servers(text, expected):
    assert _emperor.subscription_servers(text) == expected


def test_subscription_packet_is_what_a_vassal_sends():
    packet = _emperor.subscription_packet('shop', '127.0.0.1:3031', _emperor.UNSUBSCRIBE)
    body = (b'\x03\x00key\x04\x00shop' b'\x07\x00address\x0e\x00127.0.0.1:3031'
            b'\x09\x00modifier1\x01\x000' b'\x09\x00modifier2\x01\x000')
    assert packet == bytes([224, len(body), 0, 1]) + body


def test_plan_is_stuck_when_a_serving_vassal_went_down_on_its_own():
    first = observation({'a.ini': True, 'b.ini': True})
    plan = _emperor.Plan(['a.ini'], first, min_active=1, timeout=10)
    assert not plan.stuck(first)
    assert plan.stuck(observation({'a.ini': True, 'b.ini': False}))


def test_plan_gives_up_a_timeout_after_the_floor_is_lost_even_while_the_stats_cannot_be_read():
    first = observation({'a.ini': True, 'b.ini': True})
    plan = _emperor.Plan(['a.ini'], first, min_active=1, timeout=10)
    plan.update(observation({'a.ini': True, 'b.ini': False}), 1.0)     # b went down: a may not
    assert plan.stuck_since == 1.0
    plan.update(None, 3.0)                                              # then the stats cannot be read
    plan.update(None, 10.9)
    assert not plan.done() and plan.stuck_since == 1.0
    plan.update(None, 11.0)
    assert plan.done() and plan.gave_up
    assert plan.vassals['a.ini'].state == _emperor.NOT_STARTED


def test_plan_with_nothing_in_flight_gives_up_a_timeout_after_the_stats_became_unreadable():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True})
    plan = _emperor.Plan(['a.ini', 'b.ini'], first, min_active=2, timeout=10)
    plan.started('a.ini', 1000.0, 0.0, first)
    plan.vassals['a.ini'].state = _emperor.RELOADED       # back, and b may start at the next readable look
    plan.update(None, 2.0)
    assert plan.stuck_since == 2.0 and not plan.done()
    plan.update(first, 5.0)                               # readable again: b may start, the clock stops
    assert plan.stuck_since is None and plan.to_start(first) == ['b.ini']
    plan.update(None, 6.0)
    plan.update(None, 16.0)
    assert plan.done() and plan.gave_up and plan.vassals['b.ini'].state == _emperor.NOT_STARTED


def test_plan_leaves_a_vassal_in_flight_to_its_own_timeout_while_the_stats_cannot_be_read():
    first = observation({'a.ini': True, 'b.ini': True})
    plan = _emperor.Plan(['a.ini'], first, min_active=1, timeout=10)
    plan.started('a.ini', 1000.0, 0.0, first)
    plan.update(None, 9.0)
    assert plan.stuck_since is None and not plan.done()
    plan.update(None, 10.0)
    assert plan.done() and not plan.gave_up and plan.vassals['a.ini'].state == _emperor.TIMEOUT


def test_refusal_only_when_a_serving_vassal_would_go_below_the_floor():
    first = observation({'a.ini': True, 'b.ini': False, 'c.ini': False})
    message = _emperor.refusal(first, ['a.ini', 'b.ini', 'c.ini'], 1, '/etc/vassals')
    assert message == ('refusing to reload: 1 vassal(s) of emperor_dir=/etc/vassals serve (a.ini) and min_active=1 '
                       'needs 2 serving before one of them may go down. Reload only the vassals that do not serve '
                       '(vassals: b.ini, c.ini) to bring them back first.')
    assert _emperor.refusal(first, ['b.ini', 'c.ini'], 1, '/etc/vassals') is None
    assert _emperor.refusal(observation({'a.ini': True, 'b.ini': True}), ['a.ini', 'b.ini'], 1, '/e') is None
    assert 'min_active=2 needs 3' in _emperor.refusal(observation({'a.ini': True, 'b.ini': True}), ['a.ini'], 2, '/e')


def test_lock_name_is_one_file_per_directory():
    assert _emperor.lock_name('/etc/uwsgi/vassals') == 'graceful-wsgi-vassals-etc-uwsgi-vassals.lock'


def test_a_vassal_the_emperor_did_not_run_is_back_once_spawned_after_the_start_and_serving():
    vassal = _emperor.VassalReload('a.ini', False)
    vassal.started_at = 1000.4
    serving = state()
    assert not _emperor.spawned_since_start(vassal, dict(serving, entry=dict(serving['entry'], last_run=999)))
    assert _emperor.spawned_since_start(vassal, dict(serving, entry=dict(serving['entry'], last_run=1000)))
    assert not _emperor.spawned_since_start(vassal, state(active=False))


def test_settling_is_running_but_not_accepting():
    assert _emperor.settling(state(accepting=0))
    assert not _emperor.settling(state())
    assert not _emperor.settling(state(active=False))
    first = observation({'a.ini': True, 'b.ini': True})
    first['b.ini'] = dict(state(accepting=0), active=False)
    plan = _emperor.Plan(['a.ini', 'b.ini'], first, min_active=1, timeout=60)
    assert plan.to_start(first) == []        # a would leave nothing serving; b is still starting

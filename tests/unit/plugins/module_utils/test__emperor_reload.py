# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import stat

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor_reload
from ansible_collections.graceful.wsgi.plugins.module_utils import _lock


def entry(pid=100, accepting=1, last_mod=1000, last_accepting=1000):
    return {'pid': pid, 'accepting': accepting, 'last_mod': last_mod, 'last_accepting': last_accepting}


def state(active=True, **kwargs):
    live = {'name': '/run/a.sock', 'death_mark': 0}
    return {'entry': entry(**kwargs) if active else None, 'blacklisted': None, 'node': live if active else None,
            'active': active}


def test_came_back_needs_the_new_mtime_accepting_after_going_down_and_a_live_subscription():
    vassal = _emperor_reload.VassalReload('a.ini', True)
    vassal.touched_at, vassal.touched_mtime = 1000.5, 1001
    assert not _emperor_reload.went_down(vassal, state(last_mod=1000, accepting=0))      # not the reload: before it
    assert _emperor_reload.went_down(vassal, state(last_mod=1001, accepting=0))
    assert not _emperor_reload.came_back(vassal, state(last_mod=1000))          # the Emperor did not see the touch yet
    assert not _emperor_reload.came_back(vassal, state(last_mod=1001))          # never seen down, accepting from before
    vassal.seen_down = True
    assert _emperor_reload.came_back(vassal, state(last_mod=1001))
    gone = state(last_mod=1001)
    gone['node'] = None
    assert not _emperor_reload.came_back(vassal, gone)
    fresh = _emperor_reload.VassalReload('a.ini', True)
    fresh.touched_at, fresh.touched_mtime = 1000.5, 1001
    assert _emperor_reload.came_back(fresh, state(last_mod=1001, last_accepting=1001))   # accepted a second after


def observation(active):
    return dict((config, state(is_active)) for config, is_active in active.items())


def test_plan_takes_down_as_many_as_the_floor_allows_idle_ones_first():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True, 'd.ini': False})
    plan = _emperor_reload.Plan(sorted(first), first, min_active=1, timeout=60)
    assert plan.to_start(first) == ['d.ini', 'a.ini', 'b.ini']
    plan = _emperor_reload.Plan(sorted(first), first, min_active=2, timeout=60)
    assert plan.to_start(first) == ['d.ini', 'a.ini']


def test_plan_does_not_count_vassals_in_flight_as_standing():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True})
    plan = _emperor_reload.Plan(sorted(first), first, min_active=2, timeout=60)
    assert plan.to_start(first) == ['a.ini']
    plan.started('a.ini', 1000.0, 0.0, first)
    # a still serves while it drains, but it is about to go down.
    assert plan.to_start(first) == []


def test_plan_stops_touching_after_a_timeout_and_waits_for_the_ones_in_flight():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True, 'd.ini': True})
    plan = _emperor_reload.Plan(sorted(first), first, min_active=2, timeout=10)
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
    assert _emperor_reload.drained({'node': None})
    assert _emperor_reload.drained({'node': {'death_mark': 1, 'ref': 0}})
    assert not _emperor_reload.drained({'node': {'death_mark': 1, 'ref': 2}})
    assert not _emperor_reload.drained({'node': {'death_mark': 0, 'ref': 0}})


def test_plan_touches_a_draining_vassal_once_drained_or_when_it_cannot_be_drained():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True})
    plan = _emperor_reload.Plan(['a.ini', 'b.ini'], first, min_active=1, timeout=60)
    for config in plan.to_start(first):
        plan.started(config, 1000.0, 0.0, first)
    assert plan.to_touch(first, lambda config: True) == []
    assert plan.to_touch(first, lambda config: config == 'a.ini') == ['b.ini']
    gone = dict(first, **{'a.ini': dict(first['a.ini'], node=None)})
    assert plan.to_touch(gone, lambda config: True) == ['a.ini']


def test_plan_is_stuck_when_a_serving_vassal_went_down_on_its_own():
    first = observation({'a.ini': True, 'b.ini': True})
    plan = _emperor_reload.Plan(['a.ini'], first, min_active=1, timeout=10)
    assert not plan.stuck(first)
    assert plan.stuck(observation({'a.ini': True, 'b.ini': False}))


def test_plan_gives_up_a_timeout_after_the_floor_is_lost_even_while_the_stats_cannot_be_read():
    first = observation({'a.ini': True, 'b.ini': True})
    plan = _emperor_reload.Plan(['a.ini'], first, min_active=1, timeout=10)
    plan.update(observation({'a.ini': True, 'b.ini': False}), 1.0)     # b went down: a may not
    assert plan.stuck_since == 1.0
    plan.update(None, 3.0)                                              # then the stats cannot be read
    plan.update(None, 10.9)
    assert not plan.done() and plan.stuck_since == 1.0
    plan.update(None, 11.0)
    assert plan.done() and plan.gave_up
    assert plan.vassals['a.ini'].state == _emperor_reload.NOT_STARTED


def test_plan_with_nothing_in_flight_gives_up_a_timeout_after_the_stats_became_unreadable():
    first = observation({'a.ini': True, 'b.ini': True, 'c.ini': True})
    plan = _emperor_reload.Plan(['a.ini', 'b.ini'], first, min_active=2, timeout=10)
    plan.started('a.ini', 1000.0, 0.0, first)
    plan.vassals['a.ini'].state = _emperor_reload.RELOADED       # back, and b may start at the next readable look
    plan.update(None, 2.0)
    assert plan.stuck_since == 2.0 and not plan.done()
    plan.update(first, 5.0)                               # readable again: b may start, the clock stops
    assert plan.stuck_since is None and plan.to_start(first) == ['b.ini']
    plan.update(None, 6.0)
    plan.update(None, 16.0)
    assert plan.done() and plan.gave_up and plan.vassals['b.ini'].state == _emperor_reload.NOT_STARTED


def test_plan_leaves_a_vassal_in_flight_to_its_own_timeout_while_the_stats_cannot_be_read():
    first = observation({'a.ini': True, 'b.ini': True})
    plan = _emperor_reload.Plan(['a.ini'], first, min_active=1, timeout=10)
    plan.started('a.ini', 1000.0, 0.0, first)
    plan.update(None, 9.0)
    assert plan.stuck_since is None and not plan.done()
    plan.update(None, 10.0)
    assert plan.done() and not plan.gave_up and plan.vassals['a.ini'].state == _emperor_reload.TIMEOUT


def test_refusal_only_when_a_serving_vassal_would_go_below_the_floor():
    first = observation({'a.ini': True, 'b.ini': False, 'c.ini': False})
    message = _emperor_reload.refusal(first, ['a.ini', 'b.ini', 'c.ini'], 1, '/etc/vassals')
    assert message == ('refusing to reload: 1 vassal(s) of emperor_dir=/etc/vassals serve (a.ini) and min_active=1 '
                       'needs 2 serving before one of them may go down. Reload only the vassals that do not serve '
                       '(vassals: b.ini, c.ini) to bring them back first.')
    assert _emperor_reload.refusal(first, ['b.ini', 'c.ini'], 1, '/etc/vassals') is None
    assert _emperor_reload.refusal(observation({'a.ini': True, 'b.ini': True}), ['a.ini', 'b.ini'], 1, '/e') is None
    assert 'min_active=2 needs 3' in _emperor_reload.refusal(observation({'a.ini': True, 'b.ini': True}), ['a.ini'], 2, '/e')


def test_lock_name_is_one_file_per_directory():
    assert _emperor_reload.lock_name('/etc/uwsgi/vassals') == 'graceful-wsgi-vassals-etc-uwsgi-vassals.lock'


def test_a_vassal_the_emperor_did_not_run_is_back_once_spawned_after_the_start_and_serving():
    vassal = _emperor_reload.VassalReload('a.ini', False)
    vassal.started_at = 1000.4
    serving = state()
    assert not _emperor_reload.spawned_since_start(vassal, dict(serving, entry=dict(serving['entry'], last_run=999)))
    assert _emperor_reload.spawned_since_start(vassal, dict(serving, entry=dict(serving['entry'], last_run=1000)))
    assert not _emperor_reload.spawned_since_start(vassal, state(active=False))


def test_settling_is_running_but_not_accepting():
    assert _emperor_reload.settling(state(accepting=0))
    assert not _emperor_reload.settling(state())
    assert not _emperor_reload.settling(state(active=False))
    first = observation({'a.ini': True, 'b.ini': True})
    first['b.ini'] = dict(state(accepting=0), active=False)
    plan = _emperor_reload.Plan(['a.ini', 'b.ini'], first, min_active=1, timeout=60)
    assert plan.to_start(first) == []        # a would leave nothing serving; b is still starting


def test_the_lock_of_root_lives_where_only_root_can_create_it():
    assert _emperor_reload.lock_directories(0) == ('/run/graceful-wsgi',)


def test_the_lock_of_another_user_lives_in_its_runtime_directory_else_its_home():
    nobody = pwd.getpwnam('nobody')
    assert _emperor_reload.lock_directories(nobody.pw_uid) == (
        '/run/user/%d/graceful-wsgi' % nobody.pw_uid, '%s/.graceful-wsgi' % nobody.pw_dir)
    unknown = max(entry.pw_uid for entry in pwd.getpwall()) + 1
    assert _emperor_reload.lock_directories(unknown) == ('/run/user/%d/graceful-wsgi' % unknown,)


def test_lock_directory_takes_the_first_candidate_with_a_parent_and_never_falls_back(tmp_path, monkeypatch):
    wide = tmp_path / 'wide'
    wide.mkdir(mode=0o755)
    candidates = (str(tmp_path / 'missing' / 'graceful-wsgi'), str(wide), str(tmp_path / 'fine'))
    monkeypatch.setattr(_emperor_reload, 'lock_directories', lambda: candidates)
    with pytest.raises(_lock.LockError, match='^lock directory %s: has mode 0755' % wide):
        _emperor_reload.lock_directory()
    assert not (tmp_path / 'fine').exists()
    monkeypatch.setattr(_emperor_reload, 'lock_directories', lambda: candidates[:1] + candidates[2:])
    assert _emperor_reload.lock_directory(create=False) == str(tmp_path / 'fine')
    assert not (tmp_path / 'fine').exists()
    assert _emperor_reload.lock_path('/etc/uwsgi/vassals') == str(
        tmp_path / 'fine' / 'graceful-wsgi-vassals-etc-uwsgi-vassals.lock')
    assert stat.S_IMODE(os.lstat(str(tmp_path / 'fine')).st_mode) == 0o700
    monkeypatch.setattr(_emperor_reload, 'lock_directories', lambda: candidates[:1])
    with pytest.raises(_lock.LockError) as caught:
        _emperor_reload.lock_directory()
    assert str(caught.value) == ('no directory for the lock: none of %s has a parent directory (run the module as '
                                 'root)' % candidates[0])

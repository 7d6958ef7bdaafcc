# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import socket
import stat

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import uwsgi_vassals_reload
from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor
from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor_reload
from ansible_collections.graceful.wsgi.plugins.module_utils import _lock
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

EMPEROR_STATS = '/run/shop-emperor/stats.sock'
ROUTER_STATS = '/run/shop-fastrouter/stats.sock'
EPOCH = 1800000000.0


class Emperor:
    """An Emperor, its vassals and their FastRouter subscriptions, on a clock that moves only in sleep().

    It notices a config's new mtime the way uWSGI does (whole seconds, greater than last_mod): the vassal
    stops accepting and unsubscribes at once, and serves again ``reload_seconds`` later, unless its release
    is broken: then it exits at start and the Emperor blacklists it. Every sleep checks the floor.
    """

    def __init__(self, directory, count=4, reload_seconds=1.0, session_seconds=0.0, announce_every=2.0,
                 announce_at=0.0):
        self.directory = directory
        self.clock = 0.0
        # After an unsubscribe the FastRouter keeps the node (death_mark 1) while sessions last; the vassal
        # announces itself again every ``announce_every`` seconds.
        self.session_seconds = session_seconds
        self.announce_every = announce_every
        self.announce_at = announce_at
        self.unsubscribed = {}
        self.unsubscribe_packets = []
        self.touched_while_routed = []
        self.reload_seconds = dict(('shop-%d.ini' % n, reload_seconds) for n in range(1, count + 1))
        self.broken = set()
        self.vassals = {}
        self.blacklist = {}
        # The Emperor tries a blacklisted vassal again once its throttle has passed, whatever its config's mtime.
        self.throttle = 2.0
        self.retry_at = {}
        self.watching = [str(directory)]
        # With emperor-nofollow the Emperor lstat()s each config: a symlink's own mtime counts, not its file's.
        self.nofollow = False
        # Vassals that go down on their own at a time (and stay down), and a time span (start, end) in which
        # the stats servers answer nothing.
        self.down_at = {}
        self.silent = None
        self.active_seen = []
        self.next_pid = 1000
        for n in range(1, count + 1):
            config = 'shop-%d.ini' % n
            path = directory / config
            path.write_text('[uwsgi]\nsocket = /run/shop/shop-%d.sock\nneed-app = true\n'
                            'subscribe-to = 127.0.0.1:2626:shop\nunsubscribe-on-graceful-reload = true\n' % n)
            os.utime(str(path), (EPOCH - 100, EPOCH - 100))
            self.vassals[config] = self._spawn(config, EPOCH - 100, up_at=0.0)

    def _spawn(self, config, last_mod, up_at):
        self.next_pid += 10
        return {'pid': self.next_pid, 'worker': self.next_pid + 1, 'last_mod': last_mod, 'up_at': up_at,
                'last_accepting': int(EPOCH + up_at), 'last_run': int(EPOCH + self.clock)}

    def time(self):
        return EPOCH + self.clock

    def monotonic(self):
        return self.clock

    def sleep(self, seconds):
        self.clock += seconds
        self._scan()
        self.active_seen.append(sum(1 for c in self.vassals if self.serving(c)))

    def _scan(self):
        for config, at in self.down_at.items():
            if self.clock >= at and config in self.vassals:
                del self.vassals[config]
                self.retry_at[config] = float('inf')
        for config in sorted(self.reload_seconds):
            mtime = int((os.lstat if self.nofollow else os.stat)(str(self.directory / config)).st_mtime)
            vassal = self.vassals.get(config)
            if vassal is not None and mtime > vassal['last_mod']:
                if self.node(config) is not None:
                    self.touched_while_routed.append(config)
                self.unsubscribed.pop(config, None)
                if config in self.broken:
                    del self.vassals[config]
                    self.blacklist[config] = {'id': config, 'attempt': 1, 'throttle_level': 1000}
                    self.retry_at[config] = self.clock + self.throttle
                else:
                    vassal.update(last_mod=mtime, up_at=self.clock + self.reload_seconds[config],
                                  worker=vassal['worker'] + 1)
            elif vassal is None and self.clock >= self.retry_at.get(config, 0):
                if config in self.broken:
                    self.blacklist[config]['attempt'] += 1
                    self.retry_at[config] = self.clock + self.throttle
                    continue
                self.blacklist.pop(config, None)
                self.vassals[config] = self._spawn(config, mtime, up_at=self.clock + self.reload_seconds[config])

    def up(self, config):
        vassal = self.vassals.get(config)
        return vassal is not None and self.clock >= vassal['up_at']

    def node(self, config):
        """The FastRouter node of a vassal, or None."""
        if not self.up(config):
            return None
        since = self.unsubscribed.get(config)
        if since is not None:
            # The vassal's own periodic announce (at announce_at + k * announce_every) brings it back.
            if int((self.clock - self.announce_at) // self.announce_every) > \
                    int((since - self.announce_at) // self.announce_every):
                del self.unsubscribed[config]
            elif self.clock - since >= self.session_seconds:
                return None
            else:
                return {'name': '/run/shop/%s.sock' % config[:-4], 'death_mark': 1, 'ref': 1}
        return {'name': '/run/shop/%s.sock' % config[:-4], 'death_mark': 0, 'ref': 0}

    def serving(self, config):
        node = self.node(config)
        return node is not None and not node['death_mark']

    def unsubscribe(self, config, node):
        assert node['name'] == '/run/shop/%s.sock' % config[:-4] and node['key'] == 'shop'
        self.unsubscribe_packets.append((self.clock, config))
        self.unsubscribed.setdefault(config, self.clock)
        return []

    def document(self, address, timeout=2.0, label=None):
        self._scan()
        if self.silent and self.silent[0] <= self.clock < self.silent[1]:
            self.clock += timeout
            raise _uwsgi.UwsgiError('%s: no complete answer within %.1fs (0 bytes arrived; instance hung or not a '
                                    'uWSGI stats server)' % (label, timeout))
        if address == ('unix', EMPEROR_STATS):
            vassals = []
            for config, vassal in sorted(self.vassals.items()):
                up = self.up(config)
                vassals.append({'id': config, 'pid': vassal['pid'], 'last_mod': vassal['last_mod'],
                                'last_run': vassal['last_run'],
                                'accepting': 1 if up else 0,
                                'last_accepting': int(EPOCH + vassal['up_at']) if up else vassal['last_accepting']})
            return {'emperor': self.watching, 'cwd': '/', 'pid': 999, 'vassals': vassals,
                    'blacklist': list(self.blacklist.values())}
        if address == ('unix', ROUTER_STATS):
            nodes = [node for node in (self.node(config) for config in sorted(self.vassals)) if node is not None]
            return {'fastrouter': ['127.0.0.1:3030'], 'subscriptions': [{'key': 'shop', 'nodes': nodes}]}
        raise _uwsgi.UwsgiError('%s: no such socket (instance not running, or wrong path)' % label)

    def children(self, pid):
        for vassal in self.vassals.values():
            if vassal['pid'] == pid:
                return [vassal['worker']]
        return []


class FakeTime:
    def __init__(self, emperor):
        self.time = emperor.time
        self.monotonic = emperor.monotonic
        self.sleep = emperor.sleep


@pytest.fixture
def make_emperor(tmp_path, monkeypatch):
    """Builds the simulated Emperor (with its keyword arguments) and puts it in place of the host."""

    def make(**kwargs):
        directory = tmp_path / 'vassals'
        directory.mkdir()
        lock_dir = tmp_path / 'lock'
        fake = Emperor(directory, **kwargs)
        monkeypatch.setattr(_emperor_reload, 'time', FakeTime(fake))
        monkeypatch.setattr(_emperor, 'time', FakeTime(fake))
        monkeypatch.setattr(_emperor_reload, 'lock_directories', lambda: (str(lock_dir),))
        monkeypatch.setattr(_uwsgi, 'read_json_document', fake.document)
        monkeypatch.setattr(_emperor._proc, 'child_pids', fake.children)
        monkeypatch.setattr(_emperor.Fleet, 'unsubscribe',
                            lambda self, config, node: fake.unsubscribe(config, node))
        return fake

    return make


@pytest.fixture
def emperor(make_emperor):
    return make_emperor()


def run(emperor, **args):
    args.setdefault('emperor_dir', str(emperor.directory))
    args.setdefault('emperor_stats', EMPEROR_STATS)
    args.setdefault('fastrouter_stats', ROUTER_STATS)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            uwsgi_vassals_reload.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def mtimes(emperor):
    return dict((p.name, p.stat().st_mtime) for p in emperor.directory.iterdir())


def link_mtimes(emperor):
    """The configs' own mtimes: a symlink's, not its file's."""
    return dict((p.name, p.lstat().st_mtime) for p in emperor.directory.iterdir())


def test_min_active_one_reloads_three_at_once_then_the_last(emperor):
    result, failed = run(emperor)
    assert not failed and result['changed']
    assert result['reloaded'] == ['shop-1', 'shop-2', 'shop-3', 'shop-4']
    assert result['parallel_max'] == 3
    assert result['min_active_observed'] == 1 and min(emperor.active_seen) == 1
    assert result['active_before'] == 4 and result['active_after'] == 4
    for vassal in result['vassals']:
        assert vassal['state'] == 'reloaded' and vassal['was_active']
        assert vassal['pid_before'] == vassal['pid_after']          # a graceful reload keeps the master
        assert vassal['workers_after'] == [vassal['workers_before'][0] + 1]
        # The reload takes 1 s once the Emperor noticed the touch, which it does at its next scan.
        assert 1.0 <= vassal['seconds'] <= 1.3
    # The fourth waits for one of the first three: two reload times in all.
    assert 2.0 <= result['elapsed'] <= 2.6


def test_min_active_n_minus_one_reloads_one_by_one(emperor):
    result, failed = run(emperor, min_active=3)
    assert not failed and result['parallel_max'] == 1
    assert result['min_active_observed'] == 3 and min(emperor.active_seen) == 3
    assert 4.0 <= result['elapsed'] <= 5.2


def test_vassals_limits_the_reload_and_every_vassal_counts_for_the_floor(emperor):
    result, failed = run(emperor, vassals=['shop-2', 'shop-4.ini'], min_active=3)
    assert not failed
    assert [v['name'] for v in result['vassals']] == ['shop-2', 'shop-4']
    assert result['parallel_max'] == 1 and min(emperor.active_seen) == 3


def test_a_broken_release_fails_at_the_timeout_naming_the_vassals_and_keeps_the_floor(emperor):
    emperor.broken.update(['shop-1.ini', 'shop-2.ini', 'shop-3.ini', 'shop-4.ini'])
    result, failed = run(emperor, timeout=5)
    assert failed
    assert result['msg'].startswith('3 vassal(s) of emperor_dir=%s did not come back within timeout=5.0s: '
                                    'shop-1, shop-2, shop-3.' % emperor.directory)
    assert 'shop-1.ini: not running: the Emperor blacklisted it after ' in result['msg']
    assert result['msg'].endswith('Not touched, to keep the floor: shop-4.')
    assert result['timed_out'] == ['shop-1', 'shop-2', 'shop-3']
    assert [v['state'] for v in result['vassals']] == ['timeout', 'timeout', 'timeout', 'not_started']
    assert result['min_active_observed'] == 1 and min(emperor.active_seen) == 1
    assert result['stats']['shop-1']['emperor']['id'] == 'shop-1.ini'
    assert result['stats']['shop-1']['fastrouter'] is None
    assert result['vassals'][0]['seconds'] == pytest.approx(5.0, abs=0.15)
    # shop-4 was never touched: the Emperor still runs it with the old code.
    assert emperor.serving('shop-4.ini')


def test_a_run_refuses_to_take_the_last_serving_vassal_down_and_recovers_the_down_ones(emperor):
    emperor.broken.update(['shop-1.ini', 'shop-2.ini', 'shop-3.ini'])
    run(emperor, vassals=['shop-1', 'shop-2', 'shop-3'], timeout=3)
    before = mtimes(emperor)
    result, failed = run(emperor)
    assert failed and result['msg'].startswith('refusing to reload: 1 vassal(s) of emperor_dir=')
    assert 'vassals: shop-1.ini, shop-2.ini, shop-3.ini' in result['msg']
    assert mtimes(emperor) == before
    emperor.broken.clear()
    result, failed = run(emperor, vassals=['shop-1', 'shop-2', 'shop-3'])
    assert not failed and result['reloaded'] == ['shop-1', 'shop-2', 'shop-3'], result.get('msg')
    assert [v['was_active'] for v in result['vassals']] == [False, False, False]
    assert [v['pid_before'] for v in result['vassals']] == [None, None, None]
    assert [v['drain_seconds'] for v in result['vassals']] == [None, None, None]
    assert result['active_after'] == 4
    # The Emperor spawned them on its own: the run touched none (a touch would not hurry the Emperor).
    assert mtimes(emperor) == before


def test_check_mode_touches_nothing_and_names_the_first_wave(emperor):
    before = mtimes(emperor)
    result, failed = run(emperor, _ansible_check_mode=True)
    assert not failed and result['changed']
    assert [v['state'] for v in result['vassals']] == ['would_reload'] * 3 + ['pending']
    assert mtimes(emperor) == before


def test_a_second_run_fails_at_once_while_the_lock_is_held(emperor):
    path = _emperor_reload.lock_path(str(emperor.directory))
    fd = _lock.flock_acquire(path, {'pid': 4242, 'started_at': 1.0})
    before = mtimes(emperor)
    try:
        result, failed = run(emperor)
        check_result, check_failed = run(emperor, _ansible_check_mode=True)
    finally:
        _lock.flock_release(fd)
    assert failed and check_failed
    assert result['msg'] == ('another uwsgi_vassals_reload run holds the lock of emperor_dir=%s (%s): pid 4242, '
                             'started_at 1.0' % (emperor.directory, path))
    assert emperor.clock == 0.0 and mtimes(emperor) == before
    result, failed = run(emperor)
    assert not failed


@pytest.mark.timeout(10)
@pytest.mark.parametrize('check_mode', [False, True])
def test_a_fifo_planted_as_the_lock_fails_at_once_naming_it(emperor, check_mode):
    path = _emperor_reload.lock_path(str(emperor.directory))
    os.mkfifo(path, 0o600)
    before = mtimes(emperor)
    result, failed = run(emperor, _ansible_check_mode=check_mode)
    assert failed and result['msg'] == 'path=%s: is a FIFO, not a lock file' % path
    assert result['lock_path'] == path
    assert emperor.clock == 0.0 and mtimes(emperor) == before


def test_the_lock_lives_in_a_private_directory_made_by_the_run_and_not_by_its_check_mode(emperor, tmp_path):
    lock_dir = tmp_path / 'lock'
    result, failed = run(emperor, _ansible_check_mode=True)
    assert not failed and result['lock_path'] == str(lock_dir / os.path.basename(result['lock_path']))
    assert not lock_dir.exists()
    result, failed = run(emperor)
    assert not failed
    status = os.lstat(str(lock_dir))
    assert stat.S_ISDIR(status.st_mode) and stat.S_IMODE(status.st_mode) == 0o700 and status.st_uid == os.geteuid()
    assert os.path.dirname(result['lock_path']) == str(lock_dir)


@pytest.mark.parametrize('check_mode', [False, True])
def test_a_lock_directory_made_a_symlink_fails_the_run_and_touches_nothing(emperor, tmp_path, check_mode):
    """Had someone made the lock's directory a symlink (to root's /etc, say), no lock file is made there."""
    target = tmp_path / 'etc'
    target.mkdir(mode=0o700)
    (tmp_path / 'lock').symlink_to(target)
    before = mtimes(emperor)
    result, failed = run(emperor, _ansible_check_mode=check_mode)
    assert failed
    assert result['msg'] == ('lock directory %s: is a symbolic link, never followed; not used, and left as it is'
                             % (tmp_path / 'lock'))
    assert list(target.iterdir()) == [] and mtimes(emperor) == before and emperor.clock == 0.0


@pytest.mark.parametrize('args, message', [
    ({'emperor_dir': '/nonexistent/vassals'}, 'emperor_dir=/nonexistent/vassals is not a directory'),
    ({'vassal_suffix': '.yml'}, 'holds no vassal config ending with vassal_suffix=.yml'),
    ({'vassals': ['shop-9']}, 'vassals: shop-9 not found in emperor_dir='),
    ({'min_active': 0}, 'min_active=0: must be at least 1'),
    ({'timeout': 0}, 'timeout=0.0: must be positive'),
    ({'poll_interval': 5, 'timeout': 1}, 'poll_interval=5.0 is longer than timeout=1.0'),
    ({'emperor_stats': '/run/nothing.sock'}, 'emperor_stats=/run/nothing.sock: no such socket'),
    ({'fastrouter_stats': EMPEROR_STATS}, 'fastrouter_stats=%s: JSON without "subscriptions"' % EMPEROR_STATS),
])
def test_bad_input_fails_naming_the_option_and_touches_nothing(emperor, args, message):
    before = mtimes(emperor)
    result, failed = run(emperor, **args)
    assert failed and message in result['msg']
    assert mtimes(emperor) == before


def test_the_stats_of_an_emperor_watching_another_directory_are_refused(emperor):
    emperor.watching = ['/srv/other-vassals']
    result, failed = run(emperor)
    assert failed
    assert result['msg'] == ('emperor_stats=%s is the stats server of an Emperor watching /srv/other-vassals, not '
                             'emperor_dir=%s' % (EMPEROR_STATS, emperor.directory))


def link_every_vassal_to_one_file(emperor):
    """The layout of the Emperor docs' reload script: one ini, and a symlink to it per vassal, whose sockets differ
    by the link's name (%n)."""
    shared = emperor.directory.parent / 'shop.ini'
    shared.write_text('[uwsgi]\nsocket = /run/shop/%n.sock\nneed-app = true\nsubscribe-to = 127.0.0.1:2626:shop\n'
                      'unsubscribe-on-graceful-reload = true\n')
    os.utime(str(shared), (EPOCH - 100, EPOCH - 100))
    for config in sorted(emperor.vassals):
        link = emperor.directory / config
        link.unlink()
        link.symlink_to(shared)
        os.utime(str(link), (EPOCH - 100, EPOCH - 100), follow_symlinks=False)
    return shared


@pytest.mark.parametrize('nofollow, why', [
    (False, 'the Emperor follows symlinks (pid 999 runs without emperor-nofollow): it would reload them together. '
            'Run it with emperor-nofollow'),
    (None, 'whether the Emperor follows them (emperor-nofollow) cannot be told: its stats name pid 999, which is '
           'not a running uWSGI process'),
])
def test_vassals_sharing_one_config_file_are_refused_unless_the_emperor_does_not_follow_symlinks(
        emperor, monkeypatch, nofollow, why):
    shared = link_every_vassal_to_one_file(emperor)
    said = {False: 'pid 999 runs without emperor-nofollow',
            None: 'its stats name pid 999, which is not a running uWSGI process'}[nofollow]
    monkeypatch.setattr(_emperor, 'emperor_nofollow', lambda document: (nofollow, said))
    result, failed = run(emperor)
    assert failed and 'shop-1.ini and shop-2.ini and shop-3.ini and shop-4.ini are one file (symlinks to it), and ' \
        in result['msg']
    assert why in result['msg']
    # Lost: nothing. Left: every link and the file as they were; no vassal was touched.
    assert set(link_mtimes(emperor).values()) == {EPOCH - 100} and shared.stat().st_mtime == EPOCH - 100


def test_symlinked_vassals_of_an_emperor_that_does_not_follow_them_reload_one_by_one_through_their_links(
        emperor, monkeypatch):
    shared = link_every_vassal_to_one_file(emperor)
    emperor.nofollow = True
    monkeypatch.setattr(_emperor, 'emperor_nofollow', lambda document: (True, 'pid 999 runs with emperor-nofollow'))
    result, failed = run(emperor, min_active=3)
    assert not failed, result['msg']
    assert result['reloaded'] == ['shop-1', 'shop-2', 'shop-3', 'shop-4'] and result['parallel_max'] == 1
    assert result['min_active_observed'] == 3 and min(emperor.active_seen) == 3
    # Each link's own mtime moved (touch -h); the file they share was never touched.
    assert all(mtime > EPOCH - 100 for mtime in link_mtimes(emperor).values())
    assert shared.stat().st_mtime == EPOCH - 100
    # Each vassal was drained through its own socket, named after its link (%n).
    assert sorted(config for _at, config in emperor.unsubscribe_packets) == sorted(emperor.vassals)


@pytest.mark.timeout(10)
@pytest.mark.parametrize('planted', ['fifo', 'symlink'])
def test_a_config_target_replaced_by_the_apps_user_is_never_touched_through(emperor, tmp_path, planted):
    """shop-1.ini links to the app's uwsgi.ini, which the app's user replaced: by a FIFO (reading or touching it
    must not block) or by a symlink of theirs to a file of root's (whose mtime must not move)."""
    if planted == 'symlink' and os.geteuid() != 0:
        pytest.skip('giving a symlink to another user needs root')
    secret = tmp_path / 'shadow'
    secret.write_text('')
    os.utime(str(secret), (1, 1))
    app_ini = tmp_path / 'app-uwsgi.ini'
    if planted == 'fifo':
        os.mkfifo(str(app_ini), 0o600)
        why = 'not a regular file (through its symlink to %s) (a FIFO)' % app_ini
    else:
        app_ini.symlink_to(secret)
        os.lchown(str(app_ini), 4321, 4321)
        why = 'leads through the symbolic link %s of uid 4321, neither root nor this user: not followed' % app_ini
    config = emperor.directory / 'shop-1.ini'
    config.unlink()
    config.symlink_to(app_ini)
    result, failed = run(emperor, vassals=['shop-1'])
    assert failed
    assert result['msg'] == ('vassal config %s: %s; nothing touched; the run stopped before reloading it'
                             % (config, why))
    assert secret.stat().st_mtime == 1


def test_a_config_written_this_second_is_still_seen_as_changed(emperor):
    for path in emperor.directory.iterdir():
        os.utime(str(path), (EPOCH, EPOCH))
    for vassal in emperor.vassals.values():
        vassal['last_mod'] = int(EPOCH)
    result, failed = run(emperor, vassals=['shop-1'])
    assert not failed and result['reloaded'] == ['shop-1']
    assert (emperor.directory / 'shop-1.ini').stat().st_mtime == EPOCH + 1


def test_a_serving_vassal_is_drained_before_its_touch(make_emperor):
    fake = make_emperor(session_seconds=1.5, announce_every=10.0)
    result, failed = run(fake, min_active=3)
    assert not failed
    assert fake.touched_while_routed == []
    for vassal in result['vassals']:
        assert 1.5 <= vassal['drain_seconds'] <= 1.7
        assert vassal['seconds'] >= vassal['drain_seconds'] + 1.0
    # One packet per vassal: no announce brought a node back while it drained.
    sent = [config for _at, config in fake.unsubscribe_packets]
    assert sent == ['shop-1.ini', 'shop-2.ini', 'shop-3.ini', 'shop-4.ini']


def test_a_vassal_that_announces_itself_again_while_draining_is_unsubscribed_again(make_emperor):
    fake = make_emperor(session_seconds=0.7, announce_every=1.0, announce_at=0.35)
    result, failed = run(fake, vassals=['shop-1'], timeout=20)
    assert not failed and result['reloaded'] == ['shop-1'], result.get('msg')
    # Sent at 0.0, the announce at 0.35 brought the node back, sent again at 0.4: drained at 1.1.
    assert [round(at, 1) for at, _config in fake.unsubscribe_packets] == [0.0, 0.4]
    assert 1.1 <= result['vassals'][0]['drain_seconds'] <= 1.25
    assert fake.touched_while_routed == []


def test_a_vassal_whose_requests_outlast_the_timeout_is_never_touched(make_emperor):
    fake = make_emperor(session_seconds=30.0, announce_every=100.0)
    before = mtimes(fake)
    result, failed = run(fake, vassals=['shop-1'], timeout=5)
    assert failed and result['timed_out'] == ['shop-1']
    assert result['vassals'][0]['why'] == ('shop-1.ini: never drained, so never touched: the FastRouter still had 1 '
                                           'request(s) in flight to it (its old code still serves once it announces '
                                           'itself again)')
    assert mtimes(fake) == before


def test_a_vassal_still_starting_is_not_touched_until_it_accepts(emperor):
    emperor.vassals['shop-1.ini']['up_at'] = 3.0     # spawned, loading its app until t=3
    before = mtimes(emperor)['shop-1.ini']
    result, failed = run(emperor, vassals=['shop-1'])
    assert not failed and result['reloaded'] == ['shop-1']
    touched = [at for at, config in emperor.unsubscribe_packets if config == 'shop-1.ini']
    assert mtimes(emperor)['shop-1.ini'] > before
    assert touched and touched[0] >= 3.0


@pytest.mark.timeout(10)
def test_stats_that_go_silent_after_the_floor_is_lost_fail_the_run_at_its_timeout(emperor):
    emperor.down_at['shop-4.ini'] = 0.5    # leaves three serving: shop-2 may not go down with min_active=3
    emperor.silent = (2.0, float('inf'))   # then every read times out
    before = mtimes(emperor)['shop-2.ini']
    result, failed = run(emperor, vassals=['shop-1', 'shop-2'], min_active=3, timeout=5)
    assert failed
    assert result['reloaded'] == ['shop-1'] and result['timed_out'] == []
    assert [v['state'] for v in result['vassals']] == ['reloaded', 'not_started']
    assert re.match(
        r'waited 5.0s, with no vassal of emperor_dir=%s in flight, for the stats to be read again to go on with the '
        r'reload. The stats could not be read since 2027-01-15T08:00:02Z \((\d+\.\d)s\): emperor_stats=%s: no '
        r'complete answer within 2.0s \(0 bytes arrived; instance hung or not a uWSGI stats server\). Not touched: '
        r'shop-2. Reloaded: shop-1.$' % (re.escape(str(emperor.directory)), re.escape(EMPEROR_STATS)), result['msg'])
    # Stuck since shop-1 came back (t=1.2): the silence counts against the same timeout, which a wait overshoots
    # by at most one reading of the stats (2 s) and a poll; then the last reading fails too.
    assert 1.2 + 5 <= emperor.clock - 2.0 <= 1.2 + 5 + 2.0 + 0.1 + 1e-6
    assert result['active_after'] is None
    assert mtimes(emperor)['shop-2.ini'] == before


@pytest.mark.timeout(10)
def test_stats_that_come_back_before_the_timeout_let_the_run_finish(emperor):
    emperor.silent = (1.5, 4.0)
    result, failed = run(emperor, min_active=3, timeout=5)
    assert not failed, result['msg']
    assert result['reloaded'] == ['shop-1', 'shop-2', 'shop-3', 'shop-4']


@pytest.mark.timeout(10)
def test_a_vassal_in_flight_while_the_stats_are_silent_times_out_saying_the_stats_could_not_be_read(emperor):
    emperor.silent = (0.05, float('inf'))
    result, failed = run(emperor, vassals=['shop-1'], timeout=5)
    assert failed and result['timed_out'] == ['shop-1']
    assert result['msg'].startswith(
        '1 vassal(s) of emperor_dir=%s did not come back within timeout=5.0s: shop-1. shop-1.ini: never seen drained, '
        'so never touched; the stats could not be read to tell why (its old code still serves once it announces '
        'itself again). The stats could not be read since 2027-01-15T08:00:00Z (' % emperor.directory)


@pytest.mark.timeout(10)
def test_a_touched_vassal_while_the_stats_are_silent_times_out_as_unknown(emperor):
    emperor.silent = (0.15, float('inf'))   # after its touch (t=0.1), before it comes back
    result, failed = run(emperor, vassals=['shop-1'], timeout=5)
    assert failed and result['timed_out'] == ['shop-1']
    assert ('did not come back within timeout=5.0s: shop-1. shop-1: unknown, the stats could not be read. The stats '
            'could not be read since ' in result['msg'])


class FakeModule:
    def __init__(self, **params):
        self.params = dict(emperor_dir='/etc/vassals', vassal_suffix='.ini', emperor_stats=EMPEROR_STATS,
                           fastrouter_stats=ROUTER_STATS, **params)


@pytest.mark.timeout(10)
def test_an_unsubscribe_to_a_subscription_server_that_reads_nothing_gives_up_in_time(tmp_path, monkeypatch):
    path = str(tmp_path / 'subscription.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            while True:  # the server reads nothing: its queue fills up
                filler.sendto(b'x', path)
        monkeypatch.setattr(_emperor, 'SEND_TIMEOUT', 0.1)
        fleet = _emperor.Fleet(FakeModule().params)
        fleet.servers['shop-1.ini'] = [path]
        errors = fleet.unsubscribe('shop-1.ini', {'name': '/run/shop/shop-1.sock', 'key': 'shop'})
        assert errors == ['%s: no room to send within 0.1s (the subscription server reads nothing)' % path]
    finally:
        filler.close()
        server.close()

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _release

RELEASES = '/srv/demo/releases'
V1 = RELEASES + '/v1'
V2 = RELEASES + '/v2'
SWITCH = 1795364401.0  # 2026-11-22T16:20:01Z
TICK = 0.01


def worker(pid, cwd=V2, after=5.0, mapped=()):
    return dict(pid=pid, cwd=cwd, started_at=SWITCH + after, mapped=list(mapped))


def judge(*workers):
    return _release.judge_workers(V2, SWITCH, list(workers), RELEASES, TICK)


def test_workers_in_the_release_started_after_the_switch_prove_it():
    assert judge(worker(901), worker(902, mapped=['/usr/bin/python3.11', V2 + '/venv/lib/_speedups.so'])) == []


def test_a_worker_in_the_old_release_started_before_the_switch():
    assert judge(worker(902), worker(901, cwd=V1, after=-12.34)) == [
        'worker 901 runs in /srv/demo/releases/v1, started 12.3 s before the switch']


@pytest.mark.parametrize('after, proven', [(0.0, True), (-0.009, True), (-0.011, False), (-0.5, False)])
def test_a_start_within_a_tick_before_the_switch_passes(after, proven):
    problems = judge(worker(901, after=after))
    assert (problems == []) == proven
    if not proven:
        assert problems == ['worker 901 started %.2f s before the switch' % -after]


def test_stray_mapped_files_are_those_of_other_releases_only():
    mapped = ['/usr/lib/libc.so.6', V2 + '/venv/lib/ok.so', V1 + '/venv/lib/_speedups.so',
              RELEASES + '/v0/venv/lib/gone.so (deleted)', '/srv/demo/releases-old/x.so', RELEASES + '/v22/x.so']
    report = _release.worker_report(worker(901, mapped=mapped), V2, SWITCH, RELEASES)
    assert report['stray_mapped_files'] == [V1 + '/venv/lib/_speedups.so', RELEASES + '/v0/venv/lib/gone.so (deleted)',
                                            RELEASES + '/v22/x.so']
    assert judge(worker(901, mapped=mapped)) == [
        'worker 901 maps 3 files of another release: /srv/demo/releases/v1/venv/lib/_speedups.so, '
        '/srv/demo/releases/v0/venv/lib/gone.so (deleted) and 1 more']
    assert judge(worker(901, mapped=[V1 + '/venv/lib/_speedups.so'])) == [
        'worker 901 maps a file of another release: /srv/demo/releases/v1/venv/lib/_speedups.so']


def test_worker_report_is_what_the_module_returns():
    assert _release.worker_report(worker(901, after=0.8284), V2, SWITCH, RELEASES) == dict(
        pid=901, cwd=V2, started_at=_release.iso_utc(SWITCH + 0.8284), started_after_switch=0.828,
        stray_mapped_files=[])


def test_problems_come_in_pid_order():
    assert [problem.split()[1] for problem in judge(worker(903, cwd=V1), worker(901, cwd=V1))] == ['901', '903']


def test_iso_utc():
    assert _release.iso_utc(0) == '1970-01-01T00:00:00.000Z'
    assert _release.iso_utc(1795364401.4829) == '2026-11-22T16:20:01.482Z'


@pytest.mark.parametrize('count, minimum, problem', [
    (2, 2, None), (3, 2, None),
    (1, 2, 'master 812 has 1 worker (child processes), fewer than min_workers=2'),
    (0, 1, 'master 812 has 0 workers (child processes), fewer than min_workers=1'),
])
def test_count_problem(count, minimum, problem):
    assert _release.count_problem(812, count, minimum) == problem


def test_failure_message():
    assert _release.failure_message('demo.service (master 812)', V2, 1795364401.0, ['worker 901 runs in ' + V1]) == (
        'release proof failed for demo.service (master 812): expected every worker in /srv/demo/releases/v2 '
        '(current switched 2026-11-22T16:20:01.000Z); worker 901 runs in /srv/demo/releases/v1')


@pytest.fixture
def app_root(tmp_path):
    for name in ('v1', 'v2'):
        (tmp_path / 'releases' / name).mkdir(parents=True)
    os.symlink('releases/v2', str(tmp_path / 'current'))
    os.utime(str(tmp_path / 'current'), (SWITCH, SWITCH), follow_symlinks=False)
    return tmp_path


def test_read_current(app_root):
    assert _release.read_current(str(app_root)) == (str(app_root / 'releases' / 'v2'), SWITCH)
    assert _release.read_current(str(app_root), 'v2')[0] == str(app_root / 'releases' / 'v2')
    assert _release.releases_dir(str(app_root)) == str(app_root / 'releases')


def test_read_current_resolves_a_symlinked_app_root(app_root, tmp_path_factory):
    link = tmp_path_factory.mktemp('elsewhere') / 'demo'
    os.symlink(str(app_root), str(link))
    assert _release.read_current(str(link))[0] == str(app_root / 'releases' / 'v2')
    assert _release.releases_dir(str(link)) == str(app_root / 'releases')


def test_read_current_refuses(app_root):
    current = app_root / 'current'
    with pytest.raises(_release.ReleaseError, match='^release=v1: %s points to %s, not to %s$' % (
            current, app_root / 'releases' / 'v2', app_root / 'releases' / 'v1')):
        _release.read_current(str(app_root), 'v1')
    current.unlink()
    with pytest.raises(_release.ReleaseError, match='^app_root=%s: %s does not exist$' % (app_root, current)):
        _release.read_current(str(app_root))
    os.symlink('releases/v3', str(current))
    with pytest.raises(_release.ReleaseError, match='points to releases/v3, which is not a directory'):
        _release.read_current(str(app_root))
    current.unlink()
    current.mkdir()
    with pytest.raises(_release.ReleaseError, match='^app_root=%s: %s is not a symlink' % (app_root, current)):
        _release.read_current(str(app_root))

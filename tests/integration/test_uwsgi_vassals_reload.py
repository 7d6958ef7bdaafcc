"""graceful.wsgi.uwsgi_vassals_reload against a real Emperor, FastRouter and four vassals, under HTTP load.

The load goes through HTTP router -> FastRouter -> vassals, with slow requests always in flight. Every test
asserts 0 failed requests; the reload tests also that each vassal's new worker answered with the new release.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.ansible_runner import REFUSED_TASK_SECONDS, PlaybookRunner
from tests.support.emperor_fleet import EmperorFleet
from tests.support.loadgen import LoadGenerator, LoadResult
from tests.support.process import poll_until

SLOW_SECONDS = 1.5


@pytest.fixture
def fleet(tmp_path: Path):
    with EmperorFleet(tmp_path / "emperor", vassals=4) as running:
        yield running


def run_under_load(ansible: PlaybookRunner, fleet: EmperorFleet, args: dict, release: str, broken: bool = False,
                   min_requests: int = 3000) -> tuple[dict, LoadResult, float]:
    # Paced (5 ms between two requests of a client): the Emperor, four vassals, two routers, ansible and the
    # clients share two cores, and a run may last while the Emperor throttles a failing vassal.
    load = LoadGenerator(fleet.base_url, concurrency=10, slow_clients=2, slow_seconds=SLOW_SECONDS,
                         min_requests=min_requests, max_requests=150000, max_seconds=150, think_seconds=0.005)
    load.start()
    try:
        poll_until(lambda: load.fast_completed >= 300, 20, "warm-up traffic")
        fleet.set_release(release, broken=broken)
        outcome = ansible.run_module("uwsgi_vassals_reload", fleet.module_args(**args))
        finished = time.monotonic()
        # Requests after the run, so that every new worker is seen answering.
        answered = load.fast_completed
        poll_until(lambda: load.fast_completed >= answered + 400, 60, "requests after the run")
    finally:
        result = load.stop()
    return outcome, result, finished


def assert_every_new_worker_serves(outcome: dict, result: LoadResult, release: str, after: float) -> None:
    workers = {pid for vassal in outcome["vassals"] for pid in vassal["workers_after"]}
    assert len(workers) == 4, outcome["vassals"]
    answered = result.pids_serving(release, after=after)
    assert workers <= answered, f"workers {sorted(workers)} vs answering {release}: {sorted(answered)}"
    stale = {r.release for r in result.responses if r.ok and r.t_start >= after} - {release}
    assert not stale, f"after the run, other releases still answered: {stale}"


@pytest.mark.parametrize("min_active, parallel", [(1, 3), (3, 1)])
def test_reload_keeps_the_floor_and_every_vassal_serves_the_new_release(
        ansible: PlaybookRunner, fleet: EmperorFleet, min_active: int, parallel: int) -> None:
    outcome, result, finished = run_under_load(ansible, fleet, {"min_active": min_active}, "v2")
    assert not outcome.get("failed"), outcome.get("msg")
    assert result.failed == 0, result.summary()
    assert result.slow_total > 0
    assert sorted(outcome["reloaded"]) == [f"demo-{n}" for n in range(1, 5)]
    assert outcome["min_active_observed"] >= min_active
    assert outcome["parallel_max"] == parallel
    for vassal in outcome["vassals"]:
        assert vassal["pid_after"] == vassal["pid_before"]
        assert vassal["workers_after"] and set(vassal["workers_after"]).isdisjoint(vassal["workers_before"])
    assert fleet.serving() == 4
    assert_every_new_worker_serves(outcome, result, "v2", finished)


def test_a_broken_release_fails_at_the_timeout_keeps_the_floor_and_recovers(
        ansible: PlaybookRunner, fleet: EmperorFleet) -> None:
    outcome, result, _finished = run_under_load(ansible, fleet, {"timeout": 8}, "v2-broken", broken=True)
    assert outcome.get("failed")
    assert result.failed == 0, result.summary()
    assert outcome["timed_out"] == ["demo-1", "demo-2", "demo-3"]
    assert outcome["msg"].startswith("3 vassal(s) of emperor_dir=")
    assert "did not come back within timeout=8.0s: demo-1, demo-2, demo-3." in outcome["msg"]
    assert "Not touched, to keep the floor: demo-4." in outcome["msg"]
    assert outcome["min_active_observed"] >= 1
    assert set(outcome["stats"]) == {"demo-1", "demo-2", "demo-3", "demo-4"}
    # Only demo-4 still serves, with the old code; a run over all vassals is refused.
    refused = ansible.run_module("uwsgi_vassals_reload", fleet.module_args())
    assert refused.get("failed") and refused["msg"].startswith("refusing to reload: 1 vassal(s)")

    outcome, result, finished = run_under_load(
        ansible, fleet, {"vassals": outcome["timed_out"], "timeout": 60}, "v3")
    assert not outcome.get("failed"), outcome.get("msg")
    assert result.failed == 0, result.summary()
    assert sorted(outcome["reloaded"]) == ["demo-1", "demo-2", "demo-3"]
    outcome_all, result_all, finished_all = run_under_load(ansible, fleet, {}, "v3", min_requests=1500)
    assert not outcome_all.get("failed"), outcome_all.get("msg")
    assert result_all.failed == 0, result_all.summary()
    assert_every_new_worker_serves(outcome_all, result_all, "v3", finished_all)


def test_a_second_run_fails_at_once_while_one_runs(ansible: PlaybookRunner, tmp_path: Path) -> None:
    with EmperorFleet(tmp_path / "slow", vassals=4, import_delay=1.5) as slow_fleet:
        first: dict = {}
        runner = threading.Thread(target=lambda: first.update(ansible.run_module(
            "uwsgi_vassals_reload", slow_fleet.module_args(min_active=3))))
        configs = sorted(slow_fleet.emperor_dir.glob("*.ini"))
        before = {path: path.stat().st_mtime for path in configs}
        load = LoadGenerator(slow_fleet.base_url, concurrency=10, slow_clients=2, slow_seconds=SLOW_SECONDS,
                             min_requests=2000, max_requests=150000, max_seconds=150, think_seconds=0.005)
        load.start()
        try:
            poll_until(lambda: load.fast_completed >= 300, 20, "warm-up traffic")
            slow_fleet.set_release("v2")
            runner.start()
            poll_until(lambda: any(path.stat().st_mtime != before[path] for path in configs), 30,
                       "the first run touching a vassal")
            started = time.monotonic()
            second = ansible.run_module("uwsgi_vassals_reload", slow_fleet.module_args())
            refused_in = time.monotonic() - started
            runner.join(120)
            finished = time.monotonic()
            answered = load.fast_completed
            poll_until(lambda: load.fast_completed >= answered + 400, 60, "requests after the run")
        finally:
            runner.join(120)
            result = load.stop()
        assert result.failed == 0, result.summary()
        assert second.get("failed")
        assert second["msg"].startswith("another uwsgi_vassals_reload run holds the lock of emperor_dir=")
        assert "pid " in second["msg"]
        assert not first.get("failed"), first.get("msg")
        assert first["parallel_max"] == 1
        # The refusal costs one ansible task, not a wait on the first run (which takes over 6 s).
        assert refused_in < first["elapsed"]
        assert_every_new_worker_serves(first, result, "v2", finished)


def test_check_mode_touches_nothing(ansible: PlaybookRunner, fleet: EmperorFleet) -> None:
    configs = sorted(fleet.emperor_dir.glob("*.ini"))
    before = {path: path.stat().st_mtime for path in configs}
    outcome = ansible.run_module("uwsgi_vassals_reload", fleet.module_args(), check=True)
    assert outcome["changed"]
    assert [v["state"] for v in outcome["vassals"]] == ["would_reload"] * 3 + ["pending"]
    assert {path: path.stat().st_mtime for path in configs} == before
    time.sleep(1.5)
    assert fleet.serving() == 4


def test_symlinked_vassals_of_a_nofollow_emperor_reload_one_by_one_through_their_links(
        ansible: PlaybookRunner, tmp_path: Path) -> None:
    """The Emperor docs' reload-script layout: one ini, a symlink to it per vassal, sockets named %n, and an
    Emperor run with --emperor-nofollow. Each vassal is reloaded by moving its link's own mtime."""
    with EmperorFleet(tmp_path / "links", vassals=4, symlinks=True, nofollow=True) as linked:
        shared_mtime = linked.shared_ini.stat().st_mtime
        links = sorted(linked.emperor_dir.glob("*.ini"))
        before = {path: path.lstat().st_mtime for path in links}
        outcome, result, finished = run_under_load(ansible, linked, {"min_active": 3}, "v2", min_requests=2000)
        assert not outcome.get("failed"), outcome.get("msg")
        assert result.failed == 0, result.summary()
        assert result.slow_total > 0
        assert sorted(outcome["reloaded"]) == [f"demo-{n}" for n in range(1, 5)]
        assert outcome["parallel_max"] == 1 and outcome["min_active_observed"] >= 3
        for vassal in outcome["vassals"]:
            assert vassal["pid_after"] == vassal["pid_before"], "a graceful reload keeps each vassal's master"
        assert all(path.lstat().st_mtime > before[path] for path in links), "each link was touched itself"
        assert linked.shared_ini.stat().st_mtime == shared_mtime, "the file the links share was never touched"
        assert linked.serving() == 4
        assert_every_new_worker_serves(outcome, result, "v2", finished)


def test_symlinked_vassals_of_an_emperor_that_follows_symlinks_are_refused(
        ansible: PlaybookRunner, tmp_path: Path) -> None:
    with EmperorFleet(tmp_path / "followed", vassals=4, symlinks=True) as linked:
        links = sorted(linked.emperor_dir.glob("*.ini"))
        before = {path: path.lstat().st_mtime for path in links}
        shared_mtime = linked.shared_ini.stat().st_mtime
        outcome = ansible.run_module("uwsgi_vassals_reload", linked.module_args())
        assert outcome.get("failed")
        assert outcome["seconds"] < REFUSED_TASK_SECONDS
        assert "demo-1.ini and demo-2.ini and demo-3.ini and demo-4.ini are one file (symlinks to it), and the " \
               "Emperor follows symlinks (pid " in outcome["msg"]
        assert "runs without emperor-nofollow): it would reload them together. Run it with emperor-nofollow" \
            in outcome["msg"]
        # Lost: nothing. Left: every vassal serving, no link and not the file touched.
        assert {path: path.lstat().st_mtime for path in links} == before
        assert linked.shared_ini.stat().st_mtime == shared_mtime
        assert linked.serving() == 4

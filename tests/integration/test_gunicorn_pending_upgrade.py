"""gunicorn_reload pending_upgrade=settle on real gunicorn (20.1 and 27) under real HTTP load.

Each test leaves an upgrade pending the way an interrupted run does: it sends USR2 itself, so a new master
runs beside the old one, which is never stopped. Then it runs the module with pending_upgrade=settle while
10 clients send requests and 2 keep 1.5 s requests in flight. Afterwards exactly one master is left, the
pidfile names it and it serves, and not one request failed:

* new workers that booted: the upgrade is finished (TERM to the old master only), then the HUP asked for;
* new workers that cannot boot (the release they import hangs): the upgrade is aborted (TERM to the new
  master only), and the old master serves on with the same workers (on the newest gunicorn only, for time:
  aborting signals only the new master, the same way on every version).

gunicorn's graceful_timeout is 3 s here, so that an aborted new master whose workers hang in their import
(they ignore TERM until then) exits within seconds.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import GUNICORN_VERSIONS, SLOW_SECONDS
from tests.support.gunicorn_instance import GunicornInstance
from tests.support.loadgen import LoadGenerator, LoadResult, sample_serving_pids
from tests.support.process import poll_until

MIN_REQUESTS = 2000


@pytest.fixture(params=GUNICORN_VERSIONS, ids=lambda version: f"gunicorn-{version}")
def quick_gunicorn(request, gunicorn_bins: dict[str, Path], tmp_path: Path):
    instance = GunicornInstance(tmp_path / "gunicorn", gunicorn_bins[request.param], workers=4, threads=2,
                                import_delay=0.3, graceful_timeout=3)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def leave_upgrade_pending(gunicorn: GunicornInstance, release: str, import_delay: float | None = None) -> int:
    """Ship ``release`` and send USR2 by hand, never finishing the upgrade; the new master's PID."""
    master = gunicorn.master_pid()
    gunicorn.set_release(release, import_delay=import_delay)
    os.kill(master, signal.SIGUSR2)
    new_master = poll_until(lambda: next(iter(gunicorn.upgrade_children(master)), None), 20, "the new master")
    poll_until(lambda: len(gunicorn.worker_pids(new_master)) == gunicorn.workers or None, 20,
               "the new master's workers")
    return new_master


def settle_under_load(ansible, gunicorn: GunicornInstance, args: dict, pend) -> tuple[dict, LoadResult, int]:
    load = LoadGenerator(gunicorn.base_url, concurrency=10, slow_clients=2, slow_seconds=SLOW_SECONDS,
                         min_requests=MIN_REQUESTS, max_requests=150000, max_seconds=90)
    load.start()
    try:
        poll_until(lambda: load.fast_completed >= 300, 20, "warm-up traffic")
        new_master = pend()
        run = ansible.run_module("gunicorn_reload", {"pidfile": str(gunicorn.pidfile), "pending_upgrade": "settle",
                                                     **args})
    finally:
        result = load.stop()
    return run, result, new_master


def assert_one_master_serving(gunicorn: GunicornInstance, master: int, release: str) -> set[int]:
    assert gunicorn.master_pid() == master, "the pidfile names the master left"
    assert gunicorn._session_masters() == {master}, "exactly one master is left"
    assert not gunicorn.upgrade_children(master)
    assert not gunicorn.pidfile.with_name(gunicorn.pidfile.name + ".2").exists()
    workers = gunicorn.worker_pids(master)
    assert len(workers) == gunicorn.workers
    sampled = sample_serving_pids(gunicorn.base_url, workers, release)
    assert not sampled["missing"] and not sampled["wrong"] and not sampled["errors"], sampled
    return workers


@pytest.mark.timeout(120)
def test_a_pending_upgrade_whose_workers_booted_is_finished_under_load(ansible, quick_gunicorn):
    gunicorn = quick_gunicorn
    old_master = gunicorn.master_pid()

    def pend() -> int:
        new_master = leave_upgrade_pending(gunicorn, "v2")
        gunicorn.wait_all_workers_serving("v2", master=new_master)
        return new_master

    run, result, new_master = settle_under_load(ansible, gunicorn, {"mode": "hup", "timeout": 30}, pend)
    print(f"settle (finish) + hup, gunicorn {gunicorn.version}: task {run['seconds']:.2f}s, module {run.get('elapsed')}s,"
          f" {result.summary()}\n{run['msg']}")

    assert not run.get("failed"), run["msg"]
    assert run["pending_settled"] == "finished"
    assert run["pending_masters"] == {"old": old_master, "new": new_master}
    assert run["signals"] == [f"TERM {old_master}", f"HUP {new_master}"], "the new master got no TERM"
    assert run["pending_detail"].startswith(f"finished the pending upgrade: new master {new_master} (all 4 of its "
                                            "workers booted); handed pidfile=")
    assert run["master_pid_before"] == run["master_pid"] == new_master
    assert not gunicorn.process_alive(old_master)
    assert result.failed == 0 and result.total >= MIN_REQUESTS, result.summary()
    assert result.slow_total > 0, result.summary()
    assert assert_one_master_serving(gunicorn, new_master, "v2") == set(run["workers_after"])


# Aborting signals only the new master and is the same on every gunicorn version: the newest only, for time.
@pytest.mark.parametrize("quick_gunicorn", GUNICORN_VERSIONS[-1:], indirect=True, ids=lambda version: f"gunicorn-{version}")
@pytest.mark.timeout(120)
def test_a_pending_upgrade_whose_workers_cannot_boot_is_aborted_under_load(ansible, quick_gunicorn):
    gunicorn = quick_gunicorn
    old_master = gunicorn.master_pid()
    old_workers = gunicorn.worker_pids(old_master)
    new_workers: set[int] = set()

    def pend() -> int:
        # The release the new workers import hangs: they never boot (and ignore TERM until gunicorn kills them).
        new_master = leave_upgrade_pending(gunicorn, "v3-hangs", import_delay=600)
        new_workers.update(gunicorn.worker_pids(new_master))
        return new_master

    run, result, new_master = settle_under_load(ansible, gunicorn, {"mode": "none", "timeout": 2}, pend)
    print(f"settle (abort), gunicorn {gunicorn.version}: task {run['seconds']:.2f}s, module {run.get('elapsed')}s,"
          f" {result.summary()}\n{run['msg']}")

    assert not run.get("failed"), run["msg"]
    assert run["pending_settled"] == "aborted"
    assert run["signals"] == [f"TERM {new_master}"], "the old master got nothing"
    assert run["pending_detail"].startswith(f"aborted the pending upgrade: new master {new_master}: its workers did "
                                            "not all boot within timeout=2.0s")
    assert f"The old master {old_master} serves with workers {sorted(old_workers)}" in run["pending_detail"]
    assert run["elapsed"] < 12, "the abort takes the timeout plus gunicorn's graceful_timeout, not much more"
    assert not gunicorn.process_alive(new_master)
    assert not any(gunicorn.process_alive(pid) for pid in new_workers), "the new master's workers are gone too"
    assert result.failed == 0 and result.total >= MIN_REQUESTS, result.summary()
    assert result.slow_total > 0, result.summary()
    assert assert_one_master_serving(gunicorn, old_master, "v1") == old_workers, "the old master is untouched"

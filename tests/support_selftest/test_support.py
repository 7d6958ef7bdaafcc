"""Self-tests for tests/support against a real uWSGI and a real gunicorn.

The integration tests and the benchmark rest on two claims of this harness:
"0 failed requests" is measured, not assumed, and "every worker serves the new
release" is checked per pid. These tests make both claims falsifiable: they
show a clean reload measures clean, and that failures really are counted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.demo_app import render_app
from tests.support.gunicorn_instance import GunicornInstance
from tests.support.loadgen import LoadGenerator, sample_serving_pids
from tests.support.process import poll_until
from tests.support.server_venvs import gunicorn_bin
from tests.support.uwsgi_instance import UwsgiInstance

WORKERS = 4
NEWEST_GUNICORN = "27.0.1"


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[UwsgiInstance]:
    with UwsgiInstance(tmp_path / "uwsgi", processes=WORKERS) as running:
        yield running


def chain_reload_to(
    instance: UwsgiInstance, release: str, broken: bool = False
) -> float:
    """Deploy ``release`` by chain reload; return the monotonic trigger time."""
    instance.set_release(release, broken=broken)
    triggered_at = time.monotonic()
    instance.send_master_command("c")
    return triggered_at


def wait_all_pids_replaced(instance: UwsgiInstance, old_pids: set[int]) -> set[int]:
    def fully_replaced() -> set[int] | None:
        workers = instance.workers()
        pids = {w["pid"] for w in workers}
        ready = all(w["pid"] > 0 and w["accepting"] == 1 for w in workers)
        return pids if ready and not pids & old_pids else None

    return poll_until(
        fully_replaced, timeout=30, description="every worker pid replaced"
    )


@pytest.mark.timeout(60)
def test_render_app_broken_release_fails_at_import() -> None:
    source = render_app("v9", broken=True)
    with pytest.raises(ImportError, match="release v9 is broken"):
        exec(compile(source, "app.py", "exec"), {})


@pytest.mark.timeout(60)
def test_steady_load_has_no_failures_and_keeps_slow_requests_in_flight(
    instance: UwsgiInstance,
) -> None:
    load = LoadGenerator(
        instance.base_url, min_requests=2000, slow_seconds=1.0, max_seconds=30
    )
    load.start()
    # No sleep needed: stop() keeps the fast clients going until min_requests,
    # and waits for the slow requests already in flight.
    result = load.stop()
    print(result.summary())  # shown with -rP; handy when tuning the benchmark

    assert result.failed == 0, result.summary()
    assert result.total >= 2000, result.summary()
    assert result.slow_total >= 1, result.summary()
    assert dict(result.releases_seen()) == {"v1": result.total}
    assert result.pids_serving("v1") <= instance.worker_pids()


@pytest.mark.timeout(60)
def test_responses_since_shows_the_running_load(instance: UwsgiInstance) -> None:
    load = LoadGenerator(instance.base_url, min_requests=0, max_seconds=30)
    load.start()
    poll_until(lambda: load.fast_completed >= 200, 20, "first responses")
    mark = time.monotonic()
    poll_until(lambda: load.fast_completed >= 600, 20, "more responses")
    live = load.responses_since(mark)
    result = load.stop()

    assert live, result.summary()
    assert all(r.t_start >= mark for r in live)
    assert set(live) <= set(result.responses)
    assert len(live) < result.total


@pytest.mark.timeout(60)
def test_sampler_reaches_every_worker(instance: UwsgiInstance) -> None:
    pids = instance.worker_pids()
    assert len(pids) == WORKERS

    sample = sample_serving_pids(instance.base_url, pids, "v1")

    assert sample["missing"] == set(), sample
    assert sample["wrong"] == [], sample
    assert sample["errors"] == [], sample
    assert set(sample["seen"]) == pids


@pytest.mark.timeout(60)
def test_chain_reload_under_load_rolls_every_worker_without_failures(
    instance: UwsgiInstance,
) -> None:
    old_pids = instance.worker_pids()

    with LoadGenerator(
        instance.base_url, min_requests=2000, slow_seconds=1.0, max_seconds=45
    ) as load:
        chain_reload_to(instance, "v2")
        new_pids = wait_all_pids_replaced(instance, old_pids)
        rolled_over_at = time.monotonic()
        sample = sample_serving_pids(instance.base_url, new_pids, "v2")
    result = load.result
    assert result is not None
    print(result.summary())

    assert sample["missing"] == set(), sample
    assert sample["wrong"] == [], sample
    assert len(new_pids) == WORKERS
    assert result.failed == 0, result.summary()
    assert set(result.releases_seen()) == {"v1", "v2"}, result.summary()
    # Nothing the old code served may answer once the rollover is complete.
    assert "v1" not in {
        r.release for r in result.responses if r.t_start >= rolled_over_at
    }
    assert instance.wait_all_workers_serving("v2", timeout=10) == new_pids


@pytest.mark.timeout(60)
def test_broken_release_is_counted_as_failures(instance: UwsgiInstance) -> None:
    old_pids = instance.worker_pids()

    with LoadGenerator(
        instance.base_url, min_requests=2000, slow_seconds=1.0, max_seconds=45
    ) as during_rollover:
        triggered_at = chain_reload_to(instance, "v3", broken=True)
        wait_all_pids_replaced(instance, old_pids)
    # Once every worker runs the broken release, every request must fail.
    with LoadGenerator(
        instance.base_url, min_requests=500, slow_clients=0, max_seconds=20
    ) as after_rollover:
        pass

    rollover = during_rollover.result
    broken = after_rollover.result
    assert rollover is not None and broken is not None
    print(rollover.summary(), broken.summary(), sep="\n")
    assert rollover.failed > 0, rollover.summary()
    assert rollover.failed == len(rollover.failures)
    assert all(f["time"] >= triggered_at for f in rollover.failures), rollover.summary()
    assert "v3" not in rollover.releases_seen()

    assert broken.total >= 500, broken.summary()
    assert broken.failed == broken.total, broken.summary()
    assert all(f["status"] == 500 for f in broken.failures), broken.summary()
    with pytest.raises(TimeoutError, match="serving release 'v3'"):
        instance.wait_all_workers_serving("v3", timeout=2)


@pytest.mark.timeout(60)
def test_connection_errors_are_counted_as_failures(instance: UwsgiInstance) -> None:
    instance.stop()

    with LoadGenerator(
        instance.base_url,
        concurrency=2,
        slow_clients=1,
        min_requests=50,
        max_seconds=10,
    ) as load:
        pass
    result = load.result
    assert result is not None

    assert result.total >= 50, result.summary()
    assert result.failed == result.total, result.summary()
    assert all(
        "ConnectionRefusedError" in f["error"] for f in result.failures
    ), result.summary()


# -- gunicorn -----------------------------------------------------------------


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[GunicornInstance]:
    with GunicornInstance(
        tmp_path / "gunicorn", gunicorn_bin(NEWEST_GUNICORN), workers=WORKERS
    ) as running:
        yield running


def live_session_pids(session_id: int) -> set[int]:
    """Non-zombie processes in session ``session_id``, read straight from /proc
    (field 6 of /proc/PID/stat) rather than through the harness under test."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command name: state ppid pgrp session
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if state != "Z" and int(session) == session_id:
            pids.add(int(entry))
    return pids


def pidfile_master(instance: GunicornInstance) -> int:
    pid = instance.master_pid()
    assert pid is not None, instance.log_tail()
    return pid


def usr2_upgrade(instance: GunicornInstance, release: str) -> tuple[int, set[int]]:
    """Start a new master running ``release`` next to the current one; return
    it and its workers once they all serve ``release``."""
    old_master = pidfile_master(instance)
    instance.set_release(release)
    os.kill(old_master, signal.SIGUSR2)
    new_master = poll_until(
        lambda: next(iter(instance.upgrade_children(old_master)), None),
        timeout=20,
        description="the USR2 new master to exec",
        on_timeout=instance.log_tail,
    )
    new_workers = instance.wait_all_workers_serving(
        release, timeout=30, master=new_master
    )
    return new_master, new_workers


@pytest.mark.timeout(60)
def test_gunicorn_start_serves_first_release_on_every_worker(
    gunicorn: GunicornInstance,
) -> None:
    master = pidfile_master(gunicorn)
    pids = gunicorn.worker_pids()

    assert master == gunicorn.session_id
    assert gunicorn.running
    assert len(pids) == WORKERS
    assert master not in pids
    sample = sample_serving_pids(gunicorn.base_url, pids, "v1")
    assert sample["missing"] == set(), sample
    assert sample["wrong"] == [], sample
    assert set(sample["seen"]) == pids
    assert gunicorn.wait_all_workers_serving("v1", timeout=10) == pids
    if gunicorn.version >= (24,):
        assert gunicorn.control_socket is not None
        assert gunicorn.control_socket.is_socket()


@pytest.mark.timeout(60)
def test_gunicorn_hup_replaces_every_worker_with_the_new_release(
    gunicorn: GunicornInstance,
) -> None:
    master = pidfile_master(gunicorn)
    old_pids = gunicorn.worker_pids()

    gunicorn.set_release("v2")
    os.kill(master, signal.SIGHUP)
    new_pids = gunicorn.wait_all_workers_serving(
        "v2", timeout=30, replaced_pids=old_pids
    )

    assert len(new_pids) == WORKERS
    assert not new_pids & old_pids
    assert pidfile_master(gunicorn) == master  # HUP keeps the master


@pytest.mark.timeout(90)
def test_gunicorn_usr2_upgrade_promotes_new_master_and_stop_cleans_up(
    gunicorn: GunicornInstance,
) -> None:
    session = gunicorn.session_id
    assert session is not None
    old_master = pidfile_master(gunicorn)
    old_workers = gunicorn.worker_pids()

    new_master, new_workers = usr2_upgrade(gunicorn, "v2")
    # The new master is a child of the old one, but not one of its workers.
    assert new_master not in gunicorn.worker_pids(old_master)
    assert gunicorn.worker_pids(old_master) == old_workers
    assert not new_workers & old_workers

    os.kill(old_master, signal.SIGTERM)
    poll_until(
        lambda: gunicorn.master_pid() == new_master,
        timeout=30,
        description="the pidfile to name the promoted new master",
        on_timeout=gunicorn.log_tail,
    )

    assert gunicorn.running
    assert not gunicorn.process_alive(old_master)
    assert not gunicorn.upgrade_children(new_master)
    assert gunicorn.wait_all_workers_serving("v2", timeout=10) == new_workers
    # The old master drains and reaps its workers before exiting, which is
    # what triggers the promotion; the new generation stays in our session.
    assert live_session_pids(session) == {new_master} | new_workers

    gunicorn.stop()

    assert live_session_pids(session) == set()
    assert not gunicorn.running
    gunicorn.stop()  # idempotent


@pytest.mark.timeout(60)
def test_gunicorn_stop_during_usr2_overlap_stops_both_masters(
    gunicorn: GunicornInstance,
) -> None:
    session = gunicorn.session_id
    assert session is not None
    old_master = pidfile_master(gunicorn)
    new_master = usr2_upgrade(gunicorn, "v2")[0]

    gunicorn.stop()

    assert live_session_pids(session) == set()
    # Both masters were asked to quit, rather than the new one being left to
    # the SIGKILL fallback. (Not checked by timing: gunicorn 20.1 gthread
    # workers occasionally do not exit on SIGQUIT, and then stop() waits out
    # its whole grace period either way.)
    log = gunicorn.log_path.read_text()
    assert f"[{old_master}] [INFO] Handling signal: quit" in log
    assert f"[{new_master}] [INFO] Handling signal: quit" in log


@pytest.mark.timeout(60)
def test_gunicorn_hup_to_a_broken_release_halts_the_master(
    gunicorn: GunicornInstance,
) -> None:
    session = gunicorn.session_id
    assert session is not None
    master = pidfile_master(gunicorn)

    gunicorn.set_release("v2", broken=True)
    os.kill(master, signal.SIGHUP)
    # A worker that cannot import the app makes gunicorn shut down entirely,
    # which is why a broken release must never be shipped with a bare HUP.
    gunicorn.wait_master_gone(master, timeout=30)

    assert not gunicorn.running
    assert "release v2 is broken" in gunicorn.log_tail(200)
    # The halting master does not always wait for its workers (gunicorn
    # re-raises the halt while reaping them), but they were told to exit.
    poll_until(
        lambda: not live_session_pids(session),
        timeout=gunicorn.graceful_timeout,
        description="the halted master's workers to exit",
    )


@pytest.mark.timeout(60)
def test_gunicorn_failed_start_reports_the_log_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    instance = GunicornInstance(tmp_path / "gunicorn", gunicorn_bin(NEWEST_GUNICORN), workers=2)
    instance.set_release("v1", broken=True)

    with pytest.raises(RuntimeError, match="exited with status") as failure:
        instance.start()

    assert "release v1 is broken" in str(failure.value)
    assert instance.session_id is not None
    assert live_session_pids(instance.session_id) == set()
    assert not instance.running

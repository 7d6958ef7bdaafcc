"""Self-tests for tests/support against a real uWSGI.

The integration tests and the benchmark rest on two claims of this harness:
"0 failed requests" is measured, not assumed, and "every worker serves the new
release" is checked per pid. These tests make both claims falsifiable: they
show a clean reload measures clean, and that failures really are counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.demo_app import render_app
from tests.support.loadgen import LoadGenerator, sample_serving_pids
from tests.support.uwsgi_instance import UwsgiInstance, poll_until

WORKERS = 4


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

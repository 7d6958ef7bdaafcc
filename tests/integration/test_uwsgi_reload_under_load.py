"""uwsgi_reload on real uWSGI under real HTTP load: 0 failed requests and the new code everywhere.

Each test starts a uWSGI instance (4 processes x 2 threads, lazy-apps, a 0.3 s app import),
puts at least 5,000 requests through it at concurrency 10 with 1.5 s requests always in
flight, ships release v2, reloads through the installed collection with ansible-playbook,
and checks the instance itself afterwards, not only what the module returned.
"""

from __future__ import annotations

import time

import pytest

from tests.support.loadgen import LoadResult, sample_serving_pids

CASES = {
    "chain-fifo": {"mode": "chain", "via": "master_fifo"},
    "chain-touch": {"mode": "chain", "via": "touch_file"},
    "rolling-2": {"mode": "rolling", "via": "master_fifo", "max_unavailable": 2},
    "rolling-25pct": {"mode": "rolling", "via": "master_fifo", "max_unavailable": "25%"},
    "graceful-fifo": {"mode": "graceful", "via": "master_fifo"},
    "graceful-pidfile": {"mode": "graceful", "via": "pidfile"},
    "graceful-touch": {"mode": "graceful", "via": "touch_file"},
    "workers-fifo": {"mode": "workers", "via": "master_fifo"},
    "workers-touch": {"mode": "workers", "via": "touch_file"},
}


def module_args(uwsgi, case: dict) -> dict:
    touch_for_mode = {"chain": uwsgi.touch_chain_path, "graceful": uwsgi.touch_reload_path, "workers": uwsgi.touch_workers_path}
    via = {
        "master_fifo": str(uwsgi.fifo_path),
        "touch_file": str(touch_for_mode.get(case["mode"], "")),
        "pidfile": str(uwsgi.pidfile),
    }
    args = {case["via"]: via[case["via"]], "stats": str(uwsgi.stats_path), "mode": case["mode"], "timeout": 60}
    if "max_unavailable" in case:
        args["max_unavailable"] = case["max_unavailable"]
    return args


def assert_no_failed_requests(result: LoadResult) -> None:
    assert result.total >= 5000, result.summary()
    assert result.failed == 0, result.summary()


def to_monotonic(epoch: float) -> float:
    return epoch - (time.time() - time.monotonic())


def assert_slow_requests_spanned(result: LoadResult, run) -> None:
    """A slow request was being served when the module triggered the reload, and it succeeded."""
    triggered = to_monotonic(run["completed_at"] - run["elapsed"])
    spanning = [r for r in result.responses if r.kind == "slow" and r.t_start < triggered < r.t_end]
    assert spanning, "no slow request was in flight when the reload was triggered:\n" + result.summary()
    assert all(r.ok for r in spanning)


def assert_new_code_everywhere(uwsgi, run, release: str) -> None:
    before = {w["pid"] for w in run["workers_before"]}
    workers = uwsgi.workers()
    now = {w["pid"] for w in workers}
    assert not before & now, f"workers kept their pids: {sorted(before & now)}"
    assert all(w["accepting"] and w["apps"] for w in workers), workers
    assert {w["pid"] for w in run["workers_after"]} == now
    sampled = sample_serving_pids(uwsgi.base_url, now, release)
    assert not sampled["missing"], sampled
    assert not sampled["wrong"], sampled
    assert not sampled["errors"], sampled


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case_name", list(CASES))
def test_reload_loses_no_request_and_serves_new_code(reload_under_load, uwsgi, case_name):
    case = CASES[case_name]
    run, result = reload_under_load(module_args(uwsgi, case))
    print(f"{case_name}: module {run.get('elapsed')}s, {result.summary()}")

    assert not run.get("failed"), run["msg"]
    assert run["changed"] is True
    assert run["msg"].startswith(f"{case['mode']} reload complete: 4 workers replaced")
    assert_no_failed_requests(result)
    assert_slow_requests_spanned(result, run)
    assert_new_code_everywhere(uwsgi, run, "v2")
    # Once the module reported completion no request may start and still get the old code.
    completed_monotonic = to_monotonic(run["completed_at"])
    stale = [r for r in result.responses if r.ok and r.release == "v1" and r.t_start > completed_monotonic + 0.05]
    assert not stale, f"{len(stale)} requests started after completion were served by v1"
    if case["mode"] == "rolling":
        expected_floor = 4 - (2 if case["max_unavailable"] == 2 else 1)
        assert run["min_accepting"] == expected_floor
    if case["mode"] == "chain":
        assert run["min_accepting"] == 3


@pytest.mark.timeout(240)
def test_brutal_reload_loads_new_code_but_drops_requests_in_flight(reload_under_load, uwsgi):
    """Brutal reload kills workers mid-request by design: what it loses is bounded by what was in flight."""
    run, result = reload_under_load(module_args(uwsgi, {"mode": "brutal", "via": "master_fifo"}))
    print(f"brutal: module {run.get('elapsed')}s, {result.summary()}")
    assert not run.get("failed"), run["msg"]
    assert_new_code_everywhere(uwsgi, run, "v2")
    in_flight_capacity = 4 * 2
    assert result.failed <= in_flight_capacity, result.summary()


@pytest.mark.timeout(240)
def test_two_reloads_in_a_row(reload_under_load, uwsgi):
    """A second release right after the first: the FIFO is recreated by the master between them."""
    args = module_args(uwsgi, {"mode": "chain", "via": "master_fifo"})
    first, result_one = reload_under_load(args, release="v2")
    second, result_two = reload_under_load(args, release="v3")
    assert not first.get("failed") and not second.get("failed"), (first["msg"], second["msg"])
    assert_no_failed_requests(result_one)
    assert_no_failed_requests(result_two)
    assert_new_code_everywhere(uwsgi, second, "v3")

"""gunicorn_reload on real gunicorn (20.1 and 27) under real HTTP load: 0 failed requests, new code everywhere.

Each test starts a gunicorn master (4 gthread workers x 2 threads, a 0.3 s app import), puts at
least 5,000 requests through it at concurrency 10 with 1.5 s requests always in flight, ships
release v2, runs the module from the installed collection with ansible-playbook, and checks the
real processes, the pidfile and the served code afterwards, not only what the module returned.
"""

from __future__ import annotations

import time

import pytest

from tests.support.loadgen import LoadResult, sample_serving_pids


def to_monotonic(epoch: float) -> float:
    return epoch - (time.time() - time.monotonic())


def assert_no_failed_requests(result: LoadResult) -> None:
    assert result.total >= 5000, result.summary()
    assert result.failed == 0, result.summary()


def assert_slow_requests_spanned(result: LoadResult, run: dict) -> None:
    """A slow request was being served when the module sent its first signal, and it succeeded."""
    signalled = to_monotonic(run["completed_at"] - run["elapsed"])
    spanning = [r for r in result.responses if r.kind == "slow" and r.t_start < signalled < r.t_end]
    assert spanning, "no slow request was in flight when the reload began:\n" + result.summary()
    assert all(r.ok for r in spanning)


def assert_serves_only(gunicorn, master: int, workers: set[int], release: str) -> None:
    sampled = sample_serving_pids(gunicorn.base_url, workers, release)
    assert not sampled["missing"], sampled
    assert not sampled["wrong"], sampled
    assert not sampled["errors"], sampled
    assert gunicorn.worker_pids(master) == workers


def assert_no_stale_answers(result: LoadResult, run: dict) -> None:
    completed = to_monotonic(run["completed_at"])
    stale = [r for r in result.responses if r.ok and r.release == "v1" and r.t_start > completed + 0.05]
    assert not stale, f"{len(stale)} requests started after completion were served by v1"


@pytest.mark.timeout(240)
def test_hup_loses_no_request_and_every_worker_serves_the_new_code(gunicorn_reload_under_load, gunicorn):
    master = gunicorn.master_pid()
    run, result = gunicorn_reload_under_load({"mode": "hup", "timeout": 60})
    print(f"hup gunicorn {gunicorn.version}: module {run.get('elapsed')}s, {result.summary()}")

    assert not run.get("failed"), run["msg"]
    assert run["changed"] is True and run["signals"] == [f"HUP {master}"]
    assert run["master_pid_before"] == run["master_pid"] == master == gunicorn.master_pid()
    assert len(run["workers_before"]) == 4 and len(run["workers_after"]) == 4
    assert not set(run["workers_before"]) & set(run["workers_after"]), "every worker pid is replaced"
    assert_no_failed_requests(result)
    assert_slow_requests_spanned(result, run)
    assert_serves_only(gunicorn, master, set(run["workers_after"]), "v2")
    assert_no_stale_answers(result, run)


@pytest.mark.timeout(240)
def test_upgrade_loses_no_request_and_replaces_the_master(gunicorn_reload_under_load, gunicorn):
    old_master = gunicorn.master_pid()
    run, result = gunicorn_reload_under_load({"mode": "upgrade", "timeout": 60})
    print(f"upgrade gunicorn {gunicorn.version}: module {run.get('elapsed')}s, {result.summary()}")

    assert not run.get("failed"), run["msg"]
    new_master = run["master_pid"]
    assert run["master_pid_before"] == old_master != new_master
    assert gunicorn.master_pid() == new_master, "the pidfile names the new master"
    assert not gunicorn.pidfile.with_name(gunicorn.pidfile.name + ".2").exists()
    assert run["signals"] == [f"USR2 {old_master}", f"TERM {old_master}"]
    assert run["pidfile_handover"] is True, "the pidfile named the new master before the old one was stopped"
    assert run["systemd_unit"] is None and run["systemd_main_pid"] is None, "no systemd here"
    assert not gunicorn.process_alive(old_master)
    assert len(run["workers_after"]) == 4
    assert not set(run["workers_before"]) & set(run["workers_after"])
    assert_no_failed_requests(result)
    assert_slow_requests_spanned(result, run)
    assert_serves_only(gunicorn, new_master, set(run["workers_after"]), "v2")
    assert_no_stale_answers(result, run)


@pytest.mark.timeout(240)
def test_upgrade_to_a_broken_release_keeps_the_old_master_serving(gunicorn_reload_under_load, gunicorn):
    master = gunicorn.master_pid()
    workers = gunicorn.worker_pids(master)
    run, result = gunicorn_reload_under_load({"mode": "upgrade", "timeout": 60}, release="v2-broken", broken=True)
    print(f"broken upgrade gunicorn {gunicorn.version}: task {run['seconds']:.2f}s, {result.summary()}")

    assert run.get("failed"), run
    assert run["seconds"] < 15, "a release that cannot boot must fail within seconds, not at the timeout"
    assert "ImportError: release v2-broken is broken" in run["msg"]
    assert f"The old master {master} still serves with workers {sorted(workers)}" in run["msg"]
    assert run.get("exit_code") == 3, (run["msg"], run.get("log_tail"))
    assert run["signals"][0] == f"USR2 {master}" and f"TERM {master}" not in run["signals"]
    assert run["pidfile_handover"] is False
    assert_no_failed_requests(result)
    assert gunicorn.master_pid() == master
    assert not gunicorn.pidfile.with_name(gunicorn.pidfile.name + ".2").exists(), run["msg"]
    assert_serves_only(gunicorn, master, workers, "v1")
    assert not gunicorn.upgrade_children(master), "nothing of the new generation is left"


@pytest.mark.timeout(240)
def test_hup_to_a_broken_release_reports_the_outage_quickly(ansible, gunicorn):
    master = gunicorn.master_pid()
    gunicorn.set_release("v2-broken", broken=True)
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(gunicorn.pidfile), "mode": "hup", "timeout": 120})
    print(f"broken hup gunicorn {gunicorn.version}: task {run['seconds']:.2f}s: {run['msg']}")

    assert run.get("failed"), run
    assert run["seconds"] < 10
    assert "the service is DOWN" in run["msg"] and "mode=upgrade" in run["msg"]
    assert "ImportError: release v2-broken is broken" in run["msg"]
    gunicorn.wait_master_gone(master, timeout=40)

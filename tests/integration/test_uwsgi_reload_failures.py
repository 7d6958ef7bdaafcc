"""uwsgi_reload on real uWSGI when things are wrong: broken releases, bad input, wrong processes.

Every case runs the installed collection through ansible-playbook and then checks the real
instance (pids, served release, surviving processes), not only the module's answer.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.support.ansible_runner import REFUSED_TASK_SECONDS
from tests.support.loadgen import sample_serving_pids
from tests.support.uwsgi_instance import UwsgiInstance


@pytest.mark.timeout(240)
def test_rolling_stops_at_first_broken_worker_and_keeps_the_rest(reload_under_load, uwsgi):
    outcome, result = reload_under_load(
        {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path), "mode": "rolling", "timeout": 120},
        release="v2-broken", broken=True)
    before = {w["id"]: w["pid"] for w in outcome["workers_before"]}
    print(f"rolling broken: task {outcome['seconds']:.2f}s, {result.summary(max_failures=2)}")

    assert outcome.get("failed"), outcome
    assert outcome["seconds"] < 10, "a broken release must fail within seconds, not at the timeout"
    assert "respawned without an application" in outcome["msg"]
    assert "respawn_count" in outcome["msg"]
    assert "stopped before replacing workers" in outcome["msg"]
    assert outcome["snapshot"]["workers"], "the last stats snapshot comes with the failure"
    after = {w["id"]: w["pid"] for w in uwsgi.workers()}
    replaced = [wid for wid in before if after[wid] != before[wid]]
    assert len(replaced) == 1, f"only one worker may be exposed to the broken release, replaced: {replaced}"
    survivors = {after[wid] for wid in before if wid not in replaced}
    sampled = sample_serving_pids(uwsgi.base_url, survivors, "v1")
    assert not sampled["missing"] and not sampled["wrong"], sampled


@pytest.mark.timeout(240)
def test_chain_of_broken_release_fails_fast(reload_under_load, uwsgi):
    outcome, result = reload_under_load(
        {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path), "mode": "chain", "timeout": 120},
        release="v2-broken", broken=True)
    print(f"chain broken: task {outcome['seconds']:.2f}s, {result.summary(max_failures=2)}")
    assert outcome.get("failed"), outcome
    assert outcome["seconds"] < 10
    assert "chain reload failed" in outcome["msg"] and "respawned without an application" in outcome["msg"]
    assert any(not w["apps"] for w in outcome["snapshot"]["workers"])


@pytest.mark.timeout(120)
def test_crash_looping_workers_fail_the_task(ansible, tmp_path):
    """An app that kills its process while importing never accepts: the respawn count gives it away."""
    with UwsgiInstance(tmp_path / "crash", processes=2, threads=1, import_delay=0.1) as uwsgi:
        uwsgi.app_path.write_text("import os\nos._exit(1)\n")
        (outcome,) = ansible.run_tasks([{"graceful.wsgi.uwsgi_reload": {
            "master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path), "timeout": 60}}])
    assert outcome.get("failed"), outcome
    assert "keeps respawning" in outcome["msg"], outcome["msg"]
    assert outcome["seconds"] < 15


@pytest.mark.timeout(120)
def test_bad_input_fails_fast_and_names_the_path(ansible, uwsgi, tmp_path):
    lonely_fifo = tmp_path / "nobody-reads.fifo"
    os.mkfifo(lonely_fifo, 0o600)
    regular = tmp_path / "regular-file"
    regular.write_text("")
    missing = tmp_path / "missing"
    stats = str(uwsgi.stats_path)
    cases = [
        ({"master_fifo": str(missing), "stats": stats}, f"master_fifo={missing}: does not exist"),
        ({"master_fifo": str(regular), "stats": stats}, f"master_fifo={regular}: not a FIFO (a regular file)"),
        ({"master_fifo": str(lonely_fifo), "stats": stats}, f"master_fifo={lonely_fifo}: no process reads this FIFO"),
        ({"master_fifo": str(lonely_fifo), "wait": False}, f"master_fifo={lonely_fifo}: no process reads this FIFO"),
        ({"master_fifo": str(uwsgi.fifo_path), "stats": str(missing)}, f"stats={missing}: no such socket"),
        ({"master_fifo": str(uwsgi.fifo_path), "stats": str(regular)}, f"stats={regular}: connection refused"),
        ({"master_fifo": str(uwsgi.fifo_path), "stats": "127.0.0.1:9"}, "stats=127.0.0.1:9: connection refused"),
        ({"touch_file": str(missing), "stats": stats}, f"touch_file={missing}: does not exist"),
        ({"touch_file": str(tmp_path), "stats": stats}, f"touch_file={tmp_path}: not a regular file (a directory)"),
        ({"pidfile": str(missing), "stats": stats, "mode": "graceful"}, f"pidfile={missing}: cannot be read"),
        ({"master_fifo": str(uwsgi.fifo_path), "stats": stats, "mode": "rolling", "max_unavailable": "150%"}, "max_unavailable=150%"),
        ({"pidfile": str(uwsgi.pidfile), "stats": stats, "mode": "chain"}, "mode is chain but any of the following are missing: master_fifo, touch_file"),
    ]
    pids_before = {w["pid"] for w in uwsgi.workers()}
    outcomes = ansible.run_tasks([{"graceful.wsgi.uwsgi_reload": args} for args, _expected in cases])
    for (args, expected), outcome in zip(cases, outcomes):
        assert outcome.get("failed"), (args, outcome)
        assert expected in outcome["msg"], (args, outcome["msg"])
        assert outcome["seconds"] < REFUSED_TASK_SECONDS, (args, outcome["seconds"])
    assert {w["pid"] for w in uwsgi.workers()} == pids_before, "a rejected call must not touch the instance"


@pytest.mark.timeout(120)
def test_permission_denied_names_the_path(ansible, uwsgi):
    """As an unprivileged user the root-owned FIFO (mode 0600) and the stats socket are refused."""
    as_nobody = {"become": True, "become_method": "ansible.builtin.su", "become_user": "nobody",
                 "become_flags": "-s /bin/sh", "vars": {"ansible_python_interpreter": "/usr/bin/python3"}}
    os.chmod(uwsgi.stats_path, 0o600)
    outcomes = ansible.run_tasks([
        dict({"graceful.wsgi.uwsgi_reload": {"master_fifo": str(uwsgi.fifo_path), "wait": False}}, **as_nobody),
        dict({"graceful.wsgi.uwsgi_reload": {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path)}}, **as_nobody),
        dict({"graceful.wsgi.uwsgi_info": {"stats": str(uwsgi.stats_path)}}, **as_nobody),
    ])
    assert f"master_fifo={uwsgi.fifo_path}: permission denied" in outcomes[0]["msg"], outcomes[0]
    assert f"stats={uwsgi.stats_path}: permission denied" in outcomes[1]["msg"]
    assert f"stats={uwsgi.stats_path}: permission denied" in outcomes[2]["msg"]
    assert all(o["seconds"] < REFUSED_TASK_SECONDS for o in outcomes), [o["seconds"] for o in outcomes]


@pytest.mark.timeout(120)
def test_pidfile_naming_another_live_process_is_never_signalled(ansible, uwsgi, tmp_path):
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        fake_pidfile = tmp_path / "stale.pid"
        fake_pidfile.write_text(f"{bystander.pid}\n")
        outcomes = ansible.run_tasks([
            {"graceful.wsgi.uwsgi_reload": {"pidfile": str(fake_pidfile), "mode": "graceful", "wait": False}},
            {"graceful.wsgi.uwsgi_reload": {"pidfile": str(fake_pidfile), "stats": str(uwsgi.stats_path), "mode": "graceful"}},
        ])
        assert f"names pid {bystander.pid} (sleep 60), which is not a uWSGI process" in outcomes[0]["msg"]
        assert f"names pid {bystander.pid}, but the master answering stats={uwsgi.stats_path} is pid {uwsgi.master_pid}" in outcomes[1]["msg"]
        assert bystander.poll() is None, "the bystander process must survive untouched"
    finally:
        bystander.kill()
        bystander.wait()
    dead = subprocess.Popen(["true"])
    dead.wait()
    dead_pidfile = tmp_path / "dead.pid"
    dead_pidfile.write_text(f"{dead.pid}\n")
    (outcome,) = ansible.run_tasks([{"graceful.wsgi.uwsgi_reload": {"pidfile": str(dead_pidfile), "mode": "graceful", "wait": False}}])
    assert f"names pid {dead.pid}, which is not running (stale pidfile)" in outcome["msg"]


@pytest.mark.timeout(120)
def test_check_mode_reports_and_sends_nothing(ansible, uwsgi):
    pids = {w["pid"] for w in uwsgi.workers()}
    mtime = os.stat(uwsgi.touch_chain_path).st_mtime
    uwsgi.set_release("v2")
    outcomes = ansible.run_tasks([
        {"graceful.wsgi.uwsgi_reload": {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path)}, "check_mode": True},
        {"graceful.wsgi.uwsgi_reload": {"touch_file": str(uwsgi.touch_chain_path), "stats": str(uwsgi.stats_path)}, "check_mode": True},
        {"graceful.wsgi.uwsgi_reload": {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path), "mode": "rolling",
                                        "max_unavailable": 2}, "check_mode": True},
        {"graceful.wsgi.uwsgi_info": {"stats": str(uwsgi.stats_path)}, "check_mode": True},
    ])
    assert all(not o.get("failed") for o in outcomes), outcomes
    assert outcomes[0]["msg"].startswith("would reload (chain) via master_fifo")
    assert outcomes[2]["msg"].startswith("would reload (rolling) via SIGHUP to each worker, at most 2 at a time")
    assert outcomes[3]["master_pid"] == uwsgi.master_pid
    time.sleep(1.5)  # uWSGI checks touch files about once a second; give a stray touch time to show
    assert {w["pid"] for w in uwsgi.workers()} == pids
    assert os.stat(uwsgi.touch_chain_path).st_mtime == mtime
    assert not sample_serving_pids(uwsgi.base_url, pids, "v1")["wrong"]


@pytest.mark.timeout(120)
def test_rolling_and_chain_refuse_an_instance_without_lazy_apps(ansible, tmp_path):
    with UwsgiInstance(tmp_path / "prefork", processes=2, threads=1, lazy_apps=False, import_delay=0.0) as uwsgi:
        pids = {w["pid"] for w in uwsgi.workers()}
        outcomes = ansible.run_tasks([
            {"graceful.wsgi.uwsgi_reload": {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path), "mode": mode}}
            for mode in ("rolling", "chain")
        ])
        for outcome in outcomes:
            assert "needs lazy-apps" in outcome["msg"], outcome
        assert {w["pid"] for w in uwsgi.workers()} == pids


@pytest.mark.timeout(120)
def test_uwsgi_info_reports_the_real_instance(ansible, uwsgi):
    (info,) = ansible.run_tasks([{"graceful.wsgi.uwsgi_info": {"stats": str(uwsgi.stats_path)}}])
    assert not info.get("failed"), info
    assert info["master_pid"] == uwsgi.master_pid
    assert info["version"] == "2.0.31"
    assert [w["pid"] for w in info["workers"]] == [w["pid"] for w in uwsgi.workers()]
    assert all(w["apps_loaded"] == 1 and w["accepting"] for w in info["workers"])
    assert info["sockets"][0]["name"] == f"127.0.0.1:{uwsgi.port}"

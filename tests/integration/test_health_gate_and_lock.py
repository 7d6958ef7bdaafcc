"""health_gate against a real HTTP server, deploy_lock on a real file, both from the installed collection.

health_gate runs through ansible-playbook against ``http.server`` on an ephemeral port of 127.0.0.1;
deploy_lock through ansible-playbook for taking, refusing and releasing, and as concurrent module
processes (the module executed directly, as ansible does on a target) for the O_EXCL race.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# health_gate runs on localhost: a proxy from the environment must not be asked for 127.0.0.1.
NO_PROXY = {"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}


class Health:
    """A health endpoint that answers 503 to its first ``failing`` requests, then 200 (never, when None)."""

    def __init__(self, failing: int | None) -> None:
        self.failing = failing
        self.requests = 0
        self.lock = threading.Lock()
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with health.lock:
                    health.requests += 1
                    healthy = health.failing is not None and health.requests > health.failing
                body = b"ok release v5\n" if healthy else b"unhealthy: release v4\n"
                self.send_response(200 if healthy else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Health:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(60)
def test_health_gate_on_a_real_server(ansible):
    with Health(failing=3) as recovering, Health(failing=None) as broken:
        passed, failed = ansible.run_tasks([
            {"graceful.wsgi.health_gate": {"url": recovering.url, "successes": 3, "interval": 0.1, "timeout": 10,
                                           "body_regex": r"release v5\b"}, "environment": NO_PROXY},
            {"graceful.wsgi.health_gate": {"url": broken.url, "interval": 0.1, "timeout": 2},
             "environment": NO_PROXY, "check_mode": True},
        ])
    print(f"recovering: {passed['msg']} ({passed['seconds']:.2f}s); broken: {failed['msg']} ({failed['seconds']:.2f}s)")

    assert not passed.get("failed"), passed
    assert (passed["attempts"], passed["consecutive"], passed["failures"]) == (6, 3, 3)
    assert recovering.requests == 6
    assert (passed["status"], passed["body"]) == (200, "ok release v5\n")
    assert passed["last_failure"] == "HTTP 503 'unhealthy: release v4'"
    assert passed["changed"] is False

    assert failed.get("failed"), failed
    assert failed["msg"].startswith(f"health gate failed: {broken.url} did not answer 3 consecutive successes "
                                    f"within 2 s (best run 0, {failed['attempts']} attempts)")
    assert failed["msg"].endswith("last failure: HTTP 503 'unhealthy: release v4'")
    assert failed["attempts"] == broken.requests >= 10
    # The gate's own clock stops at its timeout; the task around it adds ansible's start of the module, which takes
    # longer on a host whose cores also run another load (make test runs the compat runs beside these tests).
    assert 2.0 <= failed["elapsed"] < 2.5 and failed["seconds"] < failed["elapsed"] + 3.0
    assert failed["status"] == 503 and failed["changed"] is False


@pytest.mark.timeout(60)
def test_deploy_lock_take_refuse_release(ansible, tmp_path):
    path = str(tmp_path / "deploy.lock")
    alice = {"controller": "ctl1", "user": "alice", "release": "v2", "playbook": "deploy"}
    lock = "graceful.wsgi.deploy_lock"
    taken, check_release, refused, released, gone = ansible.run_tasks([
        {lock: {"path": path, "run_id": "run-a", "holder": alice}},
        {lock: {"path": path, "run_id": "run-a", "state": "absent"}, "check_mode": True},
        {lock: {"path": path, "run_id": "run-b", "holder": {"user": "bob"}}},
        {lock: {"path": path, "run_id": "run-a", "state": "absent"}},
        {lock: {"path": str(tmp_path / "missing" / "deploy.lock"), "run_id": "run-a"}},
    ])

    assert taken["changed"] and taken["acquired"] and taken["holder"]["user"] == "alice", taken
    assert check_release["changed"] and check_release["msg"] == f"would release deploy lock {path}"
    assert refused.get("failed") and not refused["acquired"], refused
    assert refused["msg"].startswith(f"deploy lock {path} is held by run run-a: user alice on controller ctl1 since "
                                     f"{taken['holder']['acquired_at']} (release v2, playbook deploy): its journal is "
                                     "empty (it had not touched a host); the lock is ")
    assert refused["msg"].endswith("Wait for that run to end; if it died, set break_lock=true to take the lock and "
                                   "reconcile what its journal shows.")
    assert refused["holder"] == taken["holder"]
    assert released["changed"] and not released.get("failed"), released
    assert not os.path.exists(path)
    assert gone.get("failed") and gone["msg"] == f"path={tmp_path}/missing/deploy.lock: directory {tmp_path}/missing does not exist"


@pytest.mark.timeout(60)
def test_deploy_lock_concurrent_module_processes_one_winner(installed_collections, tmp_path):
    """Module processes started together on one path: exactly one takes the lock."""
    module = installed_collections / "ansible_collections" / "graceful" / "wsgi" / "plugins" / "modules" / "deploy_lock.py"
    path = tmp_path / "deploy.lock"
    env = dict(os.environ, PYTHONPATH=str(installed_collections))
    processes = []
    for n in range(6):
        args = tmp_path / f"args-{n}.json"
        args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"path": str(path), "run_id": f"run-{n}"}}))
        processes.append(subprocess.Popen([sys.executable, str(module), str(args)], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    results = [json.loads(process.communicate(timeout=30)[0]) for process in processes]

    winners = [result for result in results if not result.get("failed")]
    assert len(winners) == 1, results
    holder = json.loads(Path(path).read_text())
    assert holder["run_id"] == winners[0]["holder"]["run_id"]
    for result in results:
        if result.get("failed"):
            assert result["holder"]["run_id"] == holder["run_id"]
            assert result["msg"].startswith(f"deploy lock {path} is held by run {holder['run_id']}")

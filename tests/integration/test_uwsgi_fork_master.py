"""Why uwsgi_reload refuses mode=fork: uWSGI's fork-master, measured on real uWSGI under load.

The Master FIFO docs describe the trick: ``1f`` to the FIFO of slot 0 moves the old master to the FIFO of slot 1
and forks it; the copy re-executes uWSGI with the same options, inherits the listening sockets, binds the FIFO of
slot 0 and the stats socket, and loads the code on disk; ``q`` to the FIFO of slot 1 then shuts the old master down
gracefully. These tests do exactly that while requests run (concurrency 10, slow requests in flight).

What it does well: no request fails and the new workers serve the new release. What rules it out as a deploy the
module could prove:
- the forked master runs as a reload (uWSGI skips the pidfile then), so the pidfile still names the old master
  after that master has exited;
- with ``vacuum`` (the uwsgi role sets it) the old master's exit removes the pidfile and the stats socket of the
  new master, which can then be neither proven nor driven, and the unix socket it inherited, which nginx would
  connect to.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import SLOW_SECONDS
from tests.support.ansible_runner import REFUSED_TASK_SECONDS, PlaybookRunner
from tests.support.loadgen import LoadGenerator, sample_serving_pids
from tests.support.process import is_alive, poll_until
from tests.support.uwsgi_instance import UwsgiInstance

FORK_REFUSAL_START = "mode=fork is refused: uWSGI's fork-master (FIFO 'f') cannot carry a deploy with proof."


def write_fifo(path: Path, commands: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, commands)
    finally:
        os.close(fd)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("vacuum", [False, True], ids=["without-vacuum", "with-vacuum"])
def test_fork_master_serves_the_new_code_but_leaves_nothing_to_prove_it(
        ansible: PlaybookRunner, tmp_path: Path, vacuum: bool) -> None:
    slot1 = tmp_path / "instance" / "master-slot1.fifo"
    uwsgi = UwsgiInstance(tmp_path / "instance", processes=4, threads=2, lazy_apps=True, import_delay=0.3,
                          extra_options={"master-fifo": str(slot1), "vacuum": vacuum}, unix_socket=True)
    unix_socket = uwsgi.unix_socket_path
    uwsgi.start()
    old_master = uwsgi.stats()["pid"]
    old_workers = {worker["pid"] for worker in uwsgi.workers()}
    new_master = None
    try:
        refused = ansible.run_module("uwsgi_reload", {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path),
                                                      "mode": "fork"})
        assert refused.get("failed") and refused["msg"].startswith(FORK_REFUSAL_START), refused
        assert refused["seconds"] < REFUSED_TASK_SECONDS
        # Lost: nothing. Left: the same master and workers.
        assert uwsgi.stats()["pid"] == old_master and {w["pid"] for w in uwsgi.workers()} == old_workers

        load = LoadGenerator(uwsgi.base_url, concurrency=10, slow_clients=2, slow_seconds=SLOW_SECONDS,
                             min_requests=5000, max_requests=150000, max_seconds=120)
        load.start()
        try:
            poll_until(lambda: load.fast_completed >= 300, 20, "warm-up traffic")
            uwsgi.set_release("v2")
            write_fifo(uwsgi.fifo_path, b"1f")

            def new_master_serves() -> bool:
                try:
                    stats = uwsgi.stats()
                except (OSError, ValueError):
                    return False
                return stats["pid"] != old_master and len(stats["workers"]) == 4 and all(
                    worker["accepting"] for worker in stats["workers"])

            poll_until(new_master_serves, 30, "the forked master's workers accepting")
            new_master = uwsgi.stats()["pid"]
            new_workers = {worker["pid"] for worker in uwsgi.workers()}
            write_fifo(slot1, b"q")
            poll_until(lambda: not is_alive(old_master), 60, "the old master's graceful exit")
        finally:
            result = load.stop()
        # Once the load's slow requests no longer hold the threads of a worker.
        sampled = sample_serving_pids(uwsgi.base_url, new_workers, "v2")
        print(f"fork-master, vacuum={vacuum}: old master {old_master} -> {new_master}; {result.summary()}")

        assert result.failed == 0, result.summary()
        assert not sampled["missing"] and not sampled["wrong"] and not sampled["errors"], sampled
        if vacuum:
            assert not uwsgi.pidfile.exists(), "the old master's vacuum removed the new master's pidfile"
            assert not uwsgi.stats_path.exists(), "the old master's vacuum removed the new master's stats socket"
            assert not unix_socket.exists(), "the old master's vacuum removed the unix socket the new one serves on"
        else:
            assert uwsgi.pidfile.read_text().strip() == str(old_master), "the pidfile names the exited master"
            assert uwsgi.stats()["pid"] == new_master and unix_socket.exists()
    finally:
        if new_master is not None and is_alive(new_master):
            # The forked master started a session of its own: stop() only reaches the first one's group.
            os.killpg(new_master, signal.SIGKILL)
        uwsgi.stop()

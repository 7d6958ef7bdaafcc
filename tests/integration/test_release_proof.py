"""release_proof on a real gunicorn and a real uWSGI serving an app_root laid out as the release role does.

``<app_root>/current`` is switched by renaming a new symlink over it; the servers load the app through it
(gunicorn ``--chdir <app_root>/current``, uWSGI ``chdir2`` with lazy-apps). What the module proves is checked
against what the workers answer over HTTP, and against their PIDs before and after the reload.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.demo_app import write_release
from tests.support.gunicorn_instance import gunicorn_version
from tests.support.loadgen import sample_serving_pids
from tests.support.process import poll_until

GUNICORN = "27.0.1"
WORKERS = 2
# Not the servers' or the demo app's variables, which would point them at foreign config or code.
SCRUBBED_ENV = ("GUNICORN_PID", "GUNICORN_FD", "GUNICORN_CMD_ARGS", "LISTEN_FDS", "LISTEN_PID", "PYTHONPATH",
                "PYTHONHOME", "UWSGI_RELOADS")
# A request an old worker is still serving when the HUP comes: the proof must wait for that worker to exit.
SLOW_SECONDS = 6
# An example extension nothing imports by itself: a master importing it from a release's venv maps it for good.
EXTENSION_CANDIDATES = ("xxlimited", "xxlimited_35", "_lsprof")


class AppRoot:
    """``releases/v1`` and ``releases/v2`` (each the demo app), ``current`` -> ``releases/v1``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = path / "current"
        for name in ("v1", "v2"):
            (path / "releases" / name).mkdir(parents=True)
            write_release(path / "releases" / name / "app.py", name)
        self.switch("v1")

    def release(self, name: str) -> str:
        return str(self.path / "releases" / name)

    def switch(self, name: str) -> float:
        """Point current to ``name`` the way the release role does; returns the switch time (the link's mtime)."""
        staged = self.path / f".current-{name}"
        os.symlink(f"releases/{name}", staged)
        os.rename(staged, self.current)
        return os.lstat(self.current).st_mtime


class Server:
    """One master started in its own session; stop() kills the whole session."""

    def __init__(self, argv: list[str], workdir: Path, port: int) -> None:
        self.argv = argv
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def master(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workers(self) -> set[int]:
        """Live children of the master, read from every thread's children list."""
        found: set[int] = set()
        for task in Path(f"/proc/{self.master}/task").iterdir():
            try:
                found.update(int(pid) for pid in (task / "children").read_text().split())
            except OSError:
                continue
        return {pid for pid in found if _state(pid) not in (None, "Z")}

    def wait_serving(self, release: str, old: set[int] = frozenset(), timeout: float = 20) -> set[int]:
        """The workers, once there are WORKERS of them, none in ``old``, each answering with ``release``."""

        def probe() -> set[int] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            pids = self.workers()
            if len(pids) != WORKERS or pids & old:
                return None
            sample = sample_serving_pids(self.base_url, pids, release, max_seconds=2)
            return pids if not sample["missing"] and not sample["wrong"] else None

        return poll_until(probe, timeout, f"{WORKERS} workers serving {release}", on_timeout=self.log_tail)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.process is None:
            return
        # The group lives as long as the unreaped master, so its id cannot have been reused yet.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None


def _state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sockets(pid: int) -> int:
    """How many sockets ``pid`` holds: an idle sync worker holds its listeners, a busy one its client too."""
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for entry in fd_dir.iterdir():
        try:
            count += os.readlink(entry).startswith("socket:")
        except OSError:
            continue
    return count


class SlowRequest(threading.Thread):
    """One GET /slow on its own connection; ``answer`` is the JSON body once it is done."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.status: int | None = None
        self.answer: dict = {}

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SLOW_SECONDS + 30)
        try:
            connection.request("GET", f"/slow?seconds={SLOW_SECONDS}", headers={"Connection": "close"})
            reply = connection.getresponse()
            self.status = reply.status
            self.answer = json.loads(reply.read())
        finally:
            connection.close()


def _started_after(pid: int, moment: float) -> bool:
    """Whether ``pid`` started after ``moment``, by the kernel's clock (independent of the module)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot + ticks / os.sysconf("SC_CLK_TCK") >= moment - 0.01


@pytest.fixture
def app_root(tmp_path: Path) -> AppRoot:
    return AppRoot(tmp_path / "demo")


def start_gunicorn(gunicorn_bins: dict[str, Path], app_root: AppRoot, workdir: Path,
                   config: Path | None = None) -> Server:
    gunicorn = gunicorn_bins[GUNICORN]
    port = _free_port()
    argv = [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--worker-class", "sync",
            "--pid", str(workdir / "gunicorn.pid"), "--chdir", str(app_root.current), "--graceful-timeout", "30"]
    if gunicorn_version(gunicorn) >= (24,):
        argv.append("--no-control-socket")  # its default path is shared by every gunicorn of the user
    if config is not None:
        argv += ["--config", str(config)]
    server = Server([*argv, "app:application"], workdir, port)
    server.start()
    return server


@pytest.fixture
def gunicorn_server(gunicorn_bins, app_root: AppRoot, tmp_path: Path):
    server = start_gunicorn(gunicorn_bins, app_root, tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_gunicorn_hup_is_proven_only_once_every_worker_runs_the_new_release(ansible, gunicorn_server, app_root):
    v1_workers = gunicorn_server.wait_serving("v1")
    master = gunicorn_server.master

    (v1,) = ansible.run_tasks([{"graceful.wsgi.release_proof": {
        "app_root": str(app_root.path), "master_pid": master, "release": "v1", "min_workers": WORKERS}}])
    assert not v1.get("failed"), v1["msg"]
    assert v1["proven"] and not v1["changed"] and v1["release"] == "v1"
    assert v1["release_path"] == app_root.release("v1") and v1["master_pid"] == master
    assert {worker["pid"] for worker in v1["workers"]} == v1_workers
    assert all(worker["cwd"] == app_root.release("v1") for worker in v1["workers"])

    switched_at = app_root.switch("v2")
    # Switched but not reloaded: the workers still run v1, which the module must name, not wait out.
    (stale,) = ansible.run_tasks([{"graceful.wsgi.release_proof": {
        "app_root": str(app_root.path), "master_pid": master, "timeout": 1, "poll_interval": 0.2}}])
    print(f"switched, not reloaded: {stale['msg']}")
    assert stale.get("failed") and not stale["proven"], stale
    assert stale["msg"].startswith(f"release proof failed for master {master}: expected every worker in "
                                   f"{app_root.release('v2')} (current switched "), stale["msg"]
    for pid in v1_workers:
        assert f"worker {pid} runs in {app_root.release('v1')}, started " in stale["msg"], stale["msg"]
    assert "before the switch" in stale["msg"] and "not proven within timeout=1.0s" in stale["msg"]
    assert 1.0 <= stale["elapsed"] < 3
    assert sorted(worker["pid"] for worker in stale["workers"]) == sorted(v1_workers)
    assert all(worker["started_after_switch"] < 0 for worker in stale["workers"])

    # An old worker busy with a slow request outlives the HUP: the module must wait for it, then prove.
    idle = {pid: _sockets(pid) for pid in v1_workers}
    slow = SlowRequest(gunicorn_server.port)
    slow.start()
    poll_until(lambda: any(_sockets(pid) > idle[pid] for pid in v1_workers), 10, "an old worker to take the slow request")
    os.kill(master, signal.SIGHUP)
    (v2,) = ansible.run_tasks([{"graceful.wsgi.release_proof": {
        "app_root": str(app_root.path), "master_pid": master, "release": "v2", "min_workers": WORKERS,
        "timeout": 20, "poll_interval": 0.1}}])
    print(f"after HUP ({v2['elapsed']} s): {v2['msg']}")
    assert not v2.get("failed"), v2["msg"]
    assert v2["proven"] and v2["release"] == "v2" and v2["release_path"] == app_root.release("v2")
    assert v2["msg"].startswith(f"release v2 proven for master {master}: {WORKERS} workers in "
                                f"{app_root.release('v2')}, started after the switch at "), v2["msg"]
    slow.join(SLOW_SECONDS + 30)
    assert slow.status == 200 and slow.answer["release"] == "v1" and slow.answer["pid"] in v1_workers
    assert v2["elapsed"] >= 1, "the old worker serving the slow request must have been waited for"
    proven = {worker["pid"] for worker in v2["workers"]}
    assert len(proven) == WORKERS and not proven & v1_workers
    for worker in v2["workers"]:
        assert worker["cwd"] == app_root.release("v2") and worker["stray_mapped_files"] == []
        assert worker["started_after_switch"] > 0 and _started_after(worker["pid"], switched_at)

    # What was proven from /proc is what the workers serve.
    assert gunicorn_server.wait_serving("v2", old=v1_workers, timeout=10) == proven

    # The health gate and the proof in one task, as the rollout verifies a host: the gate's requests reach the
    # real workers, and a gate that fails leaves the proof untried.
    health = {"url": f"{gunicorn_server.base_url}/", "successes": 3, "timeout": 10, "interval": 0.1}
    (verified,) = ansible.run_tasks([{"graceful.wsgi.release_proof": {
        "app_root": str(app_root.path), "master_pid": master, "release": "v2", "min_workers": WORKERS,
        "health": dict(health, body_regex='"release": "v2"')}}])
    assert not verified.get("failed"), verified["msg"]
    assert verified["proven"] and {worker["pid"] for worker in verified["workers"]} == proven
    assert verified["health"]["passed"] and verified["health"]["consecutive"] == 3
    assert verified["health"]["status"] == 200 and "v2" in verified["health"]["body"]
    (unhealthy,) = ansible.run_tasks([{"graceful.wsgi.release_proof": {
        "app_root": str(app_root.path), "master_pid": master, "release": "v2",
        "health": dict(health, body_regex='"release": "v9"', timeout=1)}}])
    assert unhealthy.get("failed") and not unhealthy["proven"] and "workers" not in unhealthy, unhealthy
    assert unhealthy["msg"].startswith(f"health gate failed: {health['url']} did not answer 3 consecutive"), unhealthy
    assert unhealthy["health"]["passed"] is False and unhealthy["health"]["attempts"] >= 2


def _extension_module(python: Path) -> tuple[str, Path]:
    """(name, file) of an extension module of ``python`` that nothing imports on its own."""
    script = ("import importlib.util, sys\n"
              "for name in sys.argv[1:]:\n"
              "    spec = importlib.util.find_spec(name)\n"
              "    if spec and spec.origin and spec.origin.endswith('.so'):\n"
              "        print(name, spec.origin)\n"
              "        break\n")
    out = subprocess.run([str(python), "-c", script, *EXTENSION_CANDIDATES], capture_output=True, text=True,
                         check=True).stdout.split()
    if not out:
        pytest.skip(f"{python} has none of {EXTENSION_CANDIDATES} as an extension module")
    return out[0], Path(out[1])


@pytest.mark.timeout(120)
def test_gunicorn_hup_keeps_what_the_master_loaded_from_the_old_release(ansible, gunicorn_bins, app_root, tmp_path):
    """A C extension the master imported from v1's venv stays mapped in every worker it forks after a HUP."""
    name, origin = _extension_module(gunicorn_bins[GUNICORN].parent / "python")
    for release in ("v1", "v2"):
        site = Path(app_root.release(release)) / "venv" / "lib" / "site-packages"
        site.mkdir(parents=True)
        (site / origin.name).write_bytes(origin.read_bytes())
        # gunicorn reads its config in the master, at start and again at each HUP.
        (Path(app_root.release(release)) / "gunicorn.conf.py").write_text(
            "import importlib, os, sys\n"
            "sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), 'venv', 'lib', "
            "'site-packages'))\n"
            f"importlib.import_module({name!r})\n")
    server = start_gunicorn(gunicorn_bins, app_root, tmp_path, config=app_root.current / "gunicorn.conf.py")
    try:
        v1_workers = server.wait_serving("v1")
        app_root.switch("v2")
        os.kill(server.master, signal.SIGHUP)
        v2_workers = server.wait_serving("v2", old=v1_workers)
        (run,) = ansible.run_tasks([{"graceful.wsgi.release_proof": {
            "app_root": str(app_root.path), "master_pid": server.master, "timeout": 0.5, "poll_interval": 0.1}}])
    finally:
        server.stop()
    stray = f"{app_root.release('v1')}/venv/lib/site-packages/{origin.name}"
    print(f"extension from v1 in the master: {run['msg']}")
    assert run.get("failed") and not run["proven"], run
    for pid in v2_workers:
        assert f"worker {pid} maps a file of another release: {stray}" in run["msg"], run["msg"]
    for worker in run["workers"]:
        assert worker["cwd"] == app_root.release("v2") and worker["started_after_switch"] > 0
        assert worker["stray_mapped_files"] == [stray]


@pytest.mark.timeout(120)
def test_uwsgi_chdir2_chain_reload_is_proven(ansible, app_root, tmp_path):
    port = _free_port()
    ini = tmp_path / "uwsgi.ini"
    fifo = tmp_path / "master.fifo"
    ini.write_text("\n".join([
        "[uwsgi]",
        "master = true",
        f"processes = {WORKERS}",
        "lazy-apps = true",
        f"http-socket = 127.0.0.1:{port}",
        f"wsgi-file = {app_root.current}/app.py",
        f"chdir2 = {app_root.current}",
        f"master-fifo = {fifo}",
        "die-on-term = true",
        "disable-logging = true",
    ]) + "\n")
    server = Server([str(Path(sys.executable).with_name("uwsgi")), "--ini", str(ini)], tmp_path, port)
    server.start()
    try:
        v1_workers = server.wait_serving("v1")
        switched_at = app_root.switch("v2")
        fifo.write_text("c")  # chain reload: one worker after the other, each loading the app anew
        outcomes = ansible.run_tasks([
            {"graceful.wsgi.release_proof": {"app_root": str(app_root.path), "master_pid": server.master,
                                             "release": "v2", "min_workers": WORKERS, "timeout": 20,
                                             "poll_interval": 0.1}},
        ])
        v2_workers = server.wait_serving("v2", old=v1_workers, timeout=10)
    finally:
        server.stop()
    (run,) = outcomes
    print(f"uWSGI chain reload ({run['elapsed']} s): {run['msg']}")
    assert not run.get("failed"), run["msg"]
    assert {worker["pid"] for worker in run["workers"]} == v2_workers
    for worker in run["workers"]:
        assert worker["cwd"] == app_root.release("v2") and worker["started_after_switch"] > 0
    assert run["switched_at"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(switched_at)))

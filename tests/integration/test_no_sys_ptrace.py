"""The modules as root WITHOUT CAP_SYS_PTRACE, on a real gunicorn and a real uWSGI run by an unprivileged user.

That is root in a container with Docker's default capabilities. It may list another user's /proc/PID/fd,
but the kernel's ptrace access check keeps it from following that process's cwd, exe and fd links. Each
test first shows, in the very environment the modules run in (ansible-playbook under ``setpriv`` dropping
the capability from the bounding set), that a direct read of a worker's cwd is denied, and only then that
the modules prove what they prove elsewhere, reading what /proc denies them as the server's owner.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.ansible_runner import PlaybookRunner
from tests.support.demo_app import write_release
from tests.support.gunicorn_instance import gunicorn_version
from tests.support.loadgen import sample_serving_pids
from tests.support.process import poll_until
from tests.support.server_venvs import GUNICORN_LOCKS

APP_USER = 65534  # nobody
SETPRIV = shutil.which("setpriv")
NO_PTRACE = (str(SETPRIV), "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", "--")
CAP_SYS_PTRACE = 19
WORKERS = 2
SCRUBBED_ENV = ("GUNICORN_PID", "GUNICORN_FD", "GUNICORN_CMD_ARGS", "LISTEN_FDS", "LISTEN_PID", "PYTHONPATH",
                "PYTHONHOME", "UWSGI_RELOADS")
# Run in the modules' environment: prints the errno of a direct readlink of /proc/PID/cwd, or "read".
READLINK = ("import os, sys\n"
            "try:\n"
            "    os.readlink('/proc/%s/cwd' % sys.argv[1])\n"
            "except OSError as exc:\n"
            "    print(exc.errno)\n"
            "else:\n"
            "    print('read')\n")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the servers run as another user, the modules as root"),
    pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux) to drop CAP_SYS_PTRACE"),
]


@pytest.fixture
def ansible(installed_collections: Path, tmp_path: Path) -> PlaybookRunner:
    """Runs ansible-playbook, and so every module, as root without CAP_SYS_PTRACE."""
    return PlaybookRunner(installed_collections, tmp_path / "ansible", wrapper=NO_PTRACE)


@pytest.fixture
def shared() -> Path:
    """A directory the app user can reach (pytest's own temporary directories are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="graceful-no-ptrace-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class AppRoot:
    """``releases/<name>`` (each the demo app) for each name, ``current`` -> the first; root's, readable."""

    def __init__(self, path: Path, names: tuple[str, ...]) -> None:
        self.path = path
        self.current = path / "current"
        for name in names:
            (path / "releases" / name).mkdir(parents=True)
            write_release(path / "releases" / name / "app.py", name)
        self.switch(names[0])

    def release(self, name: str) -> str:
        return str(self.path / "releases" / name)

    def switch(self, name: str) -> None:
        staged = self.path / f".current-{name}"
        os.symlink(f"releases/{name}", staged)
        os.rename(staged, self.current)


def app_user_dir(path: Path) -> Path:
    path.mkdir()
    os.chown(path, APP_USER, APP_USER)
    return path


def runnable_by_others(path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return all(os.stat(directory).st_mode & 0o001 for directory in real.parents) and bool(os.stat(real).st_mode & 0o001)


def app_user_gunicorn(gunicorn: Path, where: Path) -> Path:
    """``gunicorn`` as the app user can run it. Its venv's interpreter may be where that user cannot go (a Python
    built under /root); then a venv of the system's python3 with the same packages (symlinked) stands in."""
    if runnable_by_others(gunicorn.parent / "python"):
        return gunicorn
    system = Path("/usr/bin/python3")
    if not system.exists() or not runnable_by_others(system):
        pytest.skip(f"neither {gunicorn.parent / 'python'} nor {system} can be run by uid {APP_USER}")
    venv = where / "gunicorn-venv"
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (packages,) = gunicorn.parent.parent.glob("lib/python3*/site-packages")
    for entry in packages.iterdir():
        if not entry.name.startswith("pip"):
            (site / entry.name).symlink_to(entry)
    script = venv / "bin" / "gunicorn"
    script.write_text(f"#!{venv / 'bin' / 'python'}\n" + gunicorn.read_text().split("\n", 1)[1])
    script.chmod(0o755)
    return script


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One master started as APP_USER in its own session; stop() kills the whole session."""

    def __init__(self, argv: list[str], run_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.run_dir = run_dir
        self.port = port
        self.log_path = run_dir / "server.out"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
        env.update(PYTHONDONTWRITEBYTECODE="1", HOME=str(self.run_dir), TMPDIR=str(self.run_dir), **self.extra_env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.run_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True, user=APP_USER,
                                            group=APP_USER, extra_groups=[])

    @property
    def master(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workers(self, master: int | None = None) -> set[int]:
        found: set[int] = set()
        for task in Path(f"/proc/{master or self.master}/task").iterdir():
            try:
                found.update(int(pid) for pid in (task / "children").read_text().split())
            except OSError:
                continue
        return {pid for pid in found if _state(pid) not in (None, "Z")}

    def wait_serving(self, release: str, old: set[int] = frozenset(), master: int | None = None) -> set[int]:
        """The master's workers, once there are WORKERS of them, none in ``old``, each answering ``release``."""

        def probe() -> set[int] | None:
            pids = self.workers(master)
            if len(pids) != WORKERS or pids & old:
                return None
            sample = sample_serving_pids(f"http://127.0.0.1:{self.port}", pids, release, max_seconds=2)
            return pids if not sample["missing"] and not sample["wrong"] else None

        return poll_until(probe, 30, f"{WORKERS} workers serving {release}", on_timeout=self.log_tail)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group outlives a master upgraded away
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


def assert_root_denied_without_cap_sys_ptrace(ansible: PlaybookRunner, pid: int) -> None:
    """In the modules' environment: root, CAP_SYS_PTRACE in no set, and /proc/PID/cwd denied (EACCES)."""
    status, readlink = ansible.run_tasks([
        {"ansible.builtin.command": {"argv": ["cat", "/proc/self/status"]}},
        {"ansible.builtin.command": {"argv": [sys.executable, "-c", READLINK, str(pid)]}},
    ])
    fields = dict(line.split(":", 1) for line in status["stdout"].splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == ["0", "0"], status["stdout"]
    for name in ("CapPrm", "CapEff", "CapBnd"):
        assert not int(fields[name], 16) & (1 << CAP_SYS_PTRACE), f"{name} still has CAP_SYS_PTRACE"
    assert int(fields["CapEff"], 16), "root without any capability is not the case under test"
    assert readlink["stdout"] == str(errno.EACCES), (
        f"root without CAP_SYS_PTRACE read /proc/{pid}/cwd of uid {APP_USER}: this kernel does not deny it, the "
        f"test would prove nothing ({readlink})")
    print(f"without CAP_SYS_PTRACE: readlink /proc/{pid}/cwd -> errno {readlink['stdout']} (EACCES); "
          f"CapEff {fields['CapEff'].strip()}")


def assert_proven(outcome: dict, release_dir: str, workers: set[int]) -> None:
    assert not outcome.get("failed"), outcome["msg"]
    assert outcome["proven"] and outcome["release_path"] == release_dir
    assert {worker["pid"] for worker in outcome["workers"]} == workers
    assert all(worker["cwd"] == release_dir and worker["stray_mapped_files"] == [] for worker in outcome["workers"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", tuple(GUNICORN_LOCKS), ids=lambda version: f"gunicorn-{version}")
def test_gunicorn_modules_as_root_without_cap_sys_ptrace(ansible, gunicorn_bins, shared, version):
    app = AppRoot(shared / "app", ("v1", "v2", "v3"))
    run_dir = app_user_dir(shared / "run")
    pidfile, log = run_dir / "gunicorn.pid", run_dir / "gunicorn.log"
    port = free_port()
    gunicorn = app_user_gunicorn(gunicorn_bins[version], shared)
    argv = [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--worker-class", "sync",
            "--pid", str(pidfile), "--chdir", str(app.current), "--error-logfile", str(log),
            "--graceful-timeout", "10"]
    if gunicorn_version(gunicorn_bins[version]) >= (24,):
        argv.append("--no-control-socket")
    server = Server([*argv, "app:application"], run_dir, port)
    server.start()
    try:
        v1 = server.wait_serving("v1")
        master = server.master
        assert_root_denied_without_cap_sys_ptrace(ansible, min(v1))

        info, proof = ansible.run_tasks([
            {"graceful.wsgi.gunicorn_info": {"pidfile": str(pidfile)}},
            {"graceful.wsgi.release_proof": {"app_root": str(app.path), "master_pid": master, "release": "v1",
                                             "min_workers": WORKERS, "timeout": 10}},
        ])
        assert not info.get("failed"), info["msg"]
        assert info["master_pid"] == master and sorted(w["pid"] for w in info["workers"]) == sorted(v1)
        assert info["workers_booted"] == WORKERS  # the heartbeat files, read through the workers' fd links
        # Its stdout and error log, found through the master's fd links and fdinfo.
        assert info["version"] == version and info["log_files"] == [str(server.log_path), str(log)]
        assert_proven(proof, app.release("v1"), v1)

        app.switch("v2")
        hup, proof = ansible.run_tasks([
            {"graceful.wsgi.gunicorn_reload": {"pidfile": str(pidfile), "mode": "hup", "timeout": 60}},
            {"graceful.wsgi.release_proof": {"app_root": str(app.path), "master_pid": master, "release": "v2",
                                             "min_workers": WORKERS, "timeout": 30, "poll_interval": 0.1}},
        ])
        assert not hup.get("failed"), hup["msg"]
        assert hup["msg"].startswith(f"hup complete, master {master}, {WORKERS} workers replaced"), hup["msg"]
        v2 = server.wait_serving("v2", old=v1)
        assert set(hup["workers_after"]) == v2
        assert_proven(proof, app.release("v2"), v2)

        app.switch("v3")
        upgrade, = ansible.run_tasks([
            {"graceful.wsgi.gunicorn_reload": {"pidfile": str(pidfile), "mode": "upgrade", "timeout": 60}}])
        assert not upgrade.get("failed"), upgrade["msg"]
        new_master = upgrade["master_pid"]
        assert new_master != master and upgrade["pidfile_handover"]
        assert pidfile.read_text().strip() == str(new_master) and pidfile.stat().st_uid == APP_USER
        v3 = server.wait_serving("v3", master=new_master)
        proof, = ansible.run_tasks([
            {"graceful.wsgi.release_proof": {"app_root": str(app.path), "master_pid": new_master, "release": "v3",
                                             "min_workers": WORKERS, "timeout": 30}}])
        assert_proven(proof, app.release("v3"), v3)
        print(f"gunicorn {version} as uid {APP_USER}, modules as root without CAP_SYS_PTRACE: {hup['msg']}; "
              f"{upgrade['msg']}; {proof['msg']}")
    finally:
        server.stop()


@pytest.mark.timeout(300)
def test_uwsgi_chain_reload_and_proof_as_root_without_cap_sys_ptrace(ansible, shared):
    """The proof reads each worker's cwd, hidden from root without CAP_SYS_PTRACE. lazy-apps is set only in the
    master's environment: where the kernel hides /proc/PID/environ too (some kernels let root read it, as they
    do maps), it is read as the master's owner, or the module would refuse mode=chain for a master that has it."""
    app = AppRoot(shared / "app", ("v1", "v2"))
    run_dir = app_user_dir(shared / "run")
    port = free_port()
    ini, fifo, stats = run_dir / "uwsgi.ini", run_dir / "master.fifo", run_dir / "stats.sock"
    ini.write_text("\n".join([
        "[uwsgi]",
        "master = true",
        f"processes = {WORKERS}",
        f"http-socket = 127.0.0.1:{port}",
        f"wsgi-file = {app.current}/app.py",
        f"chdir2 = {app.current}",
        f"master-fifo = {fifo}",
        f"stats = {stats}",
        "die-on-term = true",
        "disable-logging = true",
    ]) + "\n")
    server = Server([str(Path(sys.executable).with_name("uwsgi")), "--ini", str(ini)], run_dir, port,
                    env={"UWSGI_LAZY_APPS": "1"})
    server.start()
    try:
        v1 = server.wait_serving("v1")
        assert_root_denied_without_cap_sys_ptrace(ansible, server.master)
        app.switch("v2")
        reload, proof = ansible.run_tasks([
            {"graceful.wsgi.uwsgi_reload": {"master_fifo": str(fifo), "stats": str(stats), "mode": "chain",
                                            "timeout": 60}},
            {"graceful.wsgi.release_proof": {"app_root": str(app.path), "master_pid": server.master, "release": "v2",
                                             "min_workers": WORKERS, "timeout": 30, "poll_interval": 0.1}},
        ])
        assert not reload.get("failed"), reload["msg"]
        assert not any("lazy-apps" in warning for warning in reload.get("warnings", [])), reload["warnings"]
        v2 = server.wait_serving("v2", old=v1)
        assert_proven(proof, app.release("v2"), v2)
        print(f"uWSGI as uid {APP_USER}, modules as root without CAP_SYS_PTRACE: {reload['msg']}; {proof['msg']}")
    finally:
        server.stop()

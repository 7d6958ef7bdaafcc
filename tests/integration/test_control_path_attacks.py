"""The app user attacks the control paths root's uWSGI modules use: real processes, real users, real files.

The app user (nobody) owns the instance's runtime directory and runs code in it; root runs the modules. Each test
says what is protected, attacks it as the app user (or as a second user, daemon), and checks the real files and
processes afterwards, not only what the modules answered.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.ansible_runner import REFUSED_TASK_SECONDS
from tests.support.process import poll_until
from tests.support.uwsgi_instance import UwsgiInstance

APP_USER = 65534  # nobody
OTHER_USER = pwd.getpwnam("daemon").pw_uid  # a second user, neither root nor the app's
APP_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, out of the app user's reach
ROOT_FILE_CONTENT = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
FIFO_RACE_RUNS = 1000
MODULE_RACE_RUNS = 3
# One run of the driver sends one byte or refuses; the FIFO is never missing, so no run waits for a reader.
RUN_BOUND_SECONDS = 2.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the modules run as root, the attacker as nobody")

# Run as the app user: swaps master.fifo (a FIFO it reads) with a symlink to root's file, atomically
# (renameat2 RENAME_EXCHANGE), as fast as it can, until SIGTERM; reports its swaps and the bytes its FIFO got.
SWAPPER = r"""
import ctypes, json, os, signal, sys
run_dir, target, report = sys.argv[1:4]
os.chdir(run_dir)
os.mkfifo('master.fifo', 0o600)
reader = os.open('master.fifo', os.O_RDONLY | os.O_NONBLOCK)
os.symlink(target, 'swap')
libc = ctypes.CDLL(None, use_errno=True)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
swaps = received = 0

def drain():
    global received
    while True:
        try:
            chunk = os.read(reader, 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        received += len(chunk)

while not stopping:
    if libc.renameat2(-100, b'master.fifo', -100, b'swap', 2) != 0:
        sys.exit('renameat2: %s' % os.strerror(ctypes.get_errno()))
    swaps += 1
    if swaps % 1024 == 0:
        drain()
        with open('progress', 'w') as handle:
            handle.write(str(swaps))
drain()
with open(report, 'w') as handle:
    json.dump({'swaps': swaps, 'received': received}, handle)
"""

# Run as root: what root did before the fix (stat the path, then open it by path without O_NOFOLLOW), against the
# same attack. Prints how many tries it took to write into root's decoy, or 0 when it never did within the bound.
NAIVE_WRITER = r"""
import os, stat, sys, time
path, decoy = sys.argv[1:3]
original = open(decoy, 'rb').read()
tries, give_up = 0, time.monotonic() + 10
while time.monotonic() < give_up:
    tries += 1
    try:
        if stat.S_ISFIFO(os.stat(path).st_mode):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b'c')
            os.close(fd)
    except OSError:
        pass
    if open(decoy, 'rb').read() != original:
        print(tries)
        break
else:
    print(0)
"""

# Run as root: the uwsgi_reload driver, once per run, as the module calls it (master_fifo, wait=false).
FIFO_DRIVER = r"""
import json, sys, time
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi_reload
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import ReloadFailed
path, runs = sys.argv[1], int(sys.argv[2])
params = dict(master_fifo=path, touch_file=None, pidfile=None, stats=None, mode='chain', wait=False, timeout=5.0,
              poll_interval=0.1, max_unavailable=1)
outcomes = []
for _ in range(runs):
    started = time.monotonic()
    try:
        result = _uwsgi_reload.reload_instance(dict(params), lambda text: None, False)
        outcomes.append({'ok': True, 'msg': result['msg']})
    except ReloadFailed as exc:
        outcomes.append({'ok': False, 'msg': str(exc)})
    outcomes[-1]['seconds'] = time.monotonic() - started
print(json.dumps(outcomes))
"""

# Run as root: one uwsgi_vassals_reload run with its root lock directory somewhere else; prints the failure.
VASSALS_DRIVER = r"""
import json, sys
from ansible_collections.graceful.wsgi.plugins.module_utils import _emperor_reload
from ansible_collections.graceful.wsgi.plugins.module_utils._wait import ReloadFailed
_emperor_reload.ROOT_LOCK_DIR, emperor_dir, stats = sys.argv[1:4]
params = dict(emperor_dir=emperor_dir, emperor_stats=stats, fastrouter_stats=stats, vassal_suffix='.ini',
              min_active=1, timeout=5.0, poll_interval=0.1, vassals=None)
try:
    _emperor_reload.run(params, False)
    print(json.dumps({'msg': 'no failure'}))
except ReloadFailed as exc:
    print(json.dumps(dict(exc.details or {}, msg=str(exc))))
"""

# Run as the app user: a stats server answering, to every connection, as the uWSGI master whose pid it is given.
IMPOSTOR = r"""
import json, os, socket, sys
path, pid = sys.argv[1], int(sys.argv[2])
answer = json.dumps({'pid': pid, 'version': '2.0.31', 'workers': [
    {'id': 1, 'pid': pid + 1, 'accepting': 1, 'requests': 0, 'status': 'idle', 'respawn_count': 1, 'apps': [{}]}]})
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(16)
while True:
    conn, _ = server.accept()
    conn.sendall(answer.encode())
    conn.close()
"""


class Arena:
    """A root-owned directory (0755) the app user can reach, holding root's files and the app user's run/."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="graceful-attack-"))
        self.path.chmod(0o755)

    def root_file(self, name: str, content: bytes = ROOT_FILE_CONTENT) -> Path:
        path = self.path / name
        path.write_bytes(content)
        path.chmod(0o644)
        return path

    def app_dir(self, name: str) -> Path:
        path = self.path / name
        path.mkdir()
        os.chown(path, APP_USER, APP_USER)
        return path

    def script(self, name: str, text: str) -> Path:
        return self.root_file(name, text.encode())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture
def arena():
    if not os.access(APP_PYTHON, os.X_OK):
        pytest.fail(f"{APP_PYTHON} is needed to run the app user's attacks")
    place = Arena()
    try:
        yield place
    finally:
        place.remove()


def as_app_user(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(argv, user=APP_USER, group=APP_USER, extra_groups=[], stdin=subprocess.DEVNULL,
                            start_new_session=True, **kwargs)


def run_as_app_user(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, user=APP_USER, group=APP_USER, extra_groups=[], capture_output=True, text=True,
                          timeout=10, check=False)


def run_as_root(script: Path, args: list[str], collections: Path, timeout: float = 60) -> str:
    env = dict(os.environ, PYTHONPATH=str(collections), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def snapshot(path: Path) -> tuple[bytes, int, int]:
    status = os.lstat(path)
    return path.read_bytes(), status.st_mtime_ns, status.st_uid


class FifoSwapper:
    """The app user's swapping loop in ``run_dir``, between its FIFO and a symlink to ``target``."""

    def __init__(self, arena: Arena, run_dir: Path, target: Path) -> None:
        self.run_dir = run_dir
        self.fifo = run_dir / "master.fifo"
        self.report_path = run_dir / "report.json"
        self.script = arena.script(f"swapper-{run_dir.name}.py", SWAPPER)
        self.target = target
        self.process: subprocess.Popen | None = None
        self.report: dict = {}

    def __enter__(self) -> FifoSwapper:
        self.process = as_app_user([APP_PYTHON, str(self.script), str(self.run_dir), str(self.target),
                                    str(self.report_path)], stderr=subprocess.PIPE)

        def swapping() -> bool:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            return (self.run_dir / "progress").exists()

        poll_until(swapping, 10, "the app user's swapping loop to start")
        return self

    def __exit__(self, *exc_info) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if exc_info[0] is None:
            assert self.process.returncode == 0, self.process.stderr.read().decode()
            self.report = json.loads(self.report_path.read_text())


@pytest.mark.timeout(120)
def test_a_fifo_swapped_with_a_symlink_to_a_root_file_never_gets_roots_byte_into_it(ansible, installed_collections,
                                                                                    arena):
    """Protected: a file of root's that the app user's symlink points to. The app user swaps its FIFO (which it
    reads) and that symlink, atomically and as fast as it can, in its run directory, while root sends the FIFO
    command: 1,000 driver runs and 3 module runs. First, the same attack shows that root's old way (stat, then open
    by path without O_NOFOLLOW) writes into a root file at once."""
    decoy = arena.root_file("decoy")
    with FifoSwapper(arena, arena.app_dir("old-run"), decoy) as old:
        tries = int(run_as_root(arena.script("naive.py", NAIVE_WRITER), [str(old.fifo), str(decoy)],
                                installed_collections))
    assert tries > 0 and decoy.read_bytes() != ROOT_FILE_CONTENT, "the attack is harmless even to the old code"
    print(f"control: root's old stat-then-open wrote into root's decoy after {tries} tries "
          f"({decoy.read_bytes()[:12]!r}...)")

    target = arena.root_file("target")
    before = snapshot(target)
    run_dir = arena.app_dir("run")
    started = time.monotonic()
    with FifoSwapper(arena, run_dir, target) as swapper:
        driver_args = [str(swapper.fifo), str(FIFO_RACE_RUNS)]
        driver = json.loads(run_as_root(arena.script("driver.py", FIFO_DRIVER), driver_args, installed_collections))
        driver_seconds = time.monotonic() - started
        modules = ansible.run_tasks([{"graceful.wsgi.uwsgi_reload": {"master_fifo": str(swapper.fifo), "wait": False}}
                                     for _run in range(MODULE_RACE_RUNS)])
    attack_seconds = time.monotonic() - started

    assert snapshot(target) == before, "root's file changed: root wrote through the app user's symlink"
    assert swapper.report["swaps"] > 0
    outcomes = [(o["ok"], o["msg"], o["seconds"]) for o in driver]
    outcomes += [(not m.get("failed"), m["msg"], m["seconds"]) for m in modules]
    succeeded = [msg for ok, msg, _s in outcomes if ok]
    refused = [msg for ok, msg, _s in outcomes if not ok]
    assert len(outcomes) == FIFO_RACE_RUNS + MODULE_RACE_RUNS
    assert all(msg.startswith(f"chain reload triggered via master_fifo {swapper.fifo}: 'c'") for msg in succeeded)
    # Refused at the check (lstat) or at the open (O_NOFOLLOW): either way naming the path, never following it.
    assert all(f"master_fifo={swapper.fifo}: not a FIFO (a symbolic link" in msg for msg in refused), refused
    assert refused, "the swaps never reached the module: the test proved nothing"
    assert max(seconds for _ok, _msg, seconds in outcomes[:FIFO_RACE_RUNS]) < RUN_BOUND_SECONDS
    assert max(seconds for _ok, _msg, seconds in outcomes[FIFO_RACE_RUNS:]) < REFUSED_TASK_SECONDS
    # Every byte root wrote went into the app user's own FIFO, one per run that succeeded.
    assert swapper.report["received"] == len(succeeded)
    print(f"FIFO race: {len(outcomes)} runs ({FIFO_RACE_RUNS} driver in {driver_seconds:.1f}s, {MODULE_RACE_RUNS} "
          f"module) in {attack_seconds:.1f}s against {swapper.report['swaps']} swaps: {len(succeeded)} succeeded (bytes in the "
          f"app user's FIFO: {swapper.report['received']}), {len(refused)} refused naming the path, 0 hung; root's "
          f"file unchanged")


class Reader:
    """Holds a FIFO open for reading, as its owner's daemon would: a write to it would not fail for want of one."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def received(self) -> bytes:
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.fd)


def another_users_fifo(path: Path) -> Reader:
    os.mkfifo(path, 0o600)
    os.chown(path, OTHER_USER, OTHER_USER)
    return Reader(path)


@pytest.mark.timeout(120)
def test_control_files_of_another_user_get_nothing_written_or_touched(ansible, arena, tmp_path):
    """Protected: a FIFO (with a reader) and a touch file of a second user, daemon, put where the module expects the
    instance's: in the app user's directory (no master proven: the directory's owner is the instance's user) and in
    place of a real instance's FIFO (its master, proven through stats, runs as root)."""
    run_dir = arena.app_dir("run")
    theirs = run_dir / "master.fifo"
    their_reader = another_users_fifo(theirs)
    touch = run_dir / "reload.touch"
    touch.write_bytes(b"")
    os.chown(touch, OTHER_USER, OTHER_USER)
    os.utime(touch, (1, 1))
    with UwsgiInstance(tmp_path / "instance", processes=2, threads=1, import_delay=0.0) as uwsgi:
        workers = uwsgi.worker_pids()
        uwsgi.fifo_path.unlink()
        in_place = another_users_fifo(uwsgi.fifo_path)
        try:
            outcomes = ansible.run_tasks([
                {"graceful.wsgi.uwsgi_reload": {"master_fifo": str(theirs), "wait": False}},
                {"graceful.wsgi.uwsgi_reload": {"touch_file": str(touch), "wait": False}},
                {"graceful.wsgi.uwsgi_reload": {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path)}},
            ])
            assert their_reader.received() == b"" and in_place.received() == b"", "root wrote to daemon's FIFO"
        finally:
            their_reader.close()
            in_place.close()
        assert uwsgi.worker_pids() == workers, "the instance was reloaded"
        master = uwsgi.master_pid
    daemon = f"daemon (uid {OTHER_USER})"
    app_dir_owner = (f"nobody (uid {APP_USER}) (the owner of {run_dir}; with no uWSGI master proven through stats or "
                     f"pidfile, the directory's owner stands for the instance's user)")
    assert [o["msg"] for o in outcomes] == [
        f"master_fifo={theirs}: owned by {daemon}, neither root nor {app_dir_owner}",
        f"touch_file={touch}: owned by {daemon}, neither root nor {app_dir_owner}",
        f"master_fifo={uwsgi.fifo_path}: owned by {daemon}, not by root (the user of the uWSGI master, pid {master})",
    ]
    assert all(o["failed"] for o in outcomes)
    assert max(o["seconds"] for o in outcomes) < REFUSED_TASK_SECONDS, [o["seconds"] for o in outcomes]
    assert os.lstat(touch).st_mtime == 1, "the touch file of another user was touched"
    print("daemon's FIFOs got 0 bytes, its touch file kept its mtime, the instance kept its workers")


@pytest.mark.timeout(120)
def test_stats_the_app_user_fakes_never_get_a_master_signalled(ansible, arena, tmp_path):
    """Protected: a uWSGI master of root's, which the app user would have root reload. It plants a symlink to that
    master's stats socket, runs a stats server answering as that master, and writes a pidfile naming it."""
    run_dir = arena.app_dir("run")
    link = run_dir / "stats.sock"
    impostor_socket = run_dir / "impostor.sock"
    pidfile = run_dir / "uwsgi.pid"
    with UwsgiInstance(tmp_path / "instance", processes=2, threads=1, import_delay=0.0) as uwsgi:
        master, workers = uwsgi.master_pid, uwsgi.worker_pids()
        planted = run_as_app_user(["ln", "-s", str(uwsgi.stats_path), str(link)])
        assert planted.returncode == 0, planted.stderr
        written = run_as_app_user(["sh", "-c", f"echo {master} > {pidfile}"])
        assert written.returncode == 0, written.stderr
        impostor = as_app_user([APP_PYTHON, str(arena.script("impostor.py", IMPOSTOR)), str(impostor_socket),
                                str(master)], stderr=subprocess.PIPE)
        try:
            poll_until(impostor_socket.exists, 10, "the app user's stats server to listen")
            impostor_pid = impostor.pid
            outcomes = ansible.run_tasks([
                {"graceful.wsgi.uwsgi_info": {"stats": str(link)}},
                {"graceful.wsgi.uwsgi_reload": {"master_fifo": str(uwsgi.fifo_path), "stats": str(link)}},
                {"graceful.wsgi.uwsgi_info": {"stats": str(impostor_socket)}},
                {"graceful.wsgi.uwsgi_reload": {"pidfile": str(pidfile), "stats": str(impostor_socket),
                                                "mode": "graceful"}},
                {"graceful.wsgi.uwsgi_reload": {"pidfile": str(pidfile), "mode": "graceful", "wait": False}},
            ])
        finally:
            os.killpg(impostor.pid, signal.SIGKILL)
            impostor.wait()
        assert uwsgi.master_pid == master and uwsgi.worker_pids() == workers, "root's master was reloaded"
    symlink = f"stats={link}: a symbolic link, not followed (name the socket itself)"
    impostor_msg = (f"stats={impostor_socket}: served by pid {impostor_pid} of nobody (uid {APP_USER}), but its answer "
                    f"names master pid {master}: not the stats server of a uWSGI master (in another PID namespace, or "
                    f"an impostor); not trusted")
    messages = [o["msg"] for o in outcomes]
    assert messages[0] == symlink and messages[1] == symlink
    assert messages[2] == impostor_msg and messages[3] == impostor_msg
    assert messages[4].startswith(f"pidfile={pidfile} is owned by nobody (uid {APP_USER}) but names pid {master} (")
    assert messages[4].endswith("a uWSGI master running as root: a pidfile names a master of its own user, or is "
                                "root's; nothing was signalled")
    assert all(o["failed"] for o in outcomes)
    assert max(o["seconds"] for o in outcomes) < REFUSED_TASK_SECONDS, [o["seconds"] for o in outcomes]
    print(f"root's master {master} kept its pid and workers {sorted(workers)}; the app user's symlink, stats server "
          f"and pidfile were refused")


def old_lock_name(emperor_dir: Path) -> Path:
    """Where the lock of ``emperor_dir`` was before: /run/lock, which every user may write to."""
    return Path("/run/lock") / ("graceful-wsgi-vassals%s.lock" % "".join(
        c if c.isalnum() or c in "_.-" else "-" for c in str(emperor_dir.resolve())).rstrip("-"))


def vassals_dir(arena: Arena, name: str) -> Path:
    path = arena.path / name
    path.mkdir()
    (path / "shop.ini").write_text("[uwsgi]\n")
    return path


@pytest.mark.timeout(120)
def test_the_vassals_lock_cannot_be_planted_or_redirected_by_another_user(ansible, installed_collections, arena):
    """Protected: root's files and the lock's service. The app user plants, where the lock used to live (/run/lock,
    which any user may write to), a symlink to a file of root's under one Emperor's lock name and a file of its own
    under another's. Runs of both go on (no denial of service; they stop later, at the missing stats), the lock is
    made in /run/graceful-wsgi (root's, 0700), where the app user cannot plant anything, and root's file and the
    planted files are left as they were."""
    target = arena.root_file("target")
    before = snapshot(target)
    redirected, squatted = vassals_dir(arena, "vassals-a"), vassals_dir(arena, "vassals-b")
    link, squat = old_lock_name(redirected), old_lock_name(squatted)
    for argv in (["ln", "-s", str(target), str(link)], ["sh", "-c", f"echo '{{\"pid\": 1}}' > {squat}"]):
        planted = run_as_app_user(argv)
        assert planted.returncode == 0, planted.stderr
    stats = arena.path / "no-stats.sock"
    outcomes: list[dict] = []
    try:
        outcomes = ansible.run_tasks([
            {"graceful.wsgi.uwsgi_vassals_reload": {"emperor_dir": str(directory), "emperor_stats": str(stats),
                                                    "fastrouter_stats": str(stats)}}
            for directory in (redirected, squatted)])
        lock_dir = Path("/run/graceful-wsgi")
        status = os.lstat(lock_dir)
        assert stat.S_ISDIR(status.st_mode) and status.st_uid == 0 and stat.S_IMODE(status.st_mode) == 0o700
        for outcome, directory in zip(outcomes, (redirected, squatted)):
            assert outcome["msg"].startswith(f"emperor_stats={stats}: no such socket"), outcome["msg"]
            lock = Path(outcome["lock_path"])
            assert lock.parent == lock_dir and lock.name == old_lock_name(directory).name
            assert stat.S_ISREG(os.lstat(lock).st_mode) and os.lstat(lock).st_uid == 0 and lock.read_bytes() == b""
        planting = run_as_app_user(["ln", "-s", str(target), str(lock_dir / "planted.lock")])
        assert planting.returncode != 0 and not os.path.lexists(lock_dir / "planted.lock")
        assert snapshot(target) == before
        assert os.readlink(link) == str(target) and squat.read_text() == '{"pid": 1}\n'
    finally:
        for leftover in (link, squat, *(Path(o["lock_path"]) for o in outcomes if "lock_path" in o)):
            if os.path.lexists(leftover):
                os.unlink(leftover)

    # Had a root lock directory been put where other users may write (a world-writable parent), the app user could
    # make it first, with a symlink at the lock's name: the run refuses the directory and touches nothing in it.
    shared = arena.path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    theirs = shared / "graceful-wsgi"
    made = run_as_app_user(["sh", "-c", f"mkdir -m 700 {theirs} && ln -s {target} {theirs}/{link.name}"])
    assert made.returncode == 0, made.stderr
    driver_args = [str(theirs), str(redirected), str(stats)]
    refused = json.loads(run_as_root(arena.script("vassals.py", VASSALS_DRIVER), driver_args, installed_collections))
    assert refused["msg"] == (f"lock directory {theirs}: its parent {shared} is owned by uid 0 with mode 1777: other "
                              f"users may create or move names in it")
    assert snapshot(target) == before and os.readlink(theirs / link.name) == str(target)
    print(f"planted {link} -> {target} and {squat} (nobody's): both runs went on with their locks in "
          f"{lock_dir} (root, 0700); {target} unchanged; a lock directory under a 1777 parent refused")

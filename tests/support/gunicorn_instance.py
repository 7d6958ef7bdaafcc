"""Run one real gunicorn master on loopback for integration tests and benchmarks.

The counterpart of ``uwsgi_instance.py`` for gunicorn. The instance runs the
demo app with the ``gthread`` worker class, which behaves the same on gunicorn
20.1 and 27, and is observed only through what any outside tool can see: the
pidfile, ``/proc``, the log and HTTP. This module deliberately does not import
the collection, so it can serve as an independent check of it.

gunicorn's signal interface is what deployments drive and what tests here are
expected to send themselves:

* ``SIGHUP``: the master stays, every worker is replaced and re-imports the app;
* ``SIGUSR2``: the master forks and execs a *new master* (with its own workers)
  next to itself; once the old master is told to exit (``SIGTERM``/``SIGQUIT``)
  the new one is "promoted" and takes over the pidfile.

The new master is a descendant of the process this harness started, so it stays
in that process's session and process group; ``stop()`` relies on that to leave
nothing behind, however many upgrades happened.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from .app_server import AppServer
from .loadgen import sample_serving_pids
from .process import (
    free_loopback_port,
    is_alive,
    live_children,
    live_group_members,
    poll_until,
    proc_stat,
)

_START_ATTEMPTS = 3  # the free port we pick may be taken before gunicorn binds it
_STOP_GRACE_SECONDS = 10.0
# gunicorn >= 24 opens a control socket by default, at a path shared by every
# instance of the user (~/.gunicorn/gunicorn.ctl); each instance needs its own.
_CONTROL_SOCKET_SINCE = (24,)
# What gunicorn logs (at level info) when the port is taken. It then retries
# for about five seconds before giving up, so waiting for it to exit would
# waste most of the start timeout.
_PORT_IN_USE_MARKERS = (b"Connection in use", b"Address already in use")
# Inherited variables that would make gunicorn pick up foreign sockets or
# configuration (running the tests under gunicorn or systemd socket activation)
# or load packages from outside the gunicorn venv.
_SCRUBBED_ENV = (
    "GUNICORN_PID",
    "GUNICORN_FD",
    "GUNICORN_CMD_ARGS",
    "LISTEN_FDS",
    "LISTEN_PID",
    "PYTHONPATH",
    "PYTHONHOME",
)
_VERSION_RE = re.compile(r"gunicorn \(version (\d+(?:\.\d+)*)")


class _PortInUse(Exception):
    """gunicorn could not bind the port we picked; start() retries."""


@functools.lru_cache(maxsize=None)
def _gunicorn_version_cached(gunicorn_bin: str) -> tuple[int, ...]:
    completed = subprocess.run(
        [gunicorn_bin, "--version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = completed.stdout + completed.stderr
    match = _VERSION_RE.search(output)
    if completed.returncode != 0 or match is None:
        raise RuntimeError(
            f"cannot determine the version of {gunicorn_bin} (exit status"
            f" {completed.returncode}): {output.strip()[:500]!r}"
        )
    return tuple(int(part) for part in match.group(1).split("."))


def gunicorn_version(gunicorn_bin: str | Path) -> tuple[int, ...]:
    """Version of the gunicorn behind ``gunicorn_bin``, e.g. ``(27, 0, 1)``.

    Asks the binary itself (``gunicorn --version``) because the gunicorn under
    test usually lives in another venv than the one running the tests. Cached
    per path, since it costs a Python start-up.
    """
    return _gunicorn_version_cached(str(gunicorn_bin))


def _absolute_executable(executable: str | Path) -> Path:
    """``executable`` as an absolute path: gunicorn runs in the workdir, and
    re-execs its own argv[0] on USR2, so a relative path would break both."""
    if os.sep not in str(executable):
        found = shutil.which(executable)
        if found is None:
            raise FileNotFoundError(f"{executable!r} not found on PATH")
        executable = found
    return Path(executable).absolute()


# -- /proc (the generic readers are in process.py) ----------------------------


def _gunicorn_parent_pid(pid: int) -> int | None:
    """``GUNICORN_PID`` from the environment ``pid`` was exec'd with, if any.

    gunicorn execs the new master of a USR2 upgrade with GUNICORN_PID set to
    the old master's pid; workers are plain forks of their master and carry
    the master's own exec-time environment instead.
    """
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"GUNICORN_PID="):
            try:
                return int(entry.split(b"=", 1)[1])
            except ValueError:
                return None
    return None


class GunicornInstance(AppServer):
    """One gunicorn master plus workers, serving the demo app on 127.0.0.1."""

    server = "gunicorn"

    def __init__(
        self,
        workdir: Path,
        gunicorn_bin: str | Path,
        workers: int = 4,
        threads: int = 2,
        import_delay: float = 0.3,
        release: str = "v1",
        graceful_timeout: float = 30,
        extra_args: Sequence[str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        # gunicorn parses --graceful-timeout as an integer and would refuse
        # "30.0" at start-up; fail here, where the caller can see why.
        if graceful_timeout < 0 or graceful_timeout != int(graceful_timeout):
            raise ValueError(
                f"graceful_timeout must be a whole number of seconds >= 0,"
                f" got {graceful_timeout!r}"
            )
        super().__init__(workdir, import_delay, release)
        self.gunicorn_bin = _absolute_executable(gunicorn_bin)
        self.workers = workers
        self.threads = threads
        self.graceful_timeout = int(graceful_timeout)
        self.extra_args = list(extra_args or [])
        self.version = gunicorn_version(self.gunicorn_bin)

        self.pidfile = self.workdir / "gunicorn.pid"
        self.control_socket: Path | None = None
        if self.version >= _CONTROL_SOCKET_SINCE:
            self.control_socket = self._socket_path("gunicorn.ctl")

        # The pid of the process start() launched. start_new_session makes it
        # the id of the session and process group that every later gunicorn
        # process (workers, USR2 masters and their workers) belongs to, and it
        # stays so after that process exits.
        self.session_id: int | None = None

        self.set_release(release)

    # -- configuration -------------------------------------------------------

    def command(self) -> list[str]:
        """The command line start() runs."""
        args = [
            str(self.gunicorn_bin),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(self.threads),
            "--pid",
            str(self.pidfile),
            "--chdir",
            str(self.workdir),
            "--graceful-timeout",
            str(self.graceful_timeout),
            # Generous, so a slow request in a benchmark is never mistaken for
            # a hung worker and killed.
            "--timeout",
            "60",
            # Connections arriving while workers are replaced wait in the
            # backlog; it must be deep enough to hold them all under load.
            "--backlog",
            "2048",
            # No --access-logfile: request logs would drown the log tail.
            "--error-logfile",
            str(self.log_path),
            "--log-level",
            "info",
        ]
        if self.control_socket is not None:
            args += ["--control-socket", str(self.control_socket)]
        return [*args, *self.extra_args, "app:application"]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        # A release rewritten within the same second as the previous one has
        # the same mtime (and possibly size), so a cached .pyc would be
        # considered fresh and the old release served.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start gunicorn and return once all workers serve ``self.release``."""
        log_file = self._begin_start()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                log_offset = self.log_path.stat().st_size
                self._process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    # gunicorn prints some failures (e.g. app import tracebacks
                    # in older versions) to stderr only, not to the error log.
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=self._environment(),
                    # Own session and process group, so stop() can find and
                    # kill everything gunicorn spawned, including USR2 masters.
                    start_new_session=True,
                )
                self.session_id = self._process.pid
                self._wait_ready(timeout, log_offset)
                return
            except _PortInUse:
                if attempt == _START_ATTEMPTS:
                    self.stop()
                    raise RuntimeError(
                        f"port still in use after {attempt} attempts\n"
                        + self.log_tail()
                    ) from None
                self._kill_session()
                self._process = None
                self._remove_stale_pidfile()  # the killed master may have written it
                self.port = free_loopback_port()
            except BaseException:
                self.stop()
                raise

    def _prepare_start(self) -> None:
        self._remove_stale_pidfile()

    def _remove_stale_pidfile(self) -> None:
        """gunicorn refuses to start if the pidfile names *any* live process,
        so a stale one whose pid was recycled would make start() flaky."""
        pid = self.master_pid()
        if pid is None:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if is_alive(pid) and str(self.pidfile).encode() in cmdline.split(b"\0"):
            raise RuntimeError(
                f"gunicorn pid {pid} is still running with pidfile {self.pidfile}"
            )
        self.pidfile.unlink(missing_ok=True)

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + timeout

        def probe() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with status {process.returncode} during"
                    f" startup\n{self.log_tail()}"
                )
            with open(self.log_path, "rb") as log:
                log.seek(log_offset)
                if any(marker in log.read() for marker in _PORT_IN_USE_MARKERS):
                    raise _PortInUse()
            if self.master_pid() != process.pid:
                return False
            pids = self.worker_pids(process.pid)
            if len(pids) != self.workers:
                return False
            sample = sample_serving_pids(
                self.base_url,
                pids,
                self.release,
                max_seconds=max(0.5, min(5.0, deadline - time.monotonic())),
            )
            return not sample["missing"] and not sample["wrong"]

        poll_until(
            probe,
            timeout,
            f"all {self.workers} gunicorn workers serving release {self.release!r}",
            on_timeout=self._diagnostics,
        )

    def stop(self) -> None:
        """Shut gunicorn down; safe to call repeatedly and on a failed start.

        Works however many USR2 upgrades happened: every gunicorn master in
        the session gets SIGQUIT (quick shutdown; a graceful one is not what
        tests measure), and whatever is left after the grace period is killed.
        """
        self._stopped = True
        if self._process is not None:
            masters = self._session_masters()
            for pid in masters:
                try:
                    os.kill(pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
            self._wait_session_empty(_STOP_GRACE_SECONDS)
            self._kill_session()
            self._process = None
        self._close_files()

    def _session_masters(self) -> set[int]:
        """Every live gunicorn master in our process group.

        The pidfile normally names the only one, but during a USR2 upgrade
        there are two (the new one only in "<pidfile>.2" at first), and a
        master that was just forked for an upgrade is in no file yet. A master
        is a group member whose parent is outside the group (the original
        master's parent is us, a promoted master's is init) or that was
        exec'd by its parent for an upgrade. Workers orphaned by a killed
        master qualify too, and SIGQUIT makes them exit as well.
        """
        if self.session_id is None:
            return set()
        members = live_group_members(self.session_id)
        masters = {
            pid
            for pid, ppid in members.items()
            if ppid not in members or _gunicorn_parent_pid(pid) == ppid
        }
        current = self.master_pid()
        if current is not None and current in members:
            masters.add(current)
        return masters

    def _wait_session_empty(self, timeout: float) -> bool:
        """Wait until no live process is left in our process group."""
        assert self.session_id is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None:
                self._process.poll()  # reap it, or it lingers as a zombie
            if not live_group_members(self.session_id):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _kill_session(self) -> None:
        """SIGKILL whatever is left of our process group and reap our child."""
        if self.session_id is None:
            return
        # Only signal a group that still has members: once it is empty and
        # our child reaped, the kernel may hand its id to an unrelated group.
        if live_group_members(self.session_id):
            try:
                os.killpg(self.session_id, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._process is not None:
            self._process.wait(timeout=10)
        # SIGKILL is asynchronous; callers expect the processes to be gone.
        self._wait_session_empty(5.0)

    @property
    def running(self) -> bool:
        """True while a gunicorn master of this instance is alive (the one
        named by the pidfile, or the started process before it wrote it)."""
        return self._current_master() is not None

    def _current_master(self) -> int | None:
        if self._process is None or self.session_id is None:
            return None
        pid = self.master_pid()
        if pid is not None and self.process_alive(pid):
            return pid
        return self._process.pid if self._process.poll() is None else None

    # -- observation ---------------------------------------------------------

    def master_pid(self) -> int | None:
        """The pid in the pidfile; None while there is none (not written yet,
        or between an old master's exit and the new master's promotion)."""
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def worker_pids(self, master: int | None = None) -> set[int]:
        """Live worker pids of ``master`` (default: the pidfile's master).

        A USR2 new master is also a child of the old master but is not one of
        its workers; it is recognised by GUNICORN_PID=<master> in its
        environment. (Between its fork and its exec, a matter of
        milliseconds, it cannot be told apart from a worker.)
        """
        return self._children_split(master)[0]

    def upgrade_children(self, master: int | None = None) -> set[int]:
        """New masters that a USR2 to ``master`` (default: the pidfile's
        master) started and that have exec'd; empty if there are none.
        gunicorn allows one at a time, so this holds at most one pid."""
        return self._children_split(master)[1]

    def _children_split(self, master: int | None) -> tuple[set[int], set[int]]:
        """(workers, USR2 new masters) among the children of ``master``
        (default: the pidfile's master)."""
        if master is None:
            master = self.master_pid()
            if master is None:
                return set(), set()
        workers: set[int] = set()
        new_masters: set[int] = set()
        for child in live_children(master):
            (new_masters if _gunicorn_parent_pid(child) == master else workers).add(child)
        return workers, new_masters

    def process_alive(self, pid: int) -> bool:
        """True if ``pid`` is a live (non-zombie) process of this instance's
        session. A master this harness started lingers as a zombie until it
        is reaped, and a recycled pid elsewhere is not ours: neither counts."""
        if self.session_id is None:
            return False
        stat = proc_stat(pid)
        return stat is not None and stat[0] != "Z" and stat[3] == self.session_id

    def wait_master_gone(self, master: int, timeout: float = 20.0) -> None:
        """Wait until ``master`` has exited (e.g. gunicorn halting because a
        worker failed to boot)."""

        def gone() -> bool:
            if self._process is not None and self._process.pid == master:
                self._process.poll()  # our own child: reap it once it exits
            return not self.process_alive(master)

        poll_until(
            gone,
            timeout,
            f"gunicorn master {master} to exit",
            on_timeout=self._diagnostics,
        )

    def _diagnostics(self, master: int | None = None) -> str:
        if master is None:
            master = self.master_pid()
        if master is None:
            state = "no pidfile"
        else:
            stat = proc_stat(master)
            state = (
                f"master {master} ({'gone' if stat is None else 'state ' + stat[0]})"
                f" workers={sorted(self.worker_pids(master))}"
                f" upgrade_children={sorted(self.upgrade_children(master))}"
            )
        session = (
            sorted(live_group_members(self.session_id))
            if self.session_id is not None
            else []
        )
        return f"{state}; session processes={session}\n{self.log_tail()}"

    def wait_all_workers_serving(
        self,
        release: str,
        timeout: float = 20.0,
        replaced_pids: Collection[int] = (),
        master: int | None = None,
    ) -> set[int]:
        """Wait until ``master`` (default: whichever the pidfile names at each
        check) has exactly ``self.workers`` workers, none of them in
        ``replaced_pids`` (pass the pre-reload pids to wait for a full
        rollover), and each has answered HTTP with ``release``.

        Returns the worker pids. Answers from processes that are not workers
        of this master are not held against it: during a USR2 upgrade the old
        master's workers share the listening socket and still serve the old
        release, legitimately.
        """
        old = set(replaced_pids)

        def candidates() -> set[int] | None:
            current = master if master is not None else self.master_pid()
            if current is None:
                return None
            pids = self.worker_pids(current)
            return None if len(pids) != self.workers or pids & old else pids

        def served(pids: set[int], sample: dict[str, Any]) -> bool:
            ours_wrong = [(pid, rel) for pid, rel in sample["wrong"] if pid in pids]
            return not sample["missing"] and not ours_wrong

        return self._wait_serving(
            release,
            timeout,
            candidates,
            served,
            "none taken (never exactly the expected new workers)",
            lambda: self._diagnostics(master),
        )


__all__ = ["GunicornInstance", "gunicorn_version"]

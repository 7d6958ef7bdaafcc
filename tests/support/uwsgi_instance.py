"""Run one real uWSGI master on loopback for integration tests and benchmarks.

The instance is configured the way a zero-downtime deployment needs it
(lazy-apps, master FIFO, stats socket, touch-reload files) and is observed only
through the interfaces a deployment tool would use: the stats socket, the
master FIFO and HTTP. This module deliberately does not import the collection,
so it can serve as an independent check of it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .demo_app import write_release
from .loadgen import sample_serving_pids

T = TypeVar("T")

# sun_path is 108 bytes on Linux including the terminating NUL; pytest's
# tmp_path for a long test name can exceed that.
_MAX_UNIX_SOCKET_PATH = 100
_START_ATTEMPTS = 3  # the free port we pick may be taken before uWSGI binds it
_POLL_INTERVAL = 0.05


def poll_until(
    probe: Callable[[], T | None],
    timeout: float,
    description: str,
    interval: float = _POLL_INTERVAL,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None (or False).

    Exists so tests wait for an observable condition rather than sleeping for
    a guessed duration; ``on_timeout`` adds diagnostics to the TimeoutError.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            details = on_timeout() if on_timeout else ""
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {description}"
                + (f"\n{details}" if details else "")
            )
        time.sleep(interval)


def read_stats_socket(path: Path) -> dict[str, Any]:
    """Read the one JSON document a uWSGI stats server on a unix socket sends (it closes after)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(2.0)
        conn.connect(str(path))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGINT a uWSGI master (it kills its workers and exits at once), then SIGKILL whatever is left of its
    process group (started with start_new_session)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers, if any
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker_is_serving(worker: dict[str, Any]) -> bool:
    # A worker still importing the app reports accepting=0; one whose import
    # failed reports accepting=1 but no apps (and answers 500), so both flags
    # are needed.
    return (
        worker.get("pid", 0) > 0
        and worker.get("accepting") == 1
        and len(worker.get("apps") or []) >= 1
    )


def _format_workers(workers: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"#{w.get('id')} pid={w.get('pid')} accepting={w.get('accepting')}"
        f" apps={len(w.get('apps') or [])} status={w.get('status')}"
        f" respawns={w.get('respawn_count')}"
        for w in workers
    )


class UwsgiInstance:
    """One uWSGI master plus workers, serving the demo app on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        processes: int = 4,
        threads: int = 2,
        lazy_apps: bool = True,
        import_delay: float = 0.3,
        extra_options: dict[str, Any] | None = None,
        uwsgi_bin: str | Path | None = None,
        release: str = "v1",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.processes = processes
        self.threads = threads
        self.lazy_apps = lazy_apps
        self.import_delay = import_delay
        self.extra_options = dict(extra_options or {})
        self.uwsgi_bin = (
            Path(uwsgi_bin) if uwsgi_bin else Path(sys.executable).with_name("uwsgi")
        )

        self.app_path = self.workdir / "app.py"
        self.ini_path = self.workdir / "uwsgi.ini"
        self.fifo_path = self.workdir / "master.fifo"
        self.touch_chain_path = self.workdir / "touch-chain-reload"
        self.touch_reload_path = self.workdir / "touch-reload"
        self.touch_workers_path = self.workdir / "touch-workers-reload"
        self.pidfile = self.workdir / "uwsgi.pid"
        self.log_path = self.workdir / "uwsgi.log"
        self._socket_dir: Path | None = None
        self.stats_path = self.workdir / "stats.sock"
        if len(str(self.stats_path)) > _MAX_UNIX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="uwsgi-"))
            self.stats_path = self._socket_dir / "stats.sock"

        self.port = _free_loopback_port()
        self.release = release
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._stopped = False

        for path in (
            self.touch_chain_path,
            self.touch_reload_path,
            self.touch_workers_path,
        ):
            path.touch()
        self.set_release(release)
        self._write_ini()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- configuration -------------------------------------------------------

    def _options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("master", True),
            ("processes", self.processes),
            ("threads", self.threads),
        ]
        if self.lazy_apps:
            # Each worker imports the app itself, so a respawned worker picks
            # up new code without restarting the master.
            options.append(("lazy-apps", True))
        options += [
            ("http-socket", f"127.0.0.1:{self.port}"),
            ("wsgi-file", self.app_path),
            ("master-fifo", self.fifo_path),
            ("stats", self.stats_path),
            ("touch-chain-reload", self.touch_chain_path),
            ("touch-reload", self.touch_reload_path),
            ("touch-workers-reload", self.touch_workers_path),
            ("pidfile", self.pidfile),
            ("logto", self.log_path),
            ("disable-logging", True),  # request logs would drown the log tail
            ("die-on-term", True),
            # Connections arriving while workers respawn wait in the backlog;
            # it must be deep enough to hold them all under load.
            ("listen", 1024),
            # Lets a worker finish slow in-flight requests during a graceful reload.
            ("worker-reload-mercy", 60),
        ]
        for key, value in self.extra_options.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            options += [(key, v) for v in values if v is not None and v is not False]
        return options

    def _write_ini(self) -> None:
        lines = ["[uwsgi]"]
        for key, value in self._options():
            lines.append(f"{key} = {'true' if value is True else value}")
        self.ini_path.write_text("\n".join(lines) + "\n")

    def set_release(
        self,
        release: str,
        broken: bool = False,
        import_delay: float | None = None,
    ) -> None:
        """Replace the app file with ``release``; workers see it on respawn.

        """
        delay = self.import_delay if import_delay is None else import_delay
        write_release(self.app_path, release, broken=broken, import_delay=delay)
        self.release = release

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start uWSGI and return once every worker is accepting with an app."""
        if self._process is not None:
            raise RuntimeError("instance already started")
        if self._stopped:
            # stop() may have removed the stats socket directory; a fresh
            # UwsgiInstance on the same workdir is the way to restart.
            raise RuntimeError("UwsgiInstance is single-use; create a new one")
        self._log_file = open(self.log_path, "ab")
        for attempt in range(1, _START_ATTEMPTS + 1):
            log_offset = self.log_path.stat().st_size
            self._process = subprocess.Popen(
                [str(self.uwsgi_bin), "--ini", str(self.ini_path)],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own process group, so stop() can kill workers the master
                # leaves behind.
                start_new_session=True,
            )
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError:
                new_output = self.log_path.read_bytes()[log_offset:]
                if (
                    attempt < _START_ATTEMPTS
                    and b"Address already in use" in new_output
                ):
                    self._process.wait()
                    self._process = None
                    self.port = _free_loopback_port()
                    self._write_ini()
                    continue
                self.stop()
                raise
            except BaseException:
                self.stop()
                raise

    def _wait_ready(self, timeout: float) -> None:
        def probe() -> bool:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"uwsgi exited with status {self._process.returncode} during"
                    f" startup\n{self.log_tail()}"
                )
            workers = self._try_workers()
            return (
                workers is not None
                and len(workers) == self.processes
                and all(_worker_is_serving(w) for w in workers)
            )

        poll_until(
            probe,
            timeout,
            "all uWSGI workers to accept with an app loaded",
            on_timeout=self._diagnostics,
        )

    def stop(self) -> None:
        """Shut uWSGI down; safe to call repeatedly and on a failed start."""
        self._stopped = True
        process, self._process = self._process, None
        if process is not None:
            # A graceful shutdown is not what tests are measuring.
            stop_process_group(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> UwsgiInstance:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation ---------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return read_stats_socket(self.stats_path)

    def workers(self) -> list[dict[str, Any]]:
        return list(self.stats()["workers"])

    @property
    def master_pid(self) -> int:
        return int(self.stats()["pid"])

    def _try_workers(self) -> list[dict[str, Any]] | None:
        """Workers list, or None while the stats socket is not answering
        (not yet bound, or the master is busy respawning)."""
        try:
            return self.workers()
        except (OSError, ValueError, KeyError):
            return None

    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` distinct log lines; runs of identical lines (a broken
        app logs one per request) are collapsed so they cannot hide the cause."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no uwsgi log)"
        collapsed: list[list[Any]] = []  # [line, repeat count]
        for line in text.splitlines():
            if collapsed and collapsed[-1][0] == line:
                collapsed[-1][1] += 1
            else:
                collapsed.append([line, 1])
        rendered = [
            line if count == 1 else f"{line}  [x{count}]"
            for line, count in collapsed[-lines:]
        ]
        return "--- uwsgi log tail ---\n" + "\n".join(rendered)

    def _diagnostics(self) -> str:
        workers = self._try_workers()
        state = _format_workers(workers) if workers is not None else "stats unavailable"
        return f"workers: {state}\n{self.log_tail()}"

    # -- control -------------------------------------------------------------

    def send_master_command(self, commands: str) -> None:
        """Write single-letter commands (e.g. ``"c"`` = chain reload) to the master FIFO.

        Non-blocking open: if the master is not reading the FIFO we want an
        immediate error, not a test hung in open().
        """
        try:
            fd = os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise RuntimeError(
                    f"no uWSGI master is reading {self.fifo_path}"
                ) from exc
            raise
        try:
            os.write(fd, commands.encode())
        finally:
            os.close(fd)

    def worker_pids(self) -> set[int]:
        return {w["pid"] for w in self.workers() if w.get("pid", 0) > 0}

    def wait_all_workers_serving(
        self,
        release: str,
        timeout: float = 20.0,
        replaced_pids: Collection[int] = (),
    ) -> set[int]:
        """Wait until every worker is accepting with an app loaded, none of them
        is in ``replaced_pids`` (pass the pre-reload pids to wait for a full
        rollover) and each has answered HTTP with ``release``.

        Returns the serving worker pids. The HTTP check matters because the
        stats socket cannot tell which code a worker imported.
        """
        deadline = time.monotonic() + timeout
        old = set(replaced_pids)
        last_sample: dict[str, Any] = {}

        def probe() -> set[int] | None:
            nonlocal last_sample
            workers = self._try_workers()
            if (
                workers is None
                or len(workers) != self.processes
                or not all(_worker_is_serving(w) for w in workers)
            ):
                return None
            pids = {w["pid"] for w in workers}
            if pids & old:
                return None
            last_sample = sample_serving_pids(
                self.base_url,
                pids,
                release,
                max_seconds=max(0.5, min(5.0, deadline - time.monotonic())),
            )
            return (
                pids
                if not last_sample["missing"] and not last_sample["wrong"]
                else None
            )

        def diagnostics() -> str:
            if not last_sample:
                sample = "none taken (workers never all ready)"
            else:
                sample = (
                    f"seen={last_sample['seen']} missing={last_sample['missing']}"
                    f" wrong={last_sample['wrong'][:5]} ({len(last_sample['wrong'])}"
                    f" total) errors={len(last_sample['errors'])}"
                )
            return f"last HTTP sample: {sample}\n{self._diagnostics()}"

        return poll_until(
            probe,
            timeout,
            f"all workers serving release {release!r}",
            on_timeout=diagnostics,
        )


__all__ = ["UwsgiInstance", "poll_until"]

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
import socket
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .app_server import AppServer
from .process import free_loopback_port, poll_until, stop_process_group

_START_ATTEMPTS = 3  # the free port we pick may be taken before uWSGI binds it


def read_stats_socket(path: Path) -> dict[str, Any]:
    """Read the one JSON document a uWSGI stats server on a unix socket sends (it closes after)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(2.0)
        conn.connect(str(path))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


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


class UwsgiInstance(AppServer):
    """One uWSGI master plus workers, serving the demo app on 127.0.0.1."""

    server = "uwsgi"

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
        unix_socket: bool = False,
    ) -> None:
        super().__init__(workdir, import_delay, release)
        self.processes = processes
        self.threads = threads
        self.lazy_apps = lazy_apps
        self.extra_options = dict(extra_options or {})
        self.uwsgi_bin = (
            Path(uwsgi_bin) if uwsgi_bin else Path(sys.executable).with_name("uwsgi")
        )

        self.ini_path = self.workdir / "uwsgi.ini"
        self.fifo_path = self.workdir / "master.fifo"
        self.touch_chain_path = self.workdir / "touch-chain-reload"
        self.touch_reload_path = self.workdir / "touch-reload"
        self.touch_workers_path = self.workdir / "touch-workers-reload"
        self.pidfile = self.workdir / "uwsgi.pid"
        self.stats_path = self._socket_path("stats.sock")
        # A uwsgi-protocol unix socket beside the HTTP one, as nginx would reach the app.
        self.unix_socket_path = self._socket_path("app.sock") if unix_socket else None

        for path in (
            self.touch_chain_path,
            self.touch_reload_path,
            self.touch_workers_path,
        ):
            path.touch()
        self.set_release(release)
        self._write_ini()

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
        if self.unix_socket_path is not None:
            options.append(("socket", self.unix_socket_path))
        for key, value in self.extra_options.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            options += [(key, v) for v in values if v is not None and v is not False]
        return options

    def _write_ini(self) -> None:
        lines = ["[uwsgi]"]
        for key, value in self._options():
            lines.append(f"{key} = {'true' if value is True else value}")
        self.ini_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start uWSGI and return once every worker is accepting with an app."""
        log_file = self._begin_start()
        for attempt in range(1, _START_ATTEMPTS + 1):
            log_offset = self.log_path.stat().st_size
            self._process = subprocess.Popen(
                [str(self.uwsgi_bin), "--ini", str(self.ini_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
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
                    self.port = free_loopback_port()
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
        self._close_files()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

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
        old = set(replaced_pids)

        def candidates() -> set[int] | None:
            workers = self._try_workers()
            if (
                workers is None
                or len(workers) != self.processes
                or not all(_worker_is_serving(w) for w in workers)
            ):
                return None
            pids = {w["pid"] for w in workers}
            return None if pids & old else pids

        return self._wait_serving(
            release,
            timeout,
            candidates,
            lambda _pids, sample: not sample["missing"] and not sample["wrong"],
            "none taken (workers never all ready)",
            self._diagnostics,
        )


__all__ = ["UwsgiInstance", "read_stats_socket"]

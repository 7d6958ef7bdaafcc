"""What the uWSGI and gunicorn harnesses share: one server serving the demo app on a loopback port.

``AppServer`` holds the workdir with the app file and the server's log, the port, the release being served,
unix socket paths short enough for the kernel, and the once-only start: UwsgiInstance and GunicornInstance
add how their server is started, watched and stopped. Like the rest of tests/support this does not import
the collection.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .demo_app import write_release
from .loadgen import describe_sample, sample_serving_pids
from .process import StartStop, free_loopback_port, log_tail, poll_until

# sun_path is 108 bytes on Linux including the terminating NUL; pytest's
# tmp_path for a long test name can exceed that.
_MAX_UNIX_SOCKET_PATH = 100


class AppServer(StartStop):
    """One server plus workers, serving the demo app on 127.0.0.1."""

    server = "server"  # its name in the log's file name and in messages

    def __init__(self, workdir: Path, import_delay: float, release: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.import_delay = import_delay
        self.app_path = self.workdir / "app.py"
        self.log_path = self.workdir / f"{self.server}.log"
        self._socket_dir: Path | None = None
        self.port = free_loopback_port()
        self.release = release
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._stopped = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _socket_path(self, name: str) -> Path:
        """``name`` in the workdir, or in a private temporary directory (removed
        by stop()) when that path would be too long for a unix socket."""
        path = self.workdir / name
        if len(str(path)) > _MAX_UNIX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix=f"{self.server}-"))
            path = self._socket_dir / name
        return path

    def set_release(
        self,
        release: str,
        broken: bool = False,
        import_delay: float | None = None,
    ) -> None:
        """Replace the app file with ``release``; a worker sees it when it
        starts (a respawn, a replacement, a new master's workers)."""
        delay = self.import_delay if import_delay is None else import_delay
        write_release(self.app_path, release, broken=broken, import_delay=delay)
        self.release = release

    # -- lifecycle -----------------------------------------------------------

    def _begin_start(self) -> IO[bytes]:
        """The first steps of start(), once per instance: ``_prepare_start()``,
        then the log opened for the server's output."""
        if self._process is not None:
            raise RuntimeError("instance already started")
        if self._stopped:
            # stop() may have removed the socket directory; a fresh instance
            # on the same workdir is the way to restart.
            raise RuntimeError(f"{type(self).__name__} is single-use; create a new one")
        self._prepare_start()
        self._log_file = open(self.log_path, "ab")
        return self._log_file

    def _prepare_start(self) -> None:
        """What a server needs done before it starts (nothing by default)."""

    def _close_files(self) -> None:
        """The end of stop(): close the log, remove the socket directory."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # -- observation ---------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` distinct log lines (see process.log_tail)."""
        return log_tail(self.log_path, lines, self.server)

    def _wait_serving(
        self,
        release: str,
        timeout: float,
        candidates: Callable[[], set[int] | None],
        served: Callable[[set[int], dict[str, Any]], bool],
        none_taken: str,
        diagnostics: Callable[[], str],
    ) -> set[int]:
        """Wait until ``candidates()`` gives worker pids and an HTTP sample
        finds each of them answering with ``release``, ``served(pids, sample)``
        judging the sample; return those pids."""
        deadline = time.monotonic() + timeout
        last_sample: dict[str, Any] = {}

        def probe() -> set[int] | None:
            nonlocal last_sample
            pids = candidates()
            if pids is None:
                return None
            last_sample = sample_serving_pids(
                self.base_url,
                pids,
                release,
                max_seconds=max(0.5, min(5.0, deadline - time.monotonic())),
            )
            return pids if served(pids, last_sample) else None

        def on_timeout() -> str:
            sample = describe_sample(last_sample, none_taken)
            return f"last HTTP sample: {sample}\n{diagnostics()}"

        return poll_until(
            probe,
            timeout,
            f"all workers serving release {release!r}",
            on_timeout=on_timeout,
        )


__all__ = ["AppServer"]

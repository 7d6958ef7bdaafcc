"""Process helpers shared by the harnesses, the tests and the benchmarks.

Waiting for an observable condition, picking a free loopback port, stopping a
server's process group, a server log's tail, ``with`` for anything that starts
and stops, and reading processes from ``/proc`` as any outside tool can. Like
the rest of tests/support this does not import the collection.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S", bound="StartStop")

POLL_INTERVAL = 0.05
_HAVE_PROC_CHILDREN = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


def poll_until(
    probe: Callable[[], T | None],
    timeout: float,
    description: str,
    interval: float = POLL_INTERVAL,
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


# Ports for test servers are drawn below the kernel's ephemeral range. A port from that range (bind to port 0) is free
# when drawn, but a client connection of a load running beside the test (make test runs the integration tests and the
# compat runs at once) can take it as its local port before the server binds it; connections never use ports below.
_TEST_PORTS_SPAN = 12000


def _ephemeral_ports_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the ephemeral range (another test run may still take it first, 1 in
    thousands)."""
    top = _ephemeral_ports_start()
    for port in random.sample(range(max(1024, top - _TEST_PORTS_SPAN), top), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 among 200 drawn below {top}")


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


def log_tail(path: Path, lines: int, server: str) -> str:
    """Last ``lines`` distinct lines of ``server``'s log at ``path``; runs of
    identical lines (a broken app logs one per request) are collapsed so they
    cannot hide the cause."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no {server} log)"
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
    return f"--- {server} log tail ---\n" + "\n".join(rendered)


class StartStop:
    """``with thing:`` calls ``thing.start()`` and, on the way out, ``thing.stop()``."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- /proc -------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat from the state (field 3) on; None if
    ``pid`` is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself contain
    # spaces or parentheses, so parse from the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """``(state, ppid, pgrp, session)`` of ``pid``, or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def process_start(pid: int) -> float | None:
    """Monotonic time at which ``pid`` was created (to a clock tick), from
    /proc; None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[19])  # field 22, starttime
    boot_offset = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    return ticks / os.sysconf("SC_CLK_TCK") - boot_offset


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (zombies cannot serve, hold
    no resources worth mentioning and cannot be killed anyway)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _all_pids() -> Iterable[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def live_group_members(pgid: int) -> dict[int, int]:
    """``{pid: ppid}`` of every live (non-zombie) process in process group ``pgid``."""
    members: dict[int, int] = {}
    for pid in _all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat[0] != "Z" and stat[2] == pgid:
            members[pid] = stat[1]
    return members


def live_children(pid: int) -> set[int]:
    """Live child processes of ``pid``.

    Every thread keeps its own children list (gunicorn >= 24 runs a control
    socket thread in the master), so all threads are read. Falls back to a
    /proc scan on kernels built without CONFIG_PROC_CHILDREN.
    """
    try:
        tasks = [entry.path for entry in os.scandir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return set()
    children: set[int] = set()
    if _HAVE_PROC_CHILDREN:
        for task in tasks:
            try:
                children.update(
                    int(c) for c in Path(task, "children").read_text().split()
                )
            except (FileNotFoundError, ProcessLookupError):
                continue  # that thread just exited
    else:
        for candidate in _all_pids():
            stat = proc_stat(candidate)
            if stat is not None and stat[1] == pid:
                children.add(candidate)
    return {child for child in children if is_alive(child)}


__all__ = [
    "POLL_INTERVAL",
    "StartStop",
    "free_loopback_port",
    "is_alive",
    "live_children",
    "live_group_members",
    "log_tail",
    "poll_until",
    "proc_stat",
    "process_start",
    "stop_process_group",
]

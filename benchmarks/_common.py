"""Helpers shared by the reload benchmarks (uwsgi_reload.py and gunicorn_reload.py).

Both benchmarks put the same load on a server, watch it with a thread that
polls what any outside tool can see, and turn the load generator's record of
every response into the same per-reload figures. What is common lives here:
the load shape, the polling observer, the client-side "distinct pids per
window" count, and the JSON and command-line plumbing.

This is a plain module, not a script: import it as ``benchmarks._common``
with the repository root on ``sys.path``.
"""

from __future__ import annotations

import argparse
import bisect
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from tests.support.loadgen import LoadResult

FAST_CONCURRENCY = 10

OBSERVER_INTERVAL = 0.01
CLIENT_WINDOW = 0.2
# Failures are counted a little beyond the reload window: a connection refused
# just before the observer saw the trigger's effect still belongs to the reload.
WINDOW_MARGIN = 0.5
WARMUP_REQUESTS = 300

# Beyond the module's own timeout: ansible-playbook start-up on a loaded host.
PLAYBOOK_OVERHEAD_BOUND = 120.0

S = TypeVar("S")


class BenchmarkError(RuntimeError):
    """A reload did not complete or the instance broke: the run is invalid."""


def epoch_to_monotonic(epoch: float) -> float:
    # The module runs in another process, but on the same host both clocks
    # are shared, so one offset read here converts its epoch stamps.
    return epoch - (time.time() - time.monotonic())


# -- independent observer ----------------------------------------------------------


class ChangeObserver(Generic[S]):
    """Calls ``sample`` at a fixed rate and keeps every change of its result.

    Only changes are stored, each stamped with the monotonic time of the poll
    that first showed it, so "when did the observer first see X" is a lookup.
    ``sample`` returns None when the server did not answer (counted in
    ``errors``); any exception it raises ends the thread and is reported by
    ``check()``, since a silent observer would fake results.
    """

    def __init__(
        self,
        sample: Callable[[], S | None],
        name: str,
        interval: float = OBSERVER_INTERVAL,
    ) -> None:
        self._sample = sample
        self.name = name
        self._interval = interval
        self._cond = threading.Condition()
        self._times: list[float] = []
        self._states: list[S] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=name.replace(" ", "-"), daemon=True
        )
        # Its timestamps are the benchmark's figures, so its own jitter (the
        # GIL is shared with the load threads) is reported with them.
        self._poll_times: list[float] = []
        self.errors = 0
        self.crash: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            next_poll = time.monotonic()
            while not self._stop.is_set():
                state = self._sample()
                seen = time.monotonic()
                with self._cond:
                    self._poll_times.append(seen)
                    if state is None:
                        self.errors += 1
                    elif not self._states or state != self._states[-1]:
                        self._times.append(seen)
                        self._states.append(state)
                    self._cond.notify_all()
                # After a stall (the server busy, the GIL held by the load
                # threads) resume the schedule instead of firing a burst.
                next_poll = max(next_poll + self._interval, time.monotonic())
                self._stop.wait(next_poll - time.monotonic())
        except (
            BaseException
        ) as exc:  # reported by check(); a silent observer would fake results
            self.crash = exc
            with self._cond:
                self._cond.notify_all()

    def check(self) -> None:
        if self.crash is not None:
            raise BenchmarkError(f"{self.name} crashed: {self.crash!r}")
        if not self._thread.is_alive():
            raise BenchmarkError(f"{self.name} is not running")

    @property
    def polls(self) -> int:
        return len(self._poll_times)

    def max_gap(self, begin: float = -math.inf, end: float = math.inf) -> float:
        """Longest time between two polls within [begin, end]: the
        uncertainty of any time the observer reports there."""
        with self._cond:
            lo = max(0, bisect.bisect_left(self._poll_times, begin) - 1)
            hi = bisect.bisect_right(self._poll_times, end) + 1
            times = self._poll_times[lo:hi]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def state_at(self, t: float) -> S | None:
        """The state the observer had last seen at monotonic time ``t``."""
        with self._cond:
            index = bisect.bisect_right(self._times, t) - 1
            return self._states[index] if index >= 0 else None

    def latest(self) -> S | None:
        with self._cond:
            return self._states[-1] if self._states else None

    def history(
        self, begin: float = -math.inf, end: float = math.inf
    ) -> list[tuple[float, S]]:
        """Every change seen within [begin, end], as (time, state), plus the
        state in force at ``begin``."""
        with self._cond:
            lo = max(0, bisect.bisect_right(self._times, begin) - 1)
            hi = bisect.bisect_right(self._times, end)
            return list(zip(self._times[lo:hi], self._states[lo:hi]))

    def _first_after(
        self, after: float, predicate: Callable[[S], bool]
    ) -> float | None:
        start = bisect.bisect_right(self._times, after)
        for index in range(start, len(self._times)):
            if predicate(self._states[index]):
                return self._times[index]
        return None

    def first_after(self, after: float, predicate: Callable[[S], bool]) -> float | None:
        """When the observer first saw a state matching ``predicate`` after ``after``."""
        with self._cond:
            return self._first_after(after, predicate)

    def wait_first(
        self, after: float, predicate: Callable[[S], bool], timeout: float
    ) -> float | None:
        """Like ``first_after``, waiting up to ``timeout`` for such a state;
        None if none came. Raises BenchmarkError if the observer died."""
        found: float | None = None

        def ready() -> bool:
            nonlocal found
            found = self._first_after(after, predicate)
            return found is not None or self.crash is not None

        with self._cond:
            self._cond.wait_for(ready, timeout)
        self.check()
        return found


# -- analysis ----------------------------------------------------------------------


def distinct_pids_per_window(
    starts: Sequence[float], pids: Sequence[int], begin: float, end: float
) -> list[int]:
    """Distinct worker pids that served a fast request started in each full
    CLIENT_WINDOW between ``begin`` and ``end`` (a partial tail is dropped:
    too short to give every accepting worker its share of requests)."""
    counts = []
    windows = max(1, math.floor((end - begin) / CLIENT_WINDOW))
    for k in range(windows):
        lo = bisect.bisect_left(starts, begin + k * CLIENT_WINDOW)
        hi = bisect.bisect_left(starts, begin + (k + 1) * CLIENT_WINDOW)
        counts.append(len(set(pids[lo:hi])))
    return counts


def fast_served(load: LoadResult) -> tuple[list[float], list[int]]:
    """Start times and serving pids of successful fast requests, in start order
    (LoadResult sorts its responses by t_start)."""
    starts: list[float] = []
    pids: list[int] = []
    for r in load.responses:
        if r.kind == "fast" and r.ok and r.pid is not None:
            starts.append(r.t_start)
            pids.append(r.pid)
    return starts, pids


def quiet_min(
    load: LoadResult,
    begin: float,
    end: float,
    busy: Iterable[tuple[float, float]],
) -> int | None:
    """The client-side count of distinct serving pids per window, between
    ``begin`` and ``end`` outside the ``busy`` intervals (the reloads, with
    their margins): what "every worker serving" looks like from the client
    under this load."""
    starts, pids = fast_served(load)
    edges = [begin]
    for busy_begin, busy_end in sorted(busy):
        edges += [busy_begin, busy_end]
    edges.append(end)
    minima = [
        min(distinct_pids_per_window(starts, pids, quiet_begin, quiet_end))
        for quiet_begin, quiet_end in zip(edges[::2], edges[1::2])
        if quiet_end - quiet_begin >= CLIENT_WINDOW
    ]
    return min(minima) if minima else None


# -- report ------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """NaN is not JSON; a figure that could not be computed is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def load_json(load: LoadResult) -> dict[str, Any]:
    """The load's totals for a ``--json`` document."""
    return {
        "requests": load.total,
        "fast": load.fast_total,
        "slow": load.slow_total,
        "failed": load.failed,
        "requests_per_second": load.requests_per_second,
        "duration": load.duration,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "failures": load.failures[:100],
    }


def describe_load(load: LoadResult) -> str:
    return (
        f"load: {load.total} requests ({load.fast_total} fast, {load.slow_total} slow),"
        f" failed {load.failed}, {load.requests_per_second:.0f} req/s over {load.duration:.1f}s"
    )


# -- command line ------------------------------------------------------------------


def add_common_arguments(
    parser: argparse.ArgumentParser, pause_default: float, pause_help: str
) -> None:
    """The options both benchmarks take; check them with ``check_common_arguments``."""
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the three reloads (default 3)"
    )
    parser.add_argument(
        "--json", type=Path, help="write the raw per-reload figures here"
    )
    parser.add_argument(
        "--import-delay",
        type=float,
        default=1.0,
        help="seconds the app takes to import in each new worker (default 1.0)",
    )
    parser.add_argument(
        "--slow-clients",
        type=int,
        default=4,
        help="clients keeping a slow request in flight (default 4)",
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=2.0,
        help="duration of a slow request (default 2.0)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=pause_default,
        help=f"{pause_help} (default {pause_default})",
    )
    parser.add_argument(
        "--reload-timeout",
        type=float,
        default=60.0,
        help="seconds one reload may take before the run fails (default 60)",
    )


def check_common_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> None:
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.import_delay < 0 or args.slow_seconds <= 0 or args.pause < 0:
        parser.error("--import-delay and --pause must be >= 0, --slow-seconds > 0")
    if args.slow_clients < 0:
        parser.error("--slow-clients must be >= 0")
    if args.reload_timeout <= 0:
        parser.error("--reload-timeout must be > 0")

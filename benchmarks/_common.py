"""What the reload benchmarks share (uwsgi_reload.py, gunicorn_reload.py and emperor_reload.py).

Every benchmark puts the same kind of load on a server, watches it with a
thread that polls what any outside tool can see, reloads it round after round
by the server's native mechanism and by the collection's module, and turns the
load generator's record of every response into the same per-reload figures.
``Bench`` is that run; a benchmark subclasses it with its server's hooks (how
to start it and watch it, the native trigger, when a reload is over, the
printed table). Here too: one record of a reload, one summary per mechanism,
the client-side "distinct pids per window" count, the command line and JSON.

This is a plain module, not a script: import it as ``benchmarks._common``
with the repository root on ``sys.path``.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from tests.support.ansible_runner import (
    AnsibleRunError,
    PlaybookRunner,
    install_collection,
)
from tests.support.loadgen import LoadGenerator, LoadResult
from tests.support.process import poll_until

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


class Server(Protocol):
    """What a benchmark needs of the harness running its server."""

    @property
    def base_url(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def start(self, timeout: float) -> None: ...

    def stop(self) -> None: ...

    def set_release(self, release: str) -> None: ...

    def log_tail(self, lines: int = ...) -> str: ...


ServerT = TypeVar("ServerT", bound=Server)


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
        self.interval = interval
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
                next_poll = max(next_poll + self.interval, time.monotonic())
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


# -- one reload --------------------------------------------------------------------


class Mechanism(NamedTuple):
    key: str
    label: str  # in the printed report
    module_args: dict[str, Any] | None  # None: the server's native mechanism
    new_master: bool = False  # a new master replaces the old one (gunicorn's upgrade)


@dataclass(kw_only=True)
class ReloadRecord:
    """One reload, as the benchmark saw it. Times are monotonic."""

    round: int
    mechanism: str  # Mechanism.key
    release: str
    trigger: float
    done: float  # the new generation serving: the reload's figure
    old_gone: float | None = None  # nothing of the old generation left; None: at done
    completed: float | None = None  # module only: its completed_at
    module_elapsed: float | None = None
    observer_max_gap: float = 0.0
    pause: float = 0.0  # slept after this reload, before the next one
    # Further moments (written as "<name>_at") and figures of one server.
    moments: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # Filled in from the load's responses once the load has stopped.
    requests: int = 0
    failed: int = 0
    min_serving: int | None = None
    client_windows: list[int] = field(default_factory=list)
    fast_max_latency: float | None = None

    @property
    def seconds(self) -> float:
        return self.done - self.trigger

    @property
    def gone(self) -> float:
        return self.done if self.old_gone is None else self.old_gone

    @property
    def old_gone_seconds(self) -> float:
        return self.gone - self.trigger

    @property
    def end(self) -> float:
        """End of the reload window."""
        return max(self.done, self.gone)

    @property
    def lag(self) -> float | None:
        """How late the module said it was done."""
        return None if self.completed is None else self.completed - self.done

    def to_json(self, origin: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - origin, 4)

        lag = self.lag
        return {
            "round": self.round,
            "mechanism": self.mechanism,
            "release": self.release,
            "seconds": round(self.seconds, 4),
            "old_gone_seconds": round(self.old_gone_seconds, 4),
            "lag": None if lag is None else round(lag, 4),
            "failed": self.failed,
            "requests_in_window": self.requests,
            "min_serving": self.min_serving,
            "client_windows": self.client_windows,
            "fast_max_latency": self.fast_max_latency,
            "module_elapsed": self.module_elapsed,
            "observer_max_gap": round(self.observer_max_gap, 4),
            "pause_after": round(self.pause, 3),
            # Seconds since the load started, to line reloads up with each other.
            "trigger_at": rel(self.trigger),
            **{f"{name}_at": rel(t) for name, t in self.moments.items()},
            "done_at": rel(self.done),
            "old_gone_at": rel(self.gone),
            "completed_at": rel(self.completed),
            **self.details,
        }


class Triggered(NamedTuple):
    """A reload just triggered: what measuring it starts from."""

    round: int
    mechanism: Mechanism
    release: str
    at: float  # the trigger, monotonic
    completed: float | None  # module only: its completed_at, monotonic
    module_result: dict[str, Any]  # empty for a native reload

    def record(self, **figures: Any) -> ReloadRecord:
        return ReloadRecord(
            round=self.round,
            mechanism=self.mechanism.key,
            release=self.release,
            trigger=self.at,
            completed=self.completed,
            module_elapsed=self.module_result.get("elapsed"),
            **figures,
        )


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


def analyse(records: list[ReloadRecord], load: LoadResult) -> None:
    """Fill in each record's figures from the load's responses."""
    starts, pids = fast_served(load)
    for record in records:
        lo, hi = record.trigger - WINDOW_MARGIN, record.end + WINDOW_MARGIN
        overlapping = [r for r in load.responses if r.t_start <= hi and r.t_end >= lo]
        record.requests = len(overlapping)
        record.failed = sum(1 for r in overlapping if not r.ok)
        record.fast_max_latency = max(
            (round(r.t_end - r.t_start, 4) for r in overlapping if r.kind == "fast"),
            default=None,
        )
        record.client_windows = distinct_pids_per_window(
            starts, pids, record.trigger, record.end
        )
        record.min_serving = min(record.client_windows)


def steady_state_min(
    records: list[ReloadRecord], load: LoadResult, begin: float, end: float
) -> int | None:
    """The same client-side count between reloads (from ``begin`` to ``end``):
    what "every worker serving" looks like from the client under this load."""
    return quiet_min(
        load,
        begin,
        end,
        [(r.trigger - WINDOW_MARGIN, r.end + WINDOW_MARGIN) for r in records],
    )


# -- report ------------------------------------------------------------------------


def summarise(
    records: list[ReloadRecord],
    mechanisms: Sequence[Mechanism],
    extra: Callable[[list[ReloadRecord]], dict[str, Any]] = lambda _mine: {},
) -> dict[str, dict[str, Any]]:
    """Per mechanism (by key): its reloads' figures, plus ``extra(its records)``."""
    summary: dict[str, dict[str, Any]] = {}
    for mechanism in mechanisms:
        mine = [r for r in records if r.mechanism == mechanism.key]
        seconds = [r.seconds for r in mine]
        lags = [r.lag for r in mine if r.lag is not None]
        elapsed = [r.module_elapsed for r in mine if r.module_elapsed is not None]
        summary[mechanism.key] = {
            "label": mechanism.label,
            "reloads": len(mine),
            "seconds_median": median(seconds),
            "seconds_min": min(seconds, default=math.nan),
            "seconds_max": max(seconds, default=math.nan),
            "old_gone_median": median(r.old_gone_seconds for r in mine),
            "failed": sum(r.failed for r in mine),
            "min_serving": min(
                (r.min_serving for r in mine if r.min_serving is not None),
                default=None,
            ),
            "fast_max_latency": max(
                (r.fast_max_latency for r in mine if r.fast_max_latency is not None),
                default=None,
            ),
            "module_elapsed_median": median(elapsed) if elapsed else None,
            "lag_median": median(lags) if lags else None,
            "lag_max": max(lags) if lags else None,
            **extra(mine),
        }
    return summary


class Report(NamedTuple):
    summary: dict[str, dict[str, Any]]  # by mechanism key, see summarise
    conclusions: dict[str, Any]  # Bench.conclusions
    steady_min: int | None  # see steady_state_min
    runtime: float


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
    """The options of the uWSGI and gunicorn benchmarks; check them with ``check_common_arguments``."""
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


# -- the run -----------------------------------------------------------------------


class Bench(Generic[ServerT, S]):
    """One benchmark: a server under load for the whole run, reloaded round
    after round by each mechanism in turn, watched by an observer thread.

    A subclass names its server and mechanisms and fills in the hooks below
    (start and watch the server, trigger a native reload, measure a reload
    once triggered, print the table); ``run_benchmark`` runs it and reports.
    """

    server = "the server"  # in messages: "uWSGI", "gunicorn"
    module = ""  # the collection's module that the module mechanisms run
    mechanisms: tuple[Mechanism, ...] = ()
    native = ""  # the key of the native mechanism, the one the others compare with
    workdir_prefix = "reload-bench-"
    # Rotate the mechanisms each round, so none always follows the same one.
    rotate = True
    workers = 0  # the workers a reload replaces
    # Seconds a reload may still take once the trigger's timeout is over.
    settle_bound = 0.0
    think_seconds = 0.0  # the fast clients' pause between two requests
    pause_default = 1.0  # --pause
    pause_help = "seconds between reloads"

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.instance: ServerT | None = None
        self.observer: ChangeObserver[S] | None = None
        self.load: LoadGenerator | None = None
        self.runner: PlaybookRunner | None = None
        self.records: list[ReloadRecord] = []
        self.load_result: LoadResult | None = None
        # Monotonic bounds of the measured part of the load (warm-up excluded).
        self.measured_from = 0.0
        self.measured_until = 0.0

    # -- hooks -----------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The benchmark's command line."""
        add_common_arguments(parser, cls.pause_default, cls.pause_help)

    @classmethod
    def check_arguments(
        cls, parser: argparse.ArgumentParser, args: argparse.Namespace
    ) -> None:
        check_common_arguments(parser, args)

    def create_instance(self) -> ServerT:
        """The server's harness, not started yet."""
        raise NotImplementedError

    def create_observer(self, instance: ServerT) -> ChangeObserver[S]:
        raise NotImplementedError

    def describe_setup(self, instance: ServerT) -> str:
        """The server's setup, printed once the load is warm."""
        raise NotImplementedError

    def warm_requests(self) -> int:
        """Requests served so far, for the warm-up."""
        assert self.load is not None
        return self.load.fast_completed

    def check_settled(self, state: S | None, what: str) -> None:
        """Raise BenchmarkError unless ``state`` is a healthy server's."""

    def native_reload(self, mechanism: Mechanism) -> float:
        """Trigger the native reload; return when (monotonic)."""
        raise NotImplementedError

    def module_args(self) -> dict[str, Any]:
        """The module's arguments that name the server."""
        raise NotImplementedError

    def module_bound(self) -> float:
        """Seconds one module run may take, ansible-playbook included."""
        return self.args.reload_timeout + PLAYBOOK_OVERHEAD_BOUND

    def module_times(self, result: dict[str, Any]) -> tuple[float, float]:
        """The trigger and completion (monotonic) a module run reports."""
        completed = epoch_to_monotonic(float(result["completed_at"]))
        return completed - float(result["elapsed"]), completed

    def measure(self, triggered: Triggered) -> ReloadRecord:
        """Wait until the triggered reload is over; its record."""
        raise NotImplementedError

    def pause_seconds(self) -> float:
        """Seconds to sleep after a reload, before the next one."""
        return float(self.args.pause)

    def round_line(self, record: ReloadRecord) -> str:
        """The line printed after each reload."""
        raise NotImplementedError

    def summary_extra(self, records: list[ReloadRecord]) -> dict[str, Any]:
        """More summary figures of one mechanism's records."""
        return {}

    def conclusions(self, summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Figures drawn from the summary, for the report and the JSON."""
        return {}

    def config(self) -> dict[str, Any]:
        """The server's settings, for the JSON."""
        return {}

    def print_report(self, report: Report) -> None:
        raise NotImplementedError

    # -- the run ---------------------------------------------------------------------

    def _load_bound(self) -> float:
        # Each step is bounded; this is the load's own safety bound, generous
        # enough never to end a healthy run.
        per_reload = self.module_bound() + self.settle_bound + self.args.pause + 30.0
        return 120.0 + self.args.rounds * len(self.mechanisms) * per_reload

    def run(self) -> None:
        args = self.args
        print("building and installing the collection ...", flush=True)
        self.runner = PlaybookRunner(
            install_collection(self.workdir), self.workdir / "ansible"
        )
        self.instance = instance = self.create_instance()
        instance.start(timeout=30.0 + 4 * args.import_delay)
        self.observer = observer = self.create_observer(instance)
        observer.start()
        self.load = load = LoadGenerator(
            instance.base_url,
            concurrency=FAST_CONCURRENCY,
            slow_clients=args.slow_clients,
            slow_seconds=args.slow_seconds,
            min_requests=0,
            max_requests=50_000_000,
            max_seconds=self._load_bound(),
            think_seconds=self.think_seconds,
        )
        # The observer and the clients share this process: a full collection
        # over the hundreds of thousands of recorded responses (>100 ms late in
        # a run) would freeze both and show up as reload time and latency.
        # They form no reference cycles, so nothing is lost by not collecting.
        gc.disable()
        load_started = time.monotonic()
        load.start()
        # Warm up until fast traffic flows and the first slow requests have
        # been replaced, so slow requests are in flight at random phases.
        poll_until(
            lambda: self.warm_requests() >= WARMUP_REQUESTS
            and time.monotonic() - load_started > args.slow_seconds + 0.5,
            30.0 + args.slow_seconds,
            "warm-up traffic",
        )
        self.measured_from = time.monotonic()
        print(
            f"{self.describe_setup(instance)}; load: {FAST_CONCURRENCY} fast clients +"
            f" {args.slow_clients} slow ({args.slow_seconds}s)",
            flush=True,
        )

        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(self.mechanisms) if self.rotate else 0
            for mechanism in self.mechanisms[shift:] + self.mechanisms[:shift]:
                record = self.reload(round_no, mechanism)
                self.records.append(record)
                print(self.round_line(record), flush=True)

        self.measured_until = time.monotonic()
        self.load_result = load.stop()
        gc.enable()
        observer.check()
        observer.stop()
        if self.load_result.end_reason != "stop":
            raise BenchmarkError(
                f"the load ended by {self.load_result.end_reason} before the benchmark did"
            )
        if not instance.running:
            raise BenchmarkError(
                f"{self.server} exited during the run\n{instance.log_tail()}"
            )
        self.analyse()

    def reload(self, round_no: int, mechanism: Mechanism) -> ReloadRecord:
        """One reload: triggered, measured, then the pause before the next."""
        instance, observer = self.instance, self.observer
        assert instance is not None and observer is not None
        observer.check()
        if not instance.running:
            raise BenchmarkError(f"{self.server} is not running\n{instance.log_tail()}")
        self.check_settled(observer.latest(), "before the reload")

        release = f"r{round_no}-{mechanism.key}"
        instance.set_release(release)
        completed: float | None = None
        result: dict[str, Any] = {}
        if mechanism.module_args is None:
            trigger = self.native_reload(mechanism)
        else:
            result = self._run_module(mechanism)
            trigger, completed = self.module_times(result)
        record = self.measure(
            Triggered(round_no, mechanism, release, trigger, completed, result)
        )
        record.observer_max_gap = observer.max_gap(record.trigger, record.end)
        record.pause = self.pause_seconds()
        time.sleep(record.pause)
        return record

    def _run_module(self, mechanism: Mechanism) -> dict[str, Any]:
        instance, runner = self.instance, self.runner
        assert instance is not None and runner is not None and mechanism.module_args
        result = runner.run_module(
            self.module,
            {
                **self.module_args(),
                "timeout": self.args.reload_timeout,
                **mechanism.module_args,
            },
            timeout=self.module_bound(),
        )
        if result.get("failed") or "completed_at" not in result:
            raise BenchmarkError(
                f"{mechanism.label} failed: {result.get('msg')}\n{instance.log_tail(20)}"
            )
        return result

    def analyse(self) -> None:
        assert self.load_result is not None
        analyse(self.records, self.load_result)

    def close(self) -> None:
        gc.enable()
        if self.load is not None and self.load_result is None:
            try:
                self.load_result = self.load.stop()
            except RuntimeError as exc:
                print(f"warning: {exc}", file=sys.stderr)
        if self.observer is not None:
            self.observer.stop()
        if self.instance is not None:
            self.instance.stop()

    # -- the report ------------------------------------------------------------------

    def report(self, runtime: float) -> None:
        """Print the report; write the JSON document if asked to."""
        load, observer = self.load_result, self.observer
        assert load is not None and observer is not None
        summary = summarise(self.records, self.mechanisms, self.summary_extra)
        conclusions = self.conclusions(summary)
        steady_min = steady_state_min(
            self.records, load, self.measured_from, self.measured_until
        )
        self.print_report(Report(summary, conclusions, steady_min, runtime))
        if not self.args.json:
            return
        args = self.args
        document = {
            "config": {
                **self.config(),
                "rounds": args.rounds,
                "import_delay": args.import_delay,
                "fast_clients": FAST_CONCURRENCY,
                "slow_clients": args.slow_clients,
                "slow_seconds": args.slow_seconds,
                "pause": args.pause,
                "observer_interval": observer.interval,
                "client_window": CLIENT_WINDOW,
                "window_margin": WINDOW_MARGIN,
            },
            "reloads": [r.to_json(load.started_at) for r in self.records],
            "summary": summary,
            **conclusions,
            "load": load_json(load),
            "steady_state_min_serving": steady_min,
            "observer": {
                "polls": observer.polls,
                "errors": observer.errors,
                "max_gap": observer.max_gap(),
            },
            "runtime": runtime,
        }
        args.json.write_text(
            json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n"
        )
        print(f"raw figures written to {args.json}")

    def ratios(self, summary: dict[str, dict[str, Any]]) -> dict[str, float]:
        """Median seconds of each other mechanism over the native one's."""
        native = summary[self.native]["seconds_median"]
        return {
            key: row["seconds_median"] / native if native > 0 else math.nan
            for key, row in summary.items()
            if key != self.native
        }

    def load_line(self) -> str:
        assert self.load_result is not None
        return describe_load(self.load_result)

    def floor_line(self, column: str, steady_min: int | None) -> str:
        # Without this floor the reload columns read as lost workers: a worker
        # whose threads all hold slow requests serves no fast request either.
        return (
            f"{column} = fewest distinct pids serving fast requests per"
            f" {CLIENT_WINDOW * 1000:.0f} ms window; outside reloads, under the same load:"
            f" {steady_min if steady_min is not None else '-'} of {self.workers}"
        )

    def observer_line(self) -> str:
        observer = self.observer
        assert observer is not None
        in_reloads = max((r.observer_max_gap for r in self.records), default=0.0)
        return (
            f"{observer.name}: {observer.polls} polls every {observer.interval * 1000:.0f} ms,"
            f" longest gap {observer.max_gap() * 1000:.0f} ms overall and"
            f" {in_reloads * 1000:.0f} ms within reloads, {observer.errors} unanswered"
        )


def parse_args(
    bench_class: type[Bench[Any, Any]], doc: str, argv: Sequence[str] | None
) -> argparse.Namespace:
    """The command line of the benchmark that ``doc`` (its script's docstring) describes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    bench_class.add_arguments(parser)
    args = parser.parse_args(argv)
    bench_class.check_arguments(parser, args)
    return args


def run_benchmark(
    bench_class: type[Bench[Any, Any]], doc: str, argv: Sequence[str] | None
) -> int:
    """Run one benchmark with the command line ``argv`` and print its report:
    0, or 1 if the run failed."""
    args = parse_args(bench_class, doc, argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=bench_class.workdir_prefix))
    bench = bench_class(args, workdir)
    try:
        bench.run()
    except (
        BenchmarkError,
        AnsibleRunError,
        RuntimeError,
        TimeoutError,
        subprocess.SubprocessError,
    ) as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        print(f"(work directory kept: {workdir})", file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        print(f"(work directory kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        bench.close()
    bench.report(time.monotonic() - started)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0

"""Benchmark graceful.wsgi.uwsgi_reload against uWSGI's own touch-chain-reload.

One uWSGI instance (4 processes x 2 threads, lazy-apps, a slow app import) is
kept under HTTP load - fast requests plus slow ones always in flight - for the
whole run, and reloaded round after round by three mechanisms in turn:

  native      touch the instance's touch-chain-reload file (``os.utime``)
  chain       the module with ``mode: chain`` through the master FIFO
  rolling2    the module with ``mode: rolling, max_unavailable: 2``

Each reload ships a new release. Nothing the module reports is trusted for
the figures except its trigger and completion times: a thread of this script
polls the stats socket every 10 ms and the load generator records every HTTP
response, and the figures come from those.

Usage (from the repository root, with the venv's python):

    python benchmarks/uwsgi_reload.py [--rounds N] [--json PATH]

The script reports and does not judge: it exits 0 whatever the figures, and
non-zero only when a reload did not complete or the instance broke.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    CLIENT_WINDOW,
    FAST_CONCURRENCY,
    OBSERVER_INTERVAL,
    PLAYBOOK_OVERHEAD_BOUND,
    WARMUP_REQUESTS,
    WINDOW_MARGIN,
    BenchmarkError,
    ChangeObserver,
    add_common_arguments,
    check_common_arguments,
    describe_load,
    distinct_pids_per_window,
    epoch_to_monotonic,
    fast_served,
    json_safe,
    load_json,
    median,
    quiet_min,
)
from tests.support.ansible_runner import AnsibleRunError, PlaybookRunner, install_collection  # noqa: E402
from tests.support.loadgen import LoadGenerator, LoadResult  # noqa: E402
from tests.support.uwsgi_instance import UwsgiInstance, poll_until  # noqa: E402


PROCESSES = 4
THREADS = 2
ROLLING_BATCH = 2

TARGET_CHAIN_RATIO = 1.1
TARGET_ROLLING_RATIO = 0.55
TARGET_DETECTION_LAG = 0.3

FORKBOMB_MARKER = b"respawning too fast"


class Mechanism(NamedTuple):
    key: str
    label: str
    module_args: dict[str, Any] | None  # None: uWSGI's own touch-chain-reload


MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("native", "native touch-chain", None),
    Mechanism("chain", "module chain", {"mode": "chain"}),
    Mechanism(
        "rolling2",
        f"module rolling({ROLLING_BATCH})",
        {"mode": "rolling", "max_unavailable": ROLLING_BATCH},
    ),
)


# -- independent observer of the stats socket ----------------------------------


class WorkerState(NamedTuple):
    wid: int
    pid: int
    accepting: bool
    has_apps: bool

    @property
    def serving(self) -> bool:
        return self.pid > 0 and self.accepting and self.has_apps


State = tuple[WorkerState, ...]


def describe_state(state: State | None) -> str:
    if state is None:
        return "no stats sample"
    return "; ".join(
        f"#{w.wid} pid={w.pid} accepting={int(w.accepting)} apps={int(w.has_apps)}"
        for w in state
    )


class StatsObserver(ChangeObserver[State]):
    """Polls the stats socket at a fixed rate and keeps every state change.

    Only changes are stored, each stamped with the monotonic time of the poll
    that first showed it, so "when did the observer first see X" is a lookup.
    """

    def __init__(self, instance: UwsgiInstance, interval: float = OBSERVER_INTERVAL):
        super().__init__(self._read_state, "stats observer", interval)
        self._instance = instance

    def _read_state(self) -> State | None:
        try:
            workers = self._instance.workers()
        except (OSError, ValueError, KeyError):
            return None
        return tuple(
            sorted(
                WorkerState(
                    int(w.get("id", 0)),
                    int(w.get("pid", 0)),
                    w.get("accepting") == 1,
                    bool(w.get("apps")),
                )
                for w in workers
            )
        )

    def first_change(self, after: float, old_pids: frozenset[int]) -> float | None:
        """When the observer first saw an old worker gone after ``after``."""
        return self.first_after(
            after, lambda state: not old_pids <= {w.pid for w in state}
        )

    def wait_rollover(
        self, after: float, old_pids: frozenset[int], timeout: float
    ) -> float:
        """Time at which the observer first saw every worker on a new pid,
        accepting with its app loaded (after ``after``); waits up to ``timeout``."""

        def replaced(state: State) -> bool:
            return len(state) == PROCESSES and all(
                w.serving and w.pid not in old_pids for w in state
            )

        found = self.wait_first(after, replaced, timeout)
        if found is None:
            raise BenchmarkError(
                f"reload not complete {timeout:.0f}s after the trigger: "
                f"{describe_state(self.latest())}\n{self._instance.log_tail(20)}"
            )
        return found


# -- one reload ------------------------------------------------------------------


@dataclass
class ReloadRecord:
    round: int
    mechanism: str
    release: str
    old_pids: list[int]
    new_pids: list[int]
    trigger: float  # monotonic
    done: float  # monotonic, as seen by the observer
    first_change: float | None  # observer saw the first old worker gone
    completed: float | None = None  # module only: its completed_at, monotonic
    module_elapsed: float | None = None
    module_min_accepting: int | None = None
    forkbomb_sleeps: int = 0
    observer_max_gap: float = 0.0
    # Filled in from the load's responses once the load has stopped.
    requests: int = 0
    failed: int = 0
    min_workers_accepting: int | None = None
    client_windows: list[int] = field(default_factory=list)
    fast_max_latency: float | None = None

    @property
    def seconds(self) -> float:
        return self.done - self.trigger

    @property
    def detection_lag(self) -> float | None:
        return None if self.completed is None else self.completed - self.done

    def to_json(self, origin: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - origin, 4)

        lag = self.detection_lag
        return {
            "round": self.round,
            "mechanism": self.mechanism,
            "release": self.release,
            "seconds": round(self.seconds, 4),
            "detection_lag": None if lag is None else round(lag, 4),
            "failed": self.failed,
            "requests_in_window": self.requests,
            "min_workers_accepting": self.min_workers_accepting,
            "client_windows": self.client_windows,
            "fast_max_latency": self.fast_max_latency,
            "module_elapsed": self.module_elapsed,
            "module_min_accepting": self.module_min_accepting,
            "forkbomb_sleeps": self.forkbomb_sleeps,
            "observer_max_gap": round(self.observer_max_gap, 4),
            # Seconds since the load started, to line reloads up with each other.
            "trigger_at": rel(self.trigger),
            "first_change_at": rel(self.first_change),
            "done_at": rel(self.done),
            "completed_at": rel(self.completed),
            "old_pids": self.old_pids,
            "new_pids": self.new_pids,
        }


def serving_pids(state: State | None, what: str) -> frozenset[int]:
    """Pids of a healthy instance, or BenchmarkError: every reload must start
    from all workers serving, or its figures mean nothing."""
    if state is None or len(state) != PROCESSES or not all(w.serving for w in state):
        raise BenchmarkError(f"instance not healthy {what}: {describe_state(state)}")
    return frozenset(w.pid for w in state)


def touch_chain_file(path: Path) -> float:
    """Touch ``path`` so uWSGI notices; return the monotonic time of the touch.

    uWSGI only reacts when st_mtime grows in whole seconds, so a touch in the
    same second as the previous one would be ignored.
    """
    poll_until(
        lambda: int(time.time()) > int(path.stat().st_mtime),
        2.0,
        f"a new second on the clock for {path}",
        interval=0.01,
    )
    trigger = time.monotonic()
    os.utime(path)
    return trigger


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.instance: UwsgiInstance | None = None
        self.observer: StatsObserver | None = None
        self.load: LoadGenerator | None = None
        self.runner: PlaybookRunner | None = None
        self.records: list[ReloadRecord] = []
        self.load_result: LoadResult | None = None
        # Monotonic bounds of the measured part of the load (warm-up excluded).
        self.measured_from = 0.0
        self.measured_until = 0.0

    # Each step is bounded; this is the load's own safety bound, generous
    # enough never to end a healthy run.
    def _load_bound(self) -> float:
        per_reload = (
            self.args.reload_timeout + PLAYBOOK_OVERHEAD_BOUND + self.args.pause + 30.0
        )
        return 120.0 + self.args.rounds * len(MECHANISMS) * per_reload

    def run(self) -> None:
        args = self.args
        print("building and installing the collection ...", flush=True)
        self.runner = PlaybookRunner(
            install_collection(self.workdir), self.workdir / "ansible"
        )

        self.instance = instance = UwsgiInstance(
            self.workdir / "instance",
            processes=PROCESSES,
            threads=THREADS,
            lazy_apps=True,
            import_delay=args.import_delay,
            release="r0-start",
        )
        instance.start(timeout=30.0 + 4 * args.import_delay)
        self.observer = StatsObserver(instance)
        self.observer.start()
        self.load = LoadGenerator(
            instance.base_url,
            concurrency=FAST_CONCURRENCY,
            slow_clients=args.slow_clients,
            slow_seconds=args.slow_seconds,
            min_requests=0,
            max_requests=50_000_000,
            max_seconds=self._load_bound(),
        )
        # The observer and the clients share this process: a full collection
        # over the hundreds of thousands of recorded responses (>100 ms late in
        # a run) would freeze both and show up as reload time and latency.
        # They form no reference cycles, so nothing is lost by not collecting.
        gc.disable()
        load_started = time.monotonic()
        self.load.start()
        # Warm up until fast traffic flows and the first slow requests have
        # been replaced, so slow requests are in flight at random phases.
        poll_until(
            lambda: sum(w["requests"] for w in instance.workers()) >= WARMUP_REQUESTS
            and time.monotonic() - load_started > args.slow_seconds + 0.5,
            30.0 + args.slow_seconds,
            "warm-up traffic",
        )
        self.measured_from = time.monotonic()
        print(
            f"uWSGI on {instance.base_url}: {PROCESSES} processes x {THREADS} threads,"
            f" lazy-apps, import {args.import_delay}s; load: {FAST_CONCURRENCY} fast"
            f" clients + {args.slow_clients} slow ({args.slow_seconds}s)",
            flush=True,
        )

        for round_no in range(1, args.rounds + 1):
            # Rotated each round so no mechanism always follows the same one.
            shift = (round_no - 1) % len(MECHANISMS)
            for mechanism in MECHANISMS[shift:] + MECHANISMS[:shift]:
                record = self._reload(round_no, mechanism)
                self.records.append(record)
                lag = record.detection_lag
                print(
                    f"  round {round_no} {mechanism.label:<20} {record.seconds:6.2f}s"
                    + ("" if lag is None else f"  detection lag {lag * 1000:5.0f}ms")
                    + (
                        f"  [uWSGI fork-bomb sleep x{record.forkbomb_sleeps}]"
                        if record.forkbomb_sleeps
                        else ""
                    ),
                    flush=True,
                )

        self.measured_until = time.monotonic()
        self.load_result = self.load.stop()
        gc.enable()
        self.observer.check()
        self.observer.stop()
        if self.load_result.end_reason != "stop":
            raise BenchmarkError(
                f"the load ended by {self.load_result.end_reason} before the benchmark did"
            )
        if not instance.running:
            raise BenchmarkError(f"uWSGI exited during the run\n{instance.log_tail()}")
        analyse(self.records, self.load_result)

    def _reload(self, round_no: int, mechanism: Mechanism) -> ReloadRecord:
        args = self.args
        instance, observer, runner = self.instance, self.observer, self.runner
        assert instance is not None and observer is not None and runner is not None
        observer.check()
        if not instance.running:
            raise BenchmarkError(f"uWSGI is not running\n{instance.log_tail()}")
        serving_pids(observer.latest(), "before the reload")

        release = f"r{round_no}-{mechanism.key}"
        instance.set_release(release)
        log_offset = instance.log_path.stat().st_size
        completed: float | None = None
        module_result: dict[str, Any] = {}

        if mechanism.module_args is None:
            trigger = touch_chain_file(instance.touch_chain_path)
        else:
            module_args = {
                "master_fifo": str(instance.fifo_path),
                "stats": str(instance.stats_path),
                "timeout": args.reload_timeout,
                **mechanism.module_args,
            }
            module_result = runner.run_module(
                "uwsgi_reload",
                module_args,
                timeout=args.reload_timeout + PLAYBOOK_OVERHEAD_BOUND,
            )
            if module_result.get("failed") or "completed_at" not in module_result:
                raise BenchmarkError(
                    f"{mechanism.label} failed: {module_result.get('msg')}\n"
                    f"{instance.log_tail(20)}"
                )
            completed = epoch_to_monotonic(float(module_result["completed_at"]))
            trigger = completed - float(module_result["elapsed"])

        old_pids = serving_pids(observer.state_at(trigger), "at the trigger")
        if module_result:
            module_before = {
                int(w["pid"]) for w in module_result.get("workers_before", [])
            }
            if module_before != old_pids:
                raise BenchmarkError(
                    f"workers changed outside the reload: the module saw {sorted(module_before)},"
                    f" the observer {sorted(old_pids)}"
                )
        # A module run has already proven completion, so the observer only
        # needs a moment to catch up; a native reload is waited for here.
        remaining = args.reload_timeout - (time.monotonic() - trigger)
        done = observer.wait_rollover(trigger, old_pids, max(remaining, 5.0))
        new_state = observer.state_at(done)
        new_pids = serving_pids(new_state, "after the reload")

        # Proof of the new code, from HTTP: the stats cannot tell what a worker imported.
        instance.wait_all_workers_serving(release, timeout=30.0, replaced_pids=old_pids)

        # Lets uWSGI's fork-bomb counter reset: it sleeps forkbomb-delay (2 s)
        # once more than `processes` respawns follow each other within ~1 s,
        # and one reload's last respawn is ~import_delay before it completes.
        time.sleep(args.pause)
        with open(instance.log_path, "rb") as log:
            log.seek(log_offset)
            forkbomb_sleeps = log.read().count(FORKBOMB_MARKER)

        return ReloadRecord(
            round=round_no,
            mechanism=mechanism.key,
            release=release,
            old_pids=sorted(old_pids),
            new_pids=sorted(new_pids),
            trigger=trigger,
            done=done,
            first_change=observer.first_change(trigger, old_pids),
            completed=completed,
            module_elapsed=module_result.get("elapsed"),
            module_min_accepting=module_result.get("min_accepting"),
            forkbomb_sleeps=forkbomb_sleeps,
            observer_max_gap=observer.max_gap(trigger, done),
        )

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


# -- analysis ----------------------------------------------------------------------


def analyse(records: list[ReloadRecord], load: LoadResult) -> None:
    starts, pids = fast_served(load)
    for record in records:
        lo, hi = record.trigger - WINDOW_MARGIN, record.done + WINDOW_MARGIN
        overlapping = [r for r in load.responses if r.t_start <= hi and r.t_end >= lo]
        record.requests = len(overlapping)
        record.failed = sum(1 for r in overlapping if not r.ok)
        record.fast_max_latency = max(
            (round(r.t_end - r.t_start, 4) for r in overlapping if r.kind == "fast"),
            default=None,
        )
        record.client_windows = distinct_pids_per_window(
            starts, pids, record.trigger, record.done
        )
        record.min_workers_accepting = min(record.client_windows)


def steady_state_min(
    records: list[ReloadRecord], load: LoadResult, begin: float, end: float
) -> int | None:
    """The same client-side count between reloads (from ``begin`` to ``end``):
    what "every worker accepting" looks like from the client under this load."""
    return quiet_min(
        load,
        begin,
        end,
        [(r.trigger - WINDOW_MARGIN, r.done + WINDOW_MARGIN) for r in records],
    )


# -- report ------------------------------------------------------------------------


def summarise(records: list[ReloadRecord]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for mechanism in MECHANISMS:
        mine = [r for r in records if r.mechanism == mechanism.key]
        seconds = [r.seconds for r in mine]
        lags = [r.detection_lag for r in mine if r.detection_lag is not None]
        summary[mechanism.key] = {
            "label": mechanism.label,
            "reloads": len(mine),
            "seconds_median": median(seconds),
            "seconds_min": min(seconds, default=math.nan),
            "seconds_max": max(seconds, default=math.nan),
            "failed": sum(r.failed for r in mine),
            "min_workers_accepting": min(
                (
                    r.min_workers_accepting
                    for r in mine
                    if r.min_workers_accepting is not None
                ),
                default=None,
            ),
            "detection_lag_median": median(lags) if lags else None,
            "detection_lag_max": max(lags) if lags else None,
            "forkbomb_sleeps": sum(r.forkbomb_sleeps for r in mine),
        }
    return summary


def verdicts(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    native = summary["native"]["seconds_median"]
    lags = [
        s["detection_lag_max"]
        for s in summary.values()
        if s["detection_lag_max"] is not None
    ]
    rows = [
        (
            "chain/native",
            summary["chain"]["seconds_median"] / native,
            TARGET_CHAIN_RATIO,
            "",
        ),
        (
            f"rolling({ROLLING_BATCH})/native",
            summary["rolling2"]["seconds_median"] / native,
            TARGET_ROLLING_RATIO,
            "",
        ),
        (
            "detection lag (max)",
            max(lags) if lags else math.nan,
            TARGET_DETECTION_LAG,
            "s",
        ),
    ]
    return [
        {
            "name": name,
            "value": value,
            "target": target,
            "unit": unit,
            "pass": bool(value <= target),
        }
        for name, value, target, unit in rows
    ]


def print_report(
    summary: dict[str, dict[str, Any]],
    checks: list[dict[str, Any]],
    load: LoadResult,
    steady_min: int | None,
    records: list[ReloadRecord],
    observer: StatsObserver,
    runtime: float,
) -> None:
    header = (
        f"{'mechanism':<20} {'n':>2}  {'seconds median (min-max)':<26}{'failed':>7}"
        f"  {'min accepting':>13}  {'detection lag med/max':>22}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in summary.values():
        seconds = f"{row['seconds_median']:.2f} ({row['seconds_min']:.2f}-{row['seconds_max']:.2f})"
        lag = (
            "-"
            if row["detection_lag_median"] is None
            else f"{row['detection_lag_median'] * 1000:.0f}/{row['detection_lag_max'] * 1000:.0f} ms"
        )
        accepting = (
            "-"
            if row["min_workers_accepting"] is None
            else row["min_workers_accepting"]
        )
        print(
            f"{row['label']:<20} {row['reloads']:>2}  {seconds:<26}{row['failed']:>7}"
            f"  {accepting:>13}  {lag:>22}"
        )
    print()
    for check in checks:
        value = f"{check['value']:.2f}{check['unit']}"
        target = f"<= {check['target']:.2f}{check['unit']}"
        print(
            f"{check['name']:<22} {value:>8}   target {target:<9} {'PASS' if check['pass'] else 'MISS'}"
        )
    print()
    print(describe_load(load))
    # Without this floor the reload columns read as lost workers: a worker
    # whose threads all hold slow requests serves no fast request either.
    print(
        f"min accepting = fewest distinct pids serving fast requests per"
        f" {CLIENT_WINDOW * 1000:.0f} ms window; outside reloads, under the same load:"
        f" {steady_min if steady_min is not None else '-'} of {PROCESSES}"
    )
    in_reloads = max((r.observer_max_gap for r in records), default=0.0)
    print(
        f"stats observer: {observer.polls} polls every {OBSERVER_INTERVAL * 1000:.0f} ms,"
        f" longest gap {observer.max_gap() * 1000:.0f} ms overall and"
        f" {in_reloads * 1000:.0f} ms within reloads, {observer.errors} unanswered"
    )
    sleeps = sum(row["forkbomb_sleeps"] for row in summary.values())
    if sleeps:
        print(
            f"note: uWSGI's fork-bomb protection slept {sleeps} time(s); see per-round lines"
        )
    print(f"total runtime: {runtime:.1f}s")


# -- entry point -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    add_common_arguments(
        parser,
        pause_default=2.0,
        pause_help="seconds between reloads, to keep clear of uWSGI's fork-bomb"
        " protection",
    )
    args = parser.parse_args(argv)
    check_common_arguments(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="uwsgi-reload-bench-"))
    bench = Bench(args, workdir)
    try:
        bench.run()
    except (BenchmarkError, AnsibleRunError, TimeoutError, subprocess.SubprocessError) as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        print(f"(work directory kept: {workdir})", file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        print(f"(work directory kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        bench.close()

    assert bench.load_result is not None
    runtime = time.monotonic() - started
    summary = summarise(bench.records)
    checks = verdicts(summary)
    steady_min = steady_state_min(
        bench.records, bench.load_result, bench.measured_from, bench.measured_until
    )
    assert bench.observer is not None
    print_report(
        summary,
        checks,
        bench.load_result,
        steady_min,
        bench.records,
        bench.observer,
        runtime,
    )
    if args.json:
        load = bench.load_result
        document = {
            "config": {
                "rounds": args.rounds,
                "processes": PROCESSES,
                "threads": THREADS,
                "import_delay": args.import_delay,
                "fast_clients": FAST_CONCURRENCY,
                "slow_clients": args.slow_clients,
                "slow_seconds": args.slow_seconds,
                "pause": args.pause,
                "observer_interval": OBSERVER_INTERVAL,
                "client_window": CLIENT_WINDOW,
                "window_margin": WINDOW_MARGIN,
            },
            "reloads": [r.to_json(load.started_at) for r in bench.records],
            "summary": summary,
            "checks": checks,
            "load": load_json(load),
            "steady_state_min_workers_accepting": steady_min,
            "observer": {
                "polls": bench.observer.polls,
                "errors": bench.observer.errors,
                "max_gap": bench.observer.max_gap(),
            },
            "runtime": runtime,
        }
        args.json.write_text(
            json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n"
        )
        print(f"raw figures written to {args.json}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    Bench,
    BenchmarkError,
    ChangeObserver,
    Mechanism,
    ReloadRecord,
    Report,
    Triggered,
    run_benchmark,
)
from tests.support.process import poll_until  # noqa: E402
from tests.support.uwsgi_instance import UwsgiInstance  # noqa: E402

WORKERS = 4
THREADS = 2
ROLLING_BATCH = 2

TARGET_CHAIN_RATIO = 1.1
TARGET_ROLLING_RATIO = 0.55
TARGET_LAG = 0.3

FORKBOMB_MARKER = b"respawning too fast"

MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("native", "native touch-chain", None),  # uWSGI's own touch-chain-reload
    Mechanism("chain", "module chain", {"mode": "chain"}),
    Mechanism(
        "rolling2",
        f"module rolling({ROLLING_BATCH})",
        {"mode": "rolling", "max_unavailable": ROLLING_BATCH},
    ),
)
LABELS = {mechanism.key: mechanism.label for mechanism in MECHANISMS}


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

    def __init__(self, instance: UwsgiInstance) -> None:
        super().__init__(self._read_state, "stats observer")
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
            return len(state) == WORKERS and all(
                w.serving and w.pid not in old_pids for w in state
            )

        found = self.wait_first(after, replaced, timeout)
        if found is None:
            raise BenchmarkError(
                f"reload not complete {timeout:.0f}s after the trigger: "
                f"{describe_state(self.latest())}\n{self._instance.log_tail(20)}"
            )
        return found


def serving_pids(state: State | None, what: str) -> frozenset[int]:
    """Pids of a healthy instance, or BenchmarkError: every reload must start
    from all workers serving, or its figures mean nothing."""
    if state is None or len(state) != WORKERS or not all(w.serving for w in state):
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


# -- the benchmark -----------------------------------------------------------------


class UwsgiBench(Bench[UwsgiInstance, State]):
    server = "uWSGI"
    module = "uwsgi_reload"
    mechanisms = MECHANISMS
    native = "native"
    workers = WORKERS
    workdir_prefix = "uwsgi-reload-bench-"
    pause_default = 2.0
    pause_help = "seconds between reloads, to keep clear of uWSGI's fork-bomb protection"

    def create_instance(self) -> UwsgiInstance:
        return UwsgiInstance(
            self.workdir / "instance",
            processes=WORKERS,
            threads=THREADS,
            lazy_apps=True,
            import_delay=self.args.import_delay,
            release="r0-start",
        )

    def create_observer(self, instance: UwsgiInstance) -> StatsObserver:
        return StatsObserver(instance)

    def warm_requests(self) -> int:
        assert self.instance is not None
        return sum(w["requests"] for w in self.instance.workers())

    def describe_setup(self, instance: UwsgiInstance) -> str:
        args = self.args
        return (
            f"uWSGI on {instance.base_url}: {WORKERS} processes x {THREADS} threads,"
            f" lazy-apps, import {args.import_delay}s"
        )

    def check_settled(self, state: State | None, what: str) -> None:
        serving_pids(state, what)

    def native_reload(self, mechanism: Mechanism) -> float:
        assert self.instance is not None
        return touch_chain_file(self.instance.touch_chain_path)

    def module_args(self) -> dict[str, Any]:
        assert self.instance is not None
        return {
            "master_fifo": str(self.instance.fifo_path),
            "stats": str(self.instance.stats_path),
        }

    def round_line(self, record: ReloadRecord) -> str:
        lag = record.lag
        sleeps = record.details["forkbomb_sleeps"]
        return (
            f"  round {record.round} {LABELS[record.mechanism]:<20} {record.seconds:6.2f}s"
            + ("" if lag is None else f"  detection lag {lag * 1000:5.0f}ms")
            + (f"  [uWSGI fork-bomb sleep x{sleeps}]" if sleeps else "")
        )

    # -- one reload ----------------------------------------------------------------

    def reload(self, round_no: int, mechanism: Mechanism) -> ReloadRecord:
        assert self.instance is not None
        log_path = self.instance.log_path
        log_offset = log_path.stat().st_size
        # The pause after the reload lets uWSGI's fork-bomb counter reset: it
        # sleeps forkbomb-delay (2 s) once more than `processes` respawns
        # follow each other within ~1 s, and one reload's last respawn is
        # ~import_delay before it completes.
        record = super().reload(round_no, mechanism)
        with open(log_path, "rb") as log:
            log.seek(log_offset)
            record.details["forkbomb_sleeps"] = log.read().count(FORKBOMB_MARKER)
        return record

    def measure(self, triggered: Triggered) -> ReloadRecord:
        instance, observer = self.instance, self.observer
        assert isinstance(observer, StatsObserver) and instance is not None
        trigger, module_result = triggered.at, triggered.module_result
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
        remaining = self.args.reload_timeout - (time.monotonic() - trigger)
        done = observer.wait_rollover(trigger, old_pids, max(remaining, 5.0))
        new_pids = serving_pids(observer.state_at(done), "after the reload")

        # Proof of the new code, from HTTP: the stats cannot tell what a worker imported.
        instance.wait_all_workers_serving(
            triggered.release, timeout=30.0, replaced_pids=old_pids
        )
        return triggered.record(
            done=done,
            # The observer saw the first old worker gone.
            moments={"first_change": observer.first_change(trigger, old_pids)},
            details={
                "module_min_accepting": module_result.get("min_accepting"),
                "old_pids": sorted(old_pids),
                "new_pids": sorted(new_pids),
            },
        )

    # -- report --------------------------------------------------------------------

    def summary_extra(self, records: list[ReloadRecord]) -> dict[str, Any]:
        return {"forkbomb_sleeps": sum(r.details["forkbomb_sleeps"] for r in records)}

    def conclusions(self, summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
        ratio = self.ratios(summary)
        lags = [s["lag_max"] for s in summary.values() if s["lag_max"] is not None]
        rows = [
            ("chain/native", ratio["chain"], TARGET_CHAIN_RATIO, ""),
            (f"rolling({ROLLING_BATCH})/native", ratio["rolling2"], TARGET_ROLLING_RATIO, ""),
            ("detection lag (max)", max(lags) if lags else math.nan, TARGET_LAG, "s"),
        ]
        return {
            "checks": [
                {
                    "name": name,
                    "value": value,
                    "target": target,
                    "unit": unit,
                    "pass": bool(value <= target),
                }
                for name, value, target, unit in rows
            ]
        }

    def config(self) -> dict[str, Any]:
        return {"workers": WORKERS, "threads": THREADS}

    def print_report(self, report: Report) -> None:
        summary = report.summary
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
                if row["lag_median"] is None
                else f"{row['lag_median'] * 1000:.0f}/{row['lag_max'] * 1000:.0f} ms"
            )
            accepting = "-" if row["min_serving"] is None else row["min_serving"]
            print(
                f"{row['label']:<20} {row['reloads']:>2}  {seconds:<26}{row['failed']:>7}"
                f"  {accepting:>13}  {lag:>22}"
            )
        print()
        for check in report.conclusions["checks"]:
            value = f"{check['value']:.2f}{check['unit']}"
            target = f"<= {check['target']:.2f}{check['unit']}"
            print(
                f"{check['name']:<22} {value:>8}   target {target:<9} {'PASS' if check['pass'] else 'MISS'}"
            )
        print()
        print(self.load_line())
        print(self.floor_line("min accepting", report.steady_min))
        print(self.observer_line())
        sleeps = sum(row["forkbomb_sleeps"] for row in summary.values())
        if sleeps:
            print(
                f"note: uWSGI's fork-bomb protection slept {sleeps} time(s); see per-round lines"
            )
        print(f"total runtime: {report.runtime:.1f}s")


# -- entry point -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(UwsgiBench, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

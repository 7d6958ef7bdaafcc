"""Benchmark graceful.wsgi.uwsgi_vassals_reload against touching every vassal config at once.

A real Emperor runs N single-process vassals subscribed to a FastRouter (HTTP router in front), kept under
HTTP load - fast requests plus slow ones always in flight - for the whole run. Each round ships a new release
and reloads every vassal three ways in turn:

  native      touch every vassal's config at once: the Emperor reloads them all together
  min1        the module with ``min_active: 1``: N - 1 at once, then the last
  serial      the module with ``min_active: N - 1``: one by one

Figures come from this script, not from the module: a thread reads both stats servers every 20 ms (a vassal
serves when the Emperor runs it, it accepts and its FastRouter subscription is live) and the load generator
records every response. Seconds run from the trigger (the touch, or the module's first drain) until every
vassal serves the new code again; for the module, its own start and completion stamps bound the window. A
failed request counts for the last reload triggered before it started.

Usage (from the repository root, with the venv's python; ``make benchmark``):

    python benchmarks/emperor_reload.py [--rounds N] [--vassals N] [--json PATH]

It reports and does not judge: it exits 0 whatever the figures, and non-zero only when a reload did not
complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    PLAYBOOK_OVERHEAD_BOUND,
    Bench,
    ChangeObserver,
    Mechanism,
    ReloadRecord,
    Report,
    Triggered,
    epoch_to_monotonic,
    run_benchmark,
)
from tests.support.emperor_fleet import EmperorFleet  # noqa: E402
from tests.support.loadgen import LoadGenerator, LoadResult  # noqa: E402
from tests.support.process import poll_until  # noqa: E402

OBSERVE_EVERY = 0.02


def touch_all(fleet: EmperorFleet) -> float:
    now = time.time()
    for config in sorted(fleet.emperor_dir.glob("*.ini")):
        mtime = max(int(now), int(config.stat().st_mtime) + 1)
        os.utime(config, (mtime, mtime))
    return time.monotonic()


def new_release_everywhere(load: LoadGenerator, fleet: EmperorFleet, release: str, since: float) -> bool:
    pids = {response.pid for response in load.responses_since(since) if response.ok and response.release == release}
    return len(pids) >= fleet.count


def lowest(observer: ChangeObserver[int], start: float, end: float) -> int:
    """The fewest vassals the observer saw serving from ``start`` to ``end``."""
    return min((count for _at, count in observer.history(start, end)), default=-1)


def count_failures(records: list[ReloadRecord], load: LoadResult) -> None:
    """Each failed request counts for the reload whose trigger came last before it started: nothing is left
    out, including failures after a reload reported itself done."""
    starts = [record.trigger for record in records]
    for record in records:
        record.failed = 0
    for response in load.responses:
        if response.ok:
            continue
        before = [index for index, start in enumerate(starts) if start <= response.t_start]
        if before:
            records[before[-1]].failed += 1


class EmperorBench(Bench[EmperorFleet, int]):
    server = "the Emperor"
    module = "uwsgi_vassals_reload"
    native = "native"
    workdir_prefix = "emperor-bench-"
    rotate = False
    # Paces the load: the clients share the CPUs with a whole fleet and ansible-playbook.
    think_seconds = 0.005

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=3, help="rounds of the three reloads (default 3)")
        parser.add_argument("--vassals", type=int, default=4, help="vassals under the Emperor (default 4)")
        parser.add_argument("--import-delay", type=float, default=0.5,
                            help="seconds a vassal takes to import the app (default 0.5)")
        parser.add_argument("--timeout", dest="reload_timeout", metavar="TIMEOUT", type=float, default=60.0,
                            help="seconds one vassal may take (default 60)")
        parser.add_argument("--json", type=Path, help="write the raw per-reload figures here")
        # The load and the pause after each reload: fixed here.
        parser.set_defaults(slow_clients=2, slow_seconds=1.5, pause=0.5)

    @classmethod
    def check_arguments(cls, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.rounds < 1 or args.vassals < 3:
            parser.error("--rounds must be >= 1 and --vassals >= 3")

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        count = args.vassals
        self.mechanisms = (
            Mechanism("native", "touch all configs (Emperor)", None),
            Mechanism("min1", "module, min_active 1", {"min_active": 1}),
            Mechanism("serial", f"module, min_active {count - 1} (serial)", {"min_active": count - 1}),
        )

    def create_instance(self) -> EmperorFleet:
        return EmperorFleet(self.workdir / "fleet", vassals=self.args.vassals, import_delay=self.args.import_delay)

    def create_observer(self, instance: EmperorFleet) -> ChangeObserver[int]:
        return ChangeObserver(instance.serving, "serving observer", OBSERVE_EVERY)

    def describe_setup(self, instance: EmperorFleet) -> str:
        args = self.args
        return (f"uWSGI Emperor on {instance.base_url}: {instance.count} single-process vassals behind a FastRouter,"
                f" import {args.import_delay}s")

    def native_reload(self, mechanism: Mechanism) -> float:
        assert self.instance is not None
        return touch_all(self.instance)

    def module_args(self) -> dict[str, Any]:
        assert self.instance is not None
        return self.instance.module_args()

    def module_bound(self) -> float:
        # The module's timeout is each vassal's.
        return self.args.vassals * self.args.reload_timeout + PLAYBOOK_OVERHEAD_BOUND

    def module_times(self, result: dict[str, Any]) -> tuple[float, float]:
        # From the module's first drain.
        return epoch_to_monotonic(result["started_at"]), epoch_to_monotonic(result["completed_at"])

    def measure(self, triggered: Triggered) -> ReloadRecord:
        fleet, load, observer = self.instance, self.load, self.observer
        assert fleet is not None and load is not None and observer is not None
        release, started = triggered.release, triggered.at
        if triggered.completed is None:
            # Done once every vassal serves again and each one's worker answered with the release.
            poll_until(lambda: fleet.serving() == fleet.count and new_release_everywhere(load, fleet, release, started),
                       self.args.reload_timeout, f"every vassal back after touching all ({release})")
            done = time.monotonic()
        else:
            done = triggered.completed
        return triggered.record(done=done, details={"lowest_serving": lowest(observer, started, done)})

    def round_line(self, record: ReloadRecord) -> str:
        return (f"round {record.round} {record.mechanism:<7} {record.seconds:6.2f} s, lowest serving "
                f"{record.details['lowest_serving']}")

    def analyse(self) -> None:
        super().analyse()
        assert self.load_result is not None
        count_failures(self.records, self.load_result)

    def summary_extra(self, records: list[ReloadRecord]) -> dict[str, Any]:
        return {"lowest_serving": min((r.details["lowest_serving"] for r in records), default=None)}

    def conclusions(self, summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"ratios_vs_native": self.ratios(summary)}

    def config(self) -> dict[str, Any]:
        assert self.instance is not None
        return {"vassals": self.args.vassals, "vassal_threads": self.instance.threads}

    def print_report(self, report: Report) -> None:
        summary = report.summary
        print(f"\nuWSGI Emperor, {self.args.vassals} single-process vassals behind a FastRouter, under load; medians"
              f" over {self.args.rounds} round(s)")
        print(f"{'mechanism':<34}{'seconds':>9}{'vs native':>11}{'lowest serving':>16}{'failed requests':>17}")
        native = summary[self.native]["seconds_median"]
        for row in summary.values():
            seconds = row["seconds_median"]
            print(f"{row['label']:<34}{seconds:>9.2f}{seconds / native:>10.2f}x"
                  f"{row['lowest_serving']:>16}{row['failed']:>17}")
        min1, serial = summary["min1"]["seconds_median"], summary["serial"]["seconds_median"]
        print(f"min_active 1 takes {min1 / serial:.2f}x the time of the serial reload")
        print(self.load_line())


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(EmperorBench, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

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
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import describe_load, epoch_to_monotonic, load_json, median  # noqa: E402
from tests.support.ansible_runner import PlaybookRunner, install_collection  # noqa: E402
from tests.support.emperor_fleet import EmperorFleet  # noqa: E402
from tests.support.loadgen import LoadGenerator, LoadResult  # noqa: E402
from tests.support.uwsgi_instance import poll_until  # noqa: E402

OBSERVE_EVERY = 0.02
MECHANISMS = ("native", "min1", "serial")


class ServingObserver:
    """Samples how many vassals serve, every OBSERVE_EVERY seconds, on its own thread."""

    def __init__(self, fleet: EmperorFleet) -> None:
        self.fleet = fleet
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.fleet.serving()))
            time.sleep(OBSERVE_EVERY)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def lowest(self, start: float, end: float) -> int:
        return min((count for at, count in self.samples if start <= at <= end), default=-1)


def touch_all(fleet: EmperorFleet) -> float:
    now = time.time()
    for config in sorted(fleet.emperor_dir.glob("*.ini")):
        mtime = max(int(now), int(config.stat().st_mtime) + 1)
        os.utime(config, (mtime, mtime))
    return time.monotonic()


def reload_once(mechanism: str, fleet: EmperorFleet, ansible: PlaybookRunner, load: LoadGenerator,
                observer: ServingObserver, release: str, timeout: float) -> dict[str, Any]:
    fleet.set_release(release)
    if mechanism == "native":
        started = touch_all(fleet)
        # Done once every vassal serves again and each one's worker answered with the release.
        poll_until(lambda: fleet.serving() == fleet.count and new_release_everywhere(load, fleet, release, started),
                   timeout, f"every vassal back after touching all ({release})")
        ended = time.monotonic()
    else:
        min_active = 1 if mechanism == "min1" else fleet.count - 1
        args = fleet.module_args(min_active=min_active, timeout=timeout)
        outcome = ansible.run_module("uwsgi_vassals_reload", args)
        if outcome.get("failed"):
            raise RuntimeError(f"{mechanism}: {outcome.get('msg')}")
        started = epoch_to_monotonic(outcome["started_at"])
        ended = epoch_to_monotonic(outcome["completed_at"])
    time.sleep(0.5)
    return {"mechanism": mechanism, "release": release, "seconds": round(ended - started, 3),
            "lowest_serving": observer.lowest(started, ended), "started": started}


def count_failures(records: list[dict[str, Any]], load: LoadResult) -> None:
    """Each failed request counts for the reload whose trigger came last before it started: nothing is left
    out, including failures after a reload reported itself done."""
    starts = [record["started"] for record in records]
    for record in records:
        record["failed"] = 0
    for response in load.responses:
        if response.ok:
            continue
        before = [index for index, start in enumerate(starts) if start <= response.t_start]
        if before:
            records[before[-1]]["failed"] += 1


def new_release_everywhere(load: LoadGenerator, fleet: EmperorFleet, release: str, since: float) -> bool:
    pids = {response.pid for response in load.responses_since(since) if response.ok and response.release == release}
    return len(pids) >= fleet.count


def print_report(records: list[dict[str, Any]], count: int, load: LoadResult) -> None:
    print(f"\nuWSGI Emperor, {count} single-process vassals behind a FastRouter, under load; medians over "
          f"{len(records) // len(MECHANISMS)} round(s)")
    print(f"{'mechanism':<34}{'seconds':>9}{'vs native':>11}{'lowest serving':>16}{'failed requests':>17}")
    by_mechanism = {m: [r for r in records if r["mechanism"] == m] for m in MECHANISMS}
    native = median(r["seconds"] for r in by_mechanism["native"])
    labels = {"native": "touch all configs (Emperor)", "min1": "module, min_active 1",
              "serial": f"module, min_active {count - 1} (serial)"}
    for mechanism in MECHANISMS:
        rows = by_mechanism[mechanism]
        seconds = median(r["seconds"] for r in rows)
        print(f"{labels[mechanism]:<34}{seconds:>9.2f}{seconds / native:>10.2f}x"
              f"{min(r['lowest_serving'] for r in rows):>16}{sum(r['failed'] for r in rows):>17}")
    serial = median(r["seconds"] for r in by_mechanism["serial"])
    min1 = median(r["seconds"] for r in by_mechanism["min1"])
    print(f"min_active 1 takes {min1 / serial:.2f}x the time of the serial reload")
    print(describe_load(load))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three reloads (default 3)")
    parser.add_argument("--vassals", type=int, default=4, help="vassals under the Emperor (default 4)")
    parser.add_argument("--import-delay", type=float, default=0.5,
                        help="seconds a vassal takes to import the app (default 0.5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one vassal may take (default 60)")
    parser.add_argument("--json", type=Path, help="write the raw per-reload figures here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.vassals < 3:
        parser.error("--rounds must be >= 1 and --vassals >= 3")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emperor-bench-") as workdir:
        work = Path(workdir)
        ansible = PlaybookRunner(install_collection(work / "galaxy"), work / "ansible")
        records: list[dict[str, Any]] = []
        with EmperorFleet(work / "fleet", vassals=args.vassals, import_delay=args.import_delay) as fleet:
            load = LoadGenerator(fleet.base_url, concurrency=10, slow_clients=2, slow_seconds=1.5,
                                 min_requests=1000, max_requests=2_000_000, max_seconds=1800, think_seconds=0.005)
            observer = ServingObserver(fleet)
            load.start()
            observer.start()
            try:
                poll_until(lambda: load.fast_completed >= 300, 30, "warm-up traffic")
                for round_number in range(1, args.rounds + 1):
                    for mechanism in MECHANISMS:
                        record = reload_once(mechanism, fleet, ansible, load, observer,
                                             f"r{round_number}-{mechanism}", args.timeout)
                        print(f"round {round_number} {mechanism:<7} {record['seconds']:6.2f} s, lowest serving "
                              f"{record['lowest_serving']}", flush=True)
                        records.append(record)
            except Exception as exc:  # report what ran, then fail
                print(f"benchmark failed: {exc}", file=sys.stderr)
                return 1
            finally:
                observer.stop()
                result = load.stop()
        count_failures(records, result)
        print_report(records, args.vassals, result)
        if args.json:
            args.json.write_text(json.dumps({"records": records, "load": load_json(result)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

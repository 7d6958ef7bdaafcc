"""Benchmark graceful.wsgi.gunicorn_reload against a plain ``kill -HUP``.

One gunicorn master (4 gthread workers x 2 threads, a slow app import,
graceful_timeout 30) is kept under HTTP load - fast requests plus slow ones
always in flight - for the whole run, and reloaded round after round by three
mechanisms in turn:

  native-hup      this script sends SIGHUP to the pid in the pidfile, as an
                  operator does with ``kill -HUP $(cat gunicorn.pid)``
  module-hup      the module with ``mode: hup``
  module-upgrade  the module with ``mode: upgrade`` (USR2, then TERM to the
                  old master once the new one's workers booted)

Each reload ships a new release. The figures come from this script's own
observations: a thread polls the pidfile and /proc every 10 ms for the
masters and their workers, and the load generator records every HTTP response
with the pid and release that answered it. Of what the module returns only
its trigger time (completed_at - elapsed) is used, plus completed_at for the
lag. Per reload:

  all new serving    seconds from the trigger until every worker of the master
                     serving at the end (the pidfile's) is a process started
                     after the trigger and has answered a request of the load
                     with the new release; old workers still finishing their
                     requests do not hold it back. A worker counts from when it
                     began serving its first such request: the response's end,
                     less the 2 s the app sleeps if it was a slow one (a new
                     worker whose first requests are slow ones serves from the
                     start but answers 2 s later)
  old gone           seconds until nothing of the old generation was left (no
                     old worker, no upgrade pending, the pidfile naming the
                     serving master)
  failed             failed requests whose lifetime overlaps the reload window
                     (trigger to the later of the two above, +-0.5 s)
  min serving/200ms  fewest distinct worker pids that answered fast requests
                     in a 200 ms window of the reload window
  lag                module runs: its completed_at minus "all new serving"

Usage (from the repository root, with the venv's python):

    python benchmarks/gunicorn_reload.py [--rounds N] [--gunicorn-version V] [--json PATH]

The script reports and does not judge: it exits 0 whatever the figures, and
non-zero only when a reload did not complete or the instance broke.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
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
from tests.support.gunicorn_instance import GunicornInstance  # noqa: E402
from tests.support.process import poll_until, process_start  # noqa: E402
from tests.support.server_venvs import GUNICORN_LOCKS, gunicorn_bin  # noqa: E402

WORKERS = 4
THREADS = 2
GRACEFUL_TIMEOUT = 30
DEFAULT_GUNICORN = "27.0.1"

# /proc gives a process's start in clock ticks (10 ms); a worker that started
# this much before the trigger was not started by it.
START_TOLERANCE = 0.05
# A fast request sent just before the trigger may wait in the listen queue and
# be answered by a new worker: answers are looked for from this long before it.
ANSWER_LOOKBACK = 5.0
ANSWER_POLL = 0.05
# Triggers fall at random phases of the slow requests: each pause between
# reloads is lengthened by a random 0 to --slow-seconds.
PAUSE_JITTER = random.Random()
# After the old generation is gone: the HTTP proof, and the load reaching
# every new worker (it normally has long before).
SETTLE_HTTP_TIMEOUT = 30.0
SETTLE_LOAD_TIMEOUT = 10.0

MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("native-hup", "native-hup", None),  # SIGHUP sent by this script
    Mechanism("module-hup", "module-hup", {"mode": "hup"}),
    Mechanism("module-upgrade", "module-upgrade", {"mode": "upgrade"}, new_master=True),
)


# -- independent observer of the pidfile and /proc ---------------------------------


class Snapshot(NamedTuple):
    master: int | None  # the live master the pidfile names
    workers: frozenset[int]  # its workers, old ones still finishing included
    upgrade: int | None  # a new master of an upgrade under way
    upgrade_workers: frozenset[int]

    @property
    def pids(self) -> frozenset[int]:
        masters = {pid for pid in (self.master, self.upgrade) if pid is not None}
        return self.workers | self.upgrade_workers | masters

    @property
    def settled(self) -> bool:
        """One master, no upgrade under way, the configured number of workers."""
        return (
            self.master is not None
            and self.upgrade is None
            and len(self.workers) == WORKERS
        )


def describe_snapshot(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return "no sample of the pidfile and /proc"
    text = f"master={snapshot.master} workers={sorted(snapshot.workers)}"
    if snapshot.upgrade is not None:
        text += f" upgrade master={snapshot.upgrade} workers={sorted(snapshot.upgrade_workers)}"
    return text


class ProcessObserver(ChangeObserver[Snapshot]):
    """Polls the pidfile (and ``<pidfile>.2``) and the masters' children in
    /proc at a fixed rate and keeps every change, like an operator's
    ``watch pstree``; the gunicorn harness's /proc readers do the looking."""

    def __init__(self, instance: GunicornInstance) -> None:
        super().__init__(self._read, "process observer")
        self._instance = instance
        self._upgrade_pidfile = instance.pidfile.with_name(instance.pidfile.name + ".2")

    def _read(self) -> Snapshot | None:
        instance = self._instance
        try:
            master = instance.master_pid()
            if master is not None and not instance.process_alive(master):
                master = None  # the pidfile of a master that just exited
            upgrade: int | None = None
            if master is not None:
                upgrade = min(instance.upgrade_children(master), default=None)
            if upgrade is None:
                # Between the old master's exit and the new one's promotion
                # only <pidfile>.2 names the new master.
                try:
                    named = int(self._upgrade_pidfile.read_text().strip())
                except (FileNotFoundError, ValueError):
                    named = None
                if (
                    named is not None
                    and named != master
                    and instance.process_alive(named)
                ):
                    upgrade = named
            return Snapshot(
                master,
                frozenset(instance.worker_pids(master)) if master else frozenset(),
                upgrade,
                frozenset(instance.worker_pids(upgrade)) if upgrade else frozenset(),
            )
        except (OSError, ValueError):
            return None

    def pids_seen_until(self, t: float) -> set[int]:
        """Every master and worker pid the observer saw up to time ``t``."""
        seen: set[int] = set()
        for _at, snapshot in self.history(end=t):
            seen |= snapshot.pids
        return seen

    def first_seen(self, pid: int, after: float) -> float | None:
        return self.first_after(after, lambda snapshot: pid in snapshot.pids)


def settled_snapshot(snapshot: Snapshot | None, what: str) -> Snapshot:
    """The observer's view of a healthy instance, or BenchmarkError: every
    reload must start from one master with all its workers, or its figures
    mean nothing."""
    if snapshot is None or not snapshot.settled:
        raise BenchmarkError(
            f"instance not settled {what}: {describe_snapshot(snapshot)}"
        )
    return snapshot


# -- the benchmark -----------------------------------------------------------------


class GunicornBench(Bench[GunicornInstance, Snapshot]):
    server = "gunicorn"
    module = "gunicorn_reload"
    mechanisms = MECHANISMS
    native = "native-hup"
    workers = WORKERS
    workdir_prefix = "gunicorn-reload-bench-"
    settle_bound = SETTLE_HTTP_TIMEOUT + SETTLE_LOAD_TIMEOUT
    pause_default = 1.0
    pause_help = "seconds between a settled reload and the next one, plus a random 0 to --slow-seconds"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--worker-connections",
            type=int,
            default=THREADS,
            help=f"gunicorn's worker_connections (default {THREADS}, the threads per"
            " worker; gunicorn's own default, 1000, lets a worker whose threads all"
            " hold slow requests keep accepting fast ones, which then wait)",
        )
        parser.add_argument(
            "--gunicorn-version",
            choices=sorted(GUNICORN_LOCKS),
            default=DEFAULT_GUNICORN,
            help=f"pinned gunicorn to run (default {DEFAULT_GUNICORN})",
        )

    @classmethod
    def check_arguments(
        cls, parser: argparse.ArgumentParser, args: argparse.Namespace
    ) -> None:
        super().check_arguments(parser, args)
        if args.worker_connections < 1:
            parser.error("--worker-connections must be >= 1")

    def create_instance(self) -> GunicornInstance:
        args = self.args
        return GunicornInstance(
            self.workdir / "instance",
            gunicorn_bin(args.gunicorn_version),
            workers=WORKERS,
            threads=THREADS,
            import_delay=args.import_delay,
            release="r0-start",
            graceful_timeout=GRACEFUL_TIMEOUT,
            extra_args=["--worker-connections", str(args.worker_connections)],
        )

    def create_observer(self, instance: GunicornInstance) -> ProcessObserver:
        return ProcessObserver(instance)

    def describe_setup(self, instance: GunicornInstance) -> str:
        args = self.args
        return (
            f"gunicorn {self.version} on {instance.base_url}: {WORKERS} gthread workers x"
            f" {THREADS} threads (worker_connections {args.worker_connections}),"
            f" import {args.import_delay}s, graceful_timeout {GRACEFUL_TIMEOUT}"
        )

    @property
    def version(self) -> str:
        assert self.instance is not None
        return ".".join(str(part) for part in self.instance.version)

    def check_settled(self, state: Snapshot | None, what: str) -> None:
        settled_snapshot(state, what)

    def native_reload(self, mechanism: Mechanism) -> float:
        instance = self.instance
        assert instance is not None
        master = instance.master_pid()
        if master is None:
            raise BenchmarkError(
                f"no pidfile to send SIGHUP to\n{instance.log_tail(20)}"
            )
        trigger = time.monotonic()
        os.kill(master, signal.SIGHUP)
        return trigger

    def module_args(self) -> dict[str, Any]:
        assert self.instance is not None
        return {"pidfile": str(self.instance.pidfile)}

    def pause_seconds(self) -> float:
        return self.args.pause + PAUSE_JITTER.uniform(0.0, self.args.slow_seconds)

    def round_line(self, record: ReloadRecord) -> str:
        lag = record.lag
        return (
            f"  round {record.round} {record.mechanism:<15} all new serving"
            f" {record.seconds:6.2f}s, old gone {record.old_gone_seconds:6.2f}s"
            + (
                ""
                if lag is None
                else f"; module elapsed {record.module_elapsed:5.2f}s,"
                f" lag {lag * 1000:5.0f}ms"
            )
        )

    # -- one reload ----------------------------------------------------------------

    def _first_answers(
        self, trigger: float, release: str, pids: set[int] | frozenset[int]
    ) -> dict[int, tuple[float, str]]:
        """For each of ``pids`` that answered a request of the load with
        ``release``: when it began serving the first such request (the
        response's end, less the app's sleep for a slow one), and its kind."""
        assert self.load is not None
        first: dict[int, tuple[float, str]] = {}
        for r in self.load.responses_since(trigger - ANSWER_LOOKBACK):
            if r.ok and r.release == release and r.pid in pids:
                began = r.t_end - (self.args.slow_seconds if r.kind == "slow" else 0.0)
                if r.pid not in first or began < first[r.pid][0]:
                    first[r.pid] = (began, r.kind)
        return first

    def _wait_all_new_serving(
        self, trigger: float, release: str, known: set[int], deadline: float
    ) -> None:
        """Wait until some master (the pidfile's, or an upgrade's new one)
        has WORKERS workers unknown before the trigger that all answered the
        load with ``release``: the reload's own end, as far as new code goes."""
        observer, instance = self.observer, self.instance
        assert observer is not None and instance is not None
        while True:
            observer.check()
            snapshot = observer.latest()
            if snapshot is not None:
                for workers in (snapshot.workers, snapshot.upgrade_workers):
                    new = workers - known
                    if len(new) == WORKERS:
                        answered = self._first_answers(trigger, release, new)
                        if len(answered) == WORKERS:
                            return
            if time.monotonic() >= deadline:
                raise BenchmarkError(
                    f"reload not complete {self.args.reload_timeout:.0f}s after the"
                    f" trigger: {describe_snapshot(snapshot)}\n{instance.log_tail(20)}"
                )
            time.sleep(ANSWER_POLL)

    def measure(self, triggered: Triggered) -> ReloadRecord:
        args = self.args
        instance, observer = self.instance, self.observer
        assert isinstance(observer, ProcessObserver) and instance is not None
        trigger, release, module_result = (
            triggered.at,
            triggered.release,
            triggered.module_result,
        )
        old = settled_snapshot(observer.state_at(trigger), "at the trigger")
        assert old.master is not None
        if module_result and (
            module_result.get("master_pid_before") != old.master
            or set(module_result.get("workers_before", [])) != old.workers
        ):
            raise BenchmarkError(
                f"workers changed outside the reload: the module saw master"
                f" {module_result.get('master_pid_before')} with"
                f" {sorted(module_result.get('workers_before', []))}, the observer"
                f" {describe_snapshot(old)}"
            )
        known = observer.pids_seen_until(trigger)
        deadline = trigger + args.reload_timeout

        # 1. Every worker of some master new and answering with the release. A
        # module run has already claimed it; a native one is waited for here.
        self._wait_all_new_serving(trigger, release, known, deadline)

        # 2. Nothing of the old generation left: its workers finished their
        # requests, and after an upgrade the pidfile names the new master.
        old_gone = observer.wait_first(
            trigger,
            lambda s: s.settled
            and not s.workers & old.workers
            and (s.master == old.master or old.master not in s.pids),
            max(deadline - time.monotonic(), 5.0),
        )
        if old_gone is None:
            raise BenchmarkError(
                f"old generation still there {args.reload_timeout:.0f}s after the"
                f" trigger: {describe_snapshot(observer.latest())}\n{instance.log_tail(20)}"
            )
        final = observer.state_at(old_gone)
        assert final is not None and final.master is not None  # settled
        if triggered.mechanism.new_master:
            if final.master == old.master:
                raise BenchmarkError(f"upgrade left master {old.master} in the pidfile")
            poll_until(
                lambda: not instance.process_alive(old.master),
                5.0,
                f"the old master {old.master} to exit",
            )
        elif final.master != old.master:
            raise BenchmarkError(
                f"HUP replaced the master {old.master} by {final.master}"
            )

        # 3. Proof over HTTP, independent of the load: each worker of the
        # pidfile's master serves the release.
        workers = frozenset(
            instance.wait_all_workers_serving(
                release,
                timeout=SETTLE_HTTP_TIMEOUT,
                replaced_pids=old.workers,
                master=final.master,
            )
        )
        starts = {pid: process_start(pid) for pid in workers}
        for pid, started in starts.items():
            if pid in known or started is None or started < trigger - START_TOLERANCE:
                raise BenchmarkError(
                    f"worker {pid} of master {final.master} is not a process of this"
                    f" reload (seen before the trigger: {pid in known}, started"
                    f" {'?' if started is None else f'{started - trigger:+.3f}s'}"
                    f" from it)"
                )

        # 4. The figure: when the last of these workers first answered the load.
        def all_answered() -> dict[int, tuple[float, str]] | None:
            found = self._first_answers(trigger, release, workers)
            return found if len(found) == len(workers) else None

        answers = poll_until(
            all_answered,
            SETTLE_LOAD_TIMEOUT,
            f"a response of the load from each of {sorted(workers)}",
            interval=ANSWER_POLL,
        )
        return triggered.record(
            done=max(began for began, _kind in answers.values()),
            old_gone=old_gone,
            moments={
                "all_started": max(t for t in starts.values() if t is not None),
                "first_answer": min(began for began, _kind in answers.values()),
            },
            details={
                # Per new worker: seconds from the trigger to when it began
                # serving its first request with the release, and that
                # request's kind.
                "worker_first_answers": {
                    str(pid): [round(t - trigger, 4), kind]
                    for pid, (t, kind) in sorted(answers.items())
                },
                "old_master": old.master,
                "old_workers": sorted(old.workers),
                "master": final.master,
                "workers": sorted(workers),
                "module_workers_after": module_result.get("workers_after"),
            },
        )

    # -- report --------------------------------------------------------------------

    def conclusions(self, summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
        # Median "all new serving" seconds of each module run over native-hup's.
        return {"ratios_vs_native_hup": self.ratios(summary)}

    def config(self) -> dict[str, Any]:
        return {
            "gunicorn": self.version,
            "workers": WORKERS,
            "threads": THREADS,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "worker_connections": self.args.worker_connections,
        }

    def print_report(self, report: Report) -> None:
        summary = report.summary
        header = (
            f"{'gunicorn ' + self.version:<16} {'n':>2}  {'all new serving s':<19}{'old gone':>9}"
            f"{'failed':>8}  {'min serving/200ms':>17}  {'module elapsed':>14}"
            f"  {'lag med/max':>16}"
        )
        print()
        print(header)
        print("-" * len(header))
        for key, row in summary.items():
            seconds = f"{row['seconds_median']:.2f} ({row['seconds_min']:.2f}-{row['seconds_max']:.2f})"
            serving = "-" if row["min_serving"] is None else row["min_serving"]
            elapsed = (
                "-"
                if row["module_elapsed_median"] is None
                else f"{row['module_elapsed_median']:.2f}"
            )
            lag = (
                "-"
                if row["lag_median"] is None
                else f"{row['lag_median'] * 1000:.0f}/{row['lag_max'] * 1000:.0f} ms"
            )
            print(
                f"{key:<16} {row['reloads']:>2}  {seconds:<19}{row['old_gone_median']:>9.2f}"
                f"{row['failed']:>8}  {serving:>17}  {elapsed:>14}  {lag:>16}"
            )
        print()
        print(
            "vs native-hup (all new serving, median): "
            + ", ".join(
                f"{key} x{value:.2f}"
                for key, value in report.conclusions["ratios_vs_native_hup"].items()
            )
        )
        print()
        print(
            "seconds are medians (min-max) from the trigger; module elapsed is the"
            " module's own figure; lag = its completed_at - all new serving"
        )
        print(self.load_line())
        print(self.floor_line("min serving/200ms", report.steady_min))
        slowest = [
            f"{key} {row['fast_max_latency']:.2f}s"
            for key, row in summary.items()
            if row["fast_max_latency"] is not None
        ]
        if slowest:
            print("slowest fast request in a reload window: " + ", ".join(slowest))
        print(self.observer_line())
        print(f"total runtime: {report.runtime:.1f}s")


# -- entry point -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(GunicornBench, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

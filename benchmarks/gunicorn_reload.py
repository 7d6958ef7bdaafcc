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
import gc
import json
import math
import os
import random
import shutil
import signal
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
from tests.support.ansible_runner import (
    AnsibleRunError,
    PlaybookRunner,
    install_collection,
)  # noqa: E402
from tests.support.gunicorn_instance import GunicornInstance  # noqa: E402
from tests.support.loadgen import LoadGenerator, LoadResult  # noqa: E402
from tests.support.server_venvs import GUNICORN_LOCKS, gunicorn_bin  # noqa: E402
from tests.support.uwsgi_instance import poll_until  # noqa: E402

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


class Mechanism(NamedTuple):
    key: str
    module_args: dict[str, Any] | None  # None: SIGHUP sent by this script
    new_master: bool  # an upgrade: a new master replaces the old one


MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("native-hup", None, False),
    Mechanism("module-hup", {"mode": "hup"}, False),
    Mechanism("module-upgrade", {"mode": "upgrade"}, True),
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

    def __init__(
        self, instance: GunicornInstance, interval: float = OBSERVER_INTERVAL
    ) -> None:
        super().__init__(self._read, "process observer", interval)
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


def process_start(pid: int) -> float | None:
    """Monotonic time at which ``pid`` was created (to a clock tick), from
    /proc; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22, counted after the command name, which may contain spaces.
    ticks = int(raw[raw.rindex(")") + 2 :].split()[19])
    boot_offset = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    return ticks / os.sysconf("SC_CLK_TCK") - boot_offset


# -- one reload ------------------------------------------------------------------


@dataclass
class ReloadRecord:
    round: int
    mechanism: str
    release: str
    old_master: int
    old_workers: list[int]
    master: int  # serving at the end
    workers: list[int]  # its workers at the end, each started after the trigger
    trigger: float  # monotonic
    done: float  # every worker in ``workers`` had answered with ``release``
    old_gone: float  # observer: nothing of the old generation left
    first_answer: float  # the first new worker began serving
    # pid -> (began serving its first request with ``release``, kind of that request)
    answers: dict[int, tuple[float, str]]
    all_started: float  # the last of ``workers`` to start (/proc)
    pause: float  # slept after this reload, before the next one
    completed: float | None = None  # module only: its completed_at, monotonic
    module_elapsed: float | None = None
    module_workers_after: list[int] | None = None
    observer_max_gap: float = 0.0
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
    def old_gone_seconds(self) -> float:
        return self.old_gone - self.trigger

    @property
    def end(self) -> float:
        """End of the reload window."""
        return max(self.done, self.old_gone)

    @property
    def lag(self) -> float | None:
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
            "all_started_at": rel(self.all_started),
            "first_answer_at": rel(self.first_answer),
            # Per new worker: seconds from the trigger to when it began serving
            # its first request with the release, and that request's kind.
            "worker_first_answers": {
                str(pid): [round(t - self.trigger, 4), kind]
                for pid, (t, kind) in sorted(self.answers.items())
            },
            "done_at": rel(self.done),
            "old_gone_at": rel(self.old_gone),
            "completed_at": rel(self.completed),
            "old_master": self.old_master,
            "old_workers": self.old_workers,
            "master": self.master,
            "workers": self.workers,
            "module_workers_after": self.module_workers_after,
        }


def settled_snapshot(snapshot: Snapshot | None, what: str) -> Snapshot:
    """The observer's view of a healthy instance, or BenchmarkError: every
    reload must start from one master with all its workers, or its figures
    mean nothing."""
    if snapshot is None or not snapshot.settled:
        raise BenchmarkError(
            f"instance not settled {what}: {describe_snapshot(snapshot)}"
        )
    return snapshot


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.instance: GunicornInstance | None = None
        self.observer: ProcessObserver | None = None
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
            self.args.reload_timeout
            + PLAYBOOK_OVERHEAD_BOUND
            + SETTLE_HTTP_TIMEOUT
            + SETTLE_LOAD_TIMEOUT
            + self.args.pause
            + 30.0
        )
        return 120.0 + self.args.rounds * len(MECHANISMS) * per_reload

    def run(self) -> None:
        args = self.args
        print("building and installing the collection ...", flush=True)
        self.runner = PlaybookRunner(
            install_collection(self.workdir), self.workdir / "ansible"
        )

        self.instance = instance = GunicornInstance(
            self.workdir / "instance",
            gunicorn_bin(args.gunicorn_version),
            workers=WORKERS,
            threads=THREADS,
            import_delay=args.import_delay,
            release="r0-start",
            graceful_timeout=GRACEFUL_TIMEOUT,
            extra_args=["--worker-connections", str(args.worker_connections)],
        )
        instance.start(timeout=30.0 + 4 * args.import_delay)
        self.observer = ProcessObserver(instance)
        self.observer.start()
        self.load = load = LoadGenerator(
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
        load.start()
        # Warm up until fast traffic flows and the first slow requests have
        # been replaced, so slow requests are in flight at random phases.
        poll_until(
            lambda: load.fast_completed >= WARMUP_REQUESTS
            and time.monotonic() - load_started > args.slow_seconds + 0.5,
            30.0 + args.slow_seconds,
            "warm-up traffic",
        )
        self.measured_from = time.monotonic()
        version = ".".join(str(part) for part in instance.version)
        print(
            f"gunicorn {version} on {instance.base_url}: {WORKERS} gthread workers x"
            f" {THREADS} threads (worker_connections {args.worker_connections}),"
            f" import {args.import_delay}s, graceful_timeout {GRACEFUL_TIMEOUT};"
            f" load: {FAST_CONCURRENCY} fast clients +"
            f" {args.slow_clients} slow ({args.slow_seconds}s)",
            flush=True,
        )

        for round_no in range(1, args.rounds + 1):
            # Rotated each round so no mechanism always follows the same one.
            shift = (round_no - 1) % len(MECHANISMS)
            for mechanism in MECHANISMS[shift:] + MECHANISMS[:shift]:
                record = self._reload(round_no, mechanism)
                self.records.append(record)
                lag = record.lag
                print(
                    f"  round {round_no} {mechanism.key:<15} all new serving"
                    f" {record.seconds:6.2f}s, old gone {record.old_gone_seconds:6.2f}s"
                    + (
                        ""
                        if lag is None
                        else f"; module elapsed {record.module_elapsed:5.2f}s,"
                        f" lag {lag * 1000:5.0f}ms"
                    ),
                    flush=True,
                )

        self.measured_until = time.monotonic()
        self.load_result = load.stop()
        gc.enable()
        self.observer.check()
        self.observer.stop()
        if self.load_result.end_reason != "stop":
            raise BenchmarkError(
                f"the load ended by {self.load_result.end_reason} before the benchmark did"
            )
        if not instance.running:
            raise BenchmarkError(
                f"gunicorn exited during the run\n{instance.log_tail()}"
            )
        analyse(self.records, self.load_result)

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

    def _reload(self, round_no: int, mechanism: Mechanism) -> ReloadRecord:
        args = self.args
        instance, observer, runner = self.instance, self.observer, self.runner
        assert instance is not None and observer is not None and runner is not None
        observer.check()
        if not instance.running:
            raise BenchmarkError(f"gunicorn is not running\n{instance.log_tail()}")
        settled_snapshot(observer.latest(), "before the reload")

        release = f"r{round_no}-{mechanism.key}"
        instance.set_release(release)
        completed: float | None = None
        module_result: dict[str, Any] = {}

        if mechanism.module_args is None:
            master = instance.master_pid()
            if master is None:
                raise BenchmarkError(
                    f"no pidfile to send SIGHUP to\n{instance.log_tail(20)}"
                )
            trigger = time.monotonic()
            os.kill(master, signal.SIGHUP)
        else:
            module_args = {
                "pidfile": str(instance.pidfile),
                "timeout": args.reload_timeout,
                **mechanism.module_args,
            }
            module_result = runner.run_module(
                "gunicorn_reload",
                module_args,
                timeout=args.reload_timeout + PLAYBOOK_OVERHEAD_BOUND,
            )
            if module_result.get("failed") or "completed_at" not in module_result:
                raise BenchmarkError(
                    f"{mechanism.key} failed: {module_result.get('msg')}\n"
                    f"{instance.log_tail(20)}"
                )
            completed = epoch_to_monotonic(float(module_result["completed_at"]))
            trigger = completed - float(module_result["elapsed"])

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
        if mechanism.new_master:
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
        done = max(began for began, _kind in answers.values())
        pause = args.pause + PAUSE_JITTER.uniform(0.0, args.slow_seconds)
        record = ReloadRecord(
            round=round_no,
            mechanism=mechanism.key,
            release=release,
            old_master=old.master,
            old_workers=sorted(old.workers),
            master=final.master,
            workers=sorted(workers),
            trigger=trigger,
            done=done,
            old_gone=old_gone,
            first_answer=min(began for began, _kind in answers.values()),
            answers=answers,
            all_started=max(t for t in starts.values() if t is not None),
            completed=completed,
            module_elapsed=module_result.get("elapsed"),
            module_workers_after=module_result.get("workers_after"),
            observer_max_gap=observer.max_gap(trigger, max(done, old_gone)),
            pause=pause,
        )
        time.sleep(pause)
        return record

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


def summarise(records: list[ReloadRecord]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for mechanism in MECHANISMS:
        mine = [r for r in records if r.mechanism == mechanism.key]
        seconds = [r.seconds for r in mine]
        lags = [r.lag for r in mine if r.lag is not None]
        elapsed = [r.module_elapsed for r in mine if r.module_elapsed is not None]
        summary[mechanism.key] = {
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
        }
    return summary


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Median "all new serving" seconds of each module run over native-hup's."""
    native = summary["native-hup"]["seconds_median"]
    return {
        key: row["seconds_median"] / native if native > 0 else math.nan
        for key, row in summary.items()
        if key != "native-hup"
    }


def print_report(
    version: str,
    summary: dict[str, dict[str, Any]],
    ratio: dict[str, float],
    load: LoadResult,
    steady_min: int | None,
    records: list[ReloadRecord],
    observer: ProcessObserver,
    runtime: float,
) -> None:
    header = (
        f"{'gunicorn ' + version:<16} {'n':>2}  {'all new serving s':<19}{'old gone':>9}"
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
        + ", ".join(f"{key} x{value:.2f}" for key, value in ratio.items())
    )
    print()
    print(
        "seconds are medians (min-max) from the trigger; module elapsed is the"
        " module's own figure; lag = its completed_at - all new serving"
    )
    print(describe_load(load))
    # Without this floor the reload columns read as lost workers: a worker
    # whose threads all hold slow requests serves no fast request either.
    print(
        f"min serving/200ms = fewest distinct pids serving fast requests per"
        f" {CLIENT_WINDOW * 1000:.0f} ms window; outside reloads, under the same load:"
        f" {steady_min if steady_min is not None else '-'} of {WORKERS}"
    )
    worst = max(
        (
            row["fast_max_latency"]
            for row in summary.values()
            if row["fast_max_latency"] is not None
        ),
        default=None,
    )
    if worst is not None:
        print(
            "slowest fast request in a reload window: "
            + ", ".join(
                f"{key} {row['fast_max_latency']:.2f}s"
                for key, row in summary.items()
                if row["fast_max_latency"] is not None
            )
        )
    in_reloads = max((r.observer_max_gap for r in records), default=0.0)
    print(
        f"process observer: {observer.polls} polls every {OBSERVER_INTERVAL * 1000:.0f} ms,"
        f" longest gap {observer.max_gap() * 1000:.0f} ms overall and"
        f" {in_reloads * 1000:.0f} ms within reloads, {observer.errors} unanswered"
    )
    print(f"total runtime: {runtime:.1f}s")


# -- entry point -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    add_common_arguments(
        parser,
        pause_default=1.0,
        pause_help="seconds between a settled reload and the next one, plus a"
        " random 0 to --slow-seconds",
    )
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
    args = parser.parse_args(argv)
    check_common_arguments(parser, args)
    if args.worker_connections < 1:
        parser.error("--worker-connections must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gunicorn-reload-bench-"))
    bench = Bench(args, workdir)
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

    assert bench.load_result is not None and bench.observer is not None
    assert bench.instance is not None
    runtime = time.monotonic() - started
    version = ".".join(str(part) for part in bench.instance.version)
    summary = summarise(bench.records)
    ratio = ratios(summary)
    steady_min = steady_state_min(
        bench.records, bench.load_result, bench.measured_from, bench.measured_until
    )
    print_report(
        version,
        summary,
        ratio,
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
                "gunicorn": version,
                "rounds": args.rounds,
                "workers": WORKERS,
                "threads": THREADS,
                "graceful_timeout": GRACEFUL_TIMEOUT,
                "worker_connections": args.worker_connections,
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
            "ratios_vs_native_hup": ratio,
            "load": load_json(load),
            "steady_state_min_serving": steady_min,
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

"""Load and proof for the molecule scenarios: run from the controller against the hosts' published ports.

    python3 tests/fleet/probe.py load --target app1=http://127.0.0.1:18101 ... --marks DIR [--max-seconds 300]
        Real HTTP load on every target (fresh connection per request, slow requests always in flight).
        Writes DIR/warm once every target has answered; the playbook writes DIR/reload-started before it
        switches and reloads, DIR/window-NAME per target (the reload module's trigger and completion, epoch
        seconds) and DIR/reload-done afterwards. Ends after reload-done (and at least --min-requests per
        target) and exits 1 unless every target had 0 failed requests, slow requests in flight when its
        reload was triggered, and only --expect-release answers from requests started after the reload
        completed. Prints one JSON document.

    python3 tests/fleet/probe.py lb --url http://127.0.0.1:18300 --marks DIR --expect-release v2[,v1] [--forbid-release v4]
                                    [--check-assets [--asset-every 5]] [--timeline FILE]
        Real HTTP load through a load balancer while a playbook runs (deploy, rollback, ...). Writes DIR/warm once
        it answers, runs until DIR/done (written by the caller when the playbook ended) plus 2 s, and exits 1
        unless 0 requests failed, slow requests completed throughout, every answer started after DIR/done came
        from one of --expect-release, and no answer at all came from a --forbid-release. Prints one JSON document
        with the requests, failures, p50/p99 latency and the releases seen.
        --check-assets: every fast client also fetches, through the same load balancer, the asset (the "asset" URL
        of the demo app's answer) of every --asset-every-th answer it got, before its next request (one asset check
        in flight per client at most). The asset must answer 200 with a body naming the release of the page that
        named it ("... release v2 ..."); a check that does not is a failed request of kind "asset skew". The JSON
        gains asset_checks, asset_failures, asset_releases (the releases whose assets were checked, with the
        number of checks of each) and asset_failure_examples; no asset checked at all is a problem too.

    python3 tests/fleet/probe.py workers --url URL --pids 11,12 --release v2 --dependency 3.10
        Concurrent requests until each listed worker pid has answered; exits 1 unless each named the
        release and the dependency version (and no other pid answered).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.loadgen import LoadGenerator, Response  # noqa: E402  (path set just above)

# The kind of a failed asset check among the load's failed requests.
ASSET_SKEW = "asset skew"
# How an asset names its release: the demo app's stylesheet is "/* demo release v2 */ body{}".
ASSET_RELEASE = re.compile(rb"\brelease ([A-Za-z0-9._-]+)")


def wait_for_mark(path: Path, deadline: float) -> float | None:
    """Poll for a mark file; the monotonic time it was seen, or None at the deadline."""
    while time.monotonic() < deadline:
        if path.exists():
            return time.monotonic()
        time.sleep(0.05)
    return None


def read_window(marks: Path, name: str, epoch_to_monotonic: float):
    """The reload window of a target, (triggered, completed) in monotonic time, from DIR/window-NAME:
    the reload module's completed_at minus its elapsed, and completed_at (epoch seconds; hosts share the clock)."""
    try:
        triggered, completed = (float(field) for field in (marks / f"window-{name}").read_text().split())
    except (OSError, ValueError):
        return None
    return triggered - epoch_to_monotonic, completed - epoch_to_monotonic


def judge_target(name: str, result, window, release: str):
    problems = []
    if result.failed:
        problems.append(f"{name}: {result.failed} failed requests: " + result.summary(5))
    if window is None:
        problems.append(f"{name}: no reload window was recorded (did the role reload this host?)")
        return {"requests": result.total, "failed": result.failed}, problems
    triggered, completed = window
    # Slow requests in flight when the reload was triggered: they must all have succeeded (failed is 0), and
    # there must be some, or the run proved nothing about requests a worker was still serving.
    in_flight = [r for r in result.responses if r.kind == "slow" and r.t_start < triggered < r.t_end]
    if not any(r.ok for r in in_flight):
        problems.append(f"{name}: no slow request was in flight when the reload was triggered")
    late = [r for r in result.responses if r.t_start >= completed]
    stale = sorted({(r.release, r.pid) for r in late if r.ok and r.release != release}, key=str)
    if stale:
        problems.append(f"{name}: answers from other releases after the reload completed: {stale[:10]}")
    if not late:
        problems.append(f"{name}: no request started after the reload completed")
    report = {
        "requests": result.total,
        "failed": result.failed,
        "slow": result.slow_total,
        "reload_seconds": round(completed - triggered, 2),
        "slow_in_flight_at_trigger": {
            "succeeded": sum(1 for r in in_flight if r.ok),
            "served_by_old_release": sum(1 for r in in_flight if r.ok and r.release != release),
        },
        "requests_during_reload": sum(1 for r in result.responses if triggered <= r.t_start < completed),
        "requests_per_second": round(result.requests_per_second),
        "p50_ms": round(result.p50_ms, 1),
        "p99_ms": round(result.p99_ms, 1),
        "releases_seen": dict(result.releases_seen()),
        "after_reload": {"requests": len(late), "pids": sorted({r.pid for r in late if r.ok})},
        "first_failures": result.failures[:5],
    }
    return report, problems


def http_get(host: str, port: int, path: str, timeout: float):
    """One GET on a new connection, as the load's requests are: (status or None, body, error or None)."""
    status = None
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        reply = connection.getresponse()
        status = reply.status
        return status, reply.read(), None
    except (OSError, http.client.HTTPException) as exc:
        return status, b"", f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def fetch_page(host: str, port: int, path: str, timeout: float) -> tuple[Response, str]:
    """A fast request of the load judged as tests/support/loadgen.py judges it (200, a JSON body naming a release and a
    pid), and the asset the answer names ("" when none)."""
    t_start = time.monotonic()
    status, body, error = http_get(host, port, path, timeout)
    payload = {}
    if error is None and status != 200:
        error = f"HTTP {status}: {body[:200]!r}"
    if error is None:
        try:
            payload = json.loads(body)
            release, pid = payload["release"], payload["pid"]
        except (ValueError, TypeError, KeyError) as exc:
            error = f"bad body ({type(exc).__name__}): {body[:200]!r}"
        else:
            if not isinstance(release, str) or not isinstance(pid, int):
                error = f"bad body (wrong field types): {body[:200]!r}"
    if error is not None:
        return Response(t_start, time.monotonic(), "fast", status, None, None, error), ""
    asset = payload.get("asset")
    return (Response(t_start, time.monotonic(), "fast", status, release, pid, None),
            asset if isinstance(asset, str) else "")


def check_asset(host: str, port: int, page: Response, asset: str, timeout: float) -> Response | None:
    """Fetch the asset a page named, through the same address: None when it answered 200 naming the page's release,
    else a failed request of kind ASSET_SKEW saying what came instead."""
    parts = urlsplit(asset)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    t_start = time.monotonic()
    status, body, error = http_get(host, port, path, timeout)
    if error is None and status != 200:
        error = f"HTTP {status}: {body[:120]!r}"
    if error is None:
        named = ASSET_RELEASE.search(body)
        if named is None or named.group(1).decode() != page.release:
            error = f"it names {named.group(1).decode() if named else 'no release'}: {body[:120]!r}"
    if error is None:
        return None
    return Response(t_start, time.monotonic(), ASSET_SKEW, status, None, None,
                    f"the page of release {page.release} (pid {page.pid}) named {asset}: {error}")


class AssetCheckingLoad(LoadGenerator):
    """LoadGenerator whose fast clients also check assets: after every ``every``-th answer that names an asset, the
    client fetches that asset (check_asset) before its next request, so that at most one check per client is in flight
    and the checks stay a fraction of the load. A failed check joins the client's requests as a failed one (kind
    ASSET_SKEW); a good one is only counted. Slow clients are LoadGenerator's own."""

    def __init__(self, base_url: str, every: int, **options) -> None:
        super().__init__(base_url, **options)
        if every < 1:
            raise ValueError("--asset-every must be >= 1")
        self.every = every
        self.asset_checks: Counter[str] = Counter()  # per release of the page that named the asset
        self.asset_failures: list[Response] = []
        self._asset_lock = threading.Lock()

    # LoadGenerator's fast client loop (the request, its count, the pause), with the asset check added.
    def _client_loop(self, kind, path, sink):
        if kind != "fast":
            super()._client_loop(kind, path, sink)
            return
        answers = 0
        while self._may_issue():
            page, asset = fetch_page(self._host, self._port, path, self.request_timeout)
            sink.append(page)
            with self._lock:
                self._fast_completed += 1
            if page.ok and asset:
                answers += 1
                if answers % self.every == 0:
                    failure = check_asset(self._host, self._port, page, asset, self.request_timeout)
                    with self._asset_lock:
                        self.asset_checks[page.release] += 1
                        if failure is not None:
                            self.asset_failures.append(failure)
                    if failure is not None:
                        sink.append(failure)
            if self.think_seconds:
                time.sleep(self.think_seconds)

    def asset_report(self, started_at: float) -> dict:
        """The figures of the asset checks, for the lb command's JSON."""
        with self._asset_lock:
            failures = sorted(self.asset_failures, key=lambda r: r.t_start)
            return {
                "asset_checks": sum(self.asset_checks.values()),
                "asset_failures": len(failures),
                "asset_releases": dict(sorted(self.asset_checks.items())),
                "asset_failure_examples": [
                    {"at_s": round(r.t_start - started_at, 3), "kind": r.kind, "status": r.status, "error": r.error}
                    for r in failures[:5]
                ],
            }


def load_options(args) -> dict:
    """LoadGenerator's options from the common options of the load and lb commands."""
    return dict(
        concurrency=args.concurrency,
        slow_clients=args.slow_clients,
        slow_seconds=args.slow_seconds,
        min_requests=args.min_requests,
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
        request_timeout=getattr(args, "request_timeout", None) or args.slow_seconds + 60,
        think_seconds=args.think_seconds,
    )


def generator_for(url: str, args) -> LoadGenerator:
    """The load of the load and lb commands on one URL, from their common options."""
    if getattr(args, "check_assets", False):
        return AssetCheckingLoad(url, args.asset_every, **load_options(args))
    return LoadGenerator(url, **load_options(args))


def run_load(args) -> int:
    marks = Path(args.marks)
    marks.mkdir(parents=True, exist_ok=True)
    targets = dict(item.split("=", 1) for item in args.target)
    epoch_to_monotonic = time.time() - time.monotonic()
    generators = {
        name: generator_for(url, args)
        for name, url in targets.items()
    }
    deadline = time.monotonic() + args.max_seconds
    for generator in generators.values():
        generator.start()
    while time.monotonic() < deadline and any(g.fast_completed < 50 for g in generators.values()):
        time.sleep(0.05)
    (marks / "warm").write_text("ok\n")
    reload_started = wait_for_mark(marks / "reload-started", deadline)
    reload_done = wait_for_mark(marks / "reload-done", deadline)
    # A couple of seconds of traffic after the reload: what clients see once it is over.
    time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    results = {name: generator.stop() for name, generator in generators.items()}
    problems = []
    if reload_started is None or reload_done is None:
        problems.append(f"the playbook did not mark the reload within {args.max_seconds} s")
    report = {"expect_release": args.expect_release, "targets": {}}
    for name, result in results.items():
        window = read_window(marks, name, epoch_to_monotonic)
        report["targets"][name], found = judge_target(name, result, window, args.expect_release)
        problems.extend(found)
    if reload_started is not None and reload_done is not None:
        report["switch_and_reload_seconds"] = round(reload_done - reload_started, 2)
    report["requests"] = sum(r.total for r in results.values())
    report["failed"] = sum(r.failed for r in results.values())
    report["problems"] = problems
    print(json.dumps(report, indent=1, default=str))
    return 1 if problems else 0


def run_lb(args) -> int:
    marks = Path(args.marks)
    marks.mkdir(parents=True, exist_ok=True)
    generator = generator_for(args.url, args)
    deadline = time.monotonic() + args.max_seconds
    generator.start()
    while time.monotonic() < deadline and generator.fast_completed < 50:
        time.sleep(0.05)
    (marks / "warm").write_text("ok\n")
    done = wait_for_mark(marks / "done", deadline)
    time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    result = generator.stop()
    expected = set(args.expect_release.split(","))
    forbidden = set(filter(None, (args.forbid_release or "").split(",")))
    problems = []
    if done is None:
        problems.append(f"the caller did not mark the end of its run within {args.max_seconds} s")
    if result.failed:
        problems.append(f"{result.failed} failed requests: " + result.summary(5))
    slow_ok = sum(1 for r in result.responses if r.kind == "slow" and r.ok)
    if slow_ok == 0:
        problems.append("no slow request completed: nothing was in flight")
    late = [r for r in result.responses if done is not None and r.t_start >= done]
    if done is not None and not late:
        problems.append("no request started after the run ended")
    stale = sorted({r.release for r in late if r.ok and r.release not in expected})
    if stale:
        problems.append(f"answers from {stale} after the run ended; expected only {sorted(expected)}")
    seen = result.releases_seen()
    if forbidden & set(seen):
        problems.append(f"the load balancer served {sorted(forbidden & set(seen))}, which must never be served:"
                        f" {dict(seen)}")
    report = {
        "url": args.url,
        "requests": result.total,
        "failed": result.failed,
        "slow_requests": result.slow_total,
        "seconds": round(result.duration, 1),
        "p50_ms": round(result.p50_ms, 1),
        "p99_ms": round(result.p99_ms, 1),
        "releases_seen": dict(seen),
        "releases_after_run": dict(Counter(r.release for r in late if r.ok)),
    }
    if isinstance(generator, AssetCheckingLoad):
        # The failed checks are among the failed requests above already; this says what they were.
        report.update(generator.asset_report(result.started_at))
        if report["asset_failures"]:
            problems.append(f"{report['asset_failures']} of {report['asset_checks']} asset checks failed ({ASSET_SKEW}): "
                            + "; ".join(example["error"] for example in report["asset_failure_examples"][:3]))
        if not report["asset_checks"]:
            problems.append("--check-assets: no answer named an asset, so no asset was checked")
    report["problems"] = problems
    if args.timeline:
        write_timeline(Path(args.timeline), result, done)
    print(json.dumps(report, indent=1))
    return 1 if problems else 0


def write_timeline(path: Path, result, done: float | None) -> None:
    """Every response of the load as [start, seconds, ok, release, slow] rows, start in epoch seconds (the deploy's
    marks are epoch seconds too), for benchmarks/deploy.py's timeline picture."""
    to_epoch = time.time() - time.monotonic()
    rows = [[round(r.t_start + to_epoch, 4), round(r.t_end - r.t_start, 4), r.ok, r.release, r.kind == "slow"]
            for r in result.responses]
    path.write_text(json.dumps({"done": None if done is None else round(done + to_epoch, 4), "responses": rows}))


def fetch(url: str, timeout: float):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", "/", headers={"Connection": "close"})
        reply = connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise ValueError(f"HTTP {reply.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def run_workers(args) -> int:
    expected = {int(pid) for pid in args.pids.split(",") if pid}
    answers: dict[int, dict] = {}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.max_seconds

    def client():
        while time.monotonic() < deadline:
            with lock:
                if expected <= set(answers) or len(errors) > 20:
                    return
            try:
                payload = fetch(args.url, timeout=max(0.5, deadline - time.monotonic()))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                answers[payload["pid"]] = payload

    threads = [threading.Thread(target=client, daemon=True) for index in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.max_seconds + 10)
    problems = []
    missing = sorted(expected - set(answers))
    if missing:
        problems.append(f"workers {missing} never answered within {args.max_seconds} s")
    strangers = sorted(set(answers) - expected)
    if strangers:
        problems.append(f"pids {strangers} answered but are not workers of the service")
    for pid, payload in sorted(answers.items()):
        served = (payload.get("release"), payload.get("dependency", {}).get("version"))
        if served != (args.release, args.dependency):
            problems.append(f"worker {pid} serves release {served[0]} with idna {served[1]},"
                            f" expected {args.release} with idna {args.dependency}")
    problems.extend(errors[:5])
    print(json.dumps({"workers": {pid: {k: p[k] for k in ("release", "dependency", "prefix", "code")}
                                  for pid, p in sorted(answers.items())},
                      "problems": problems}, indent=1))
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load")
    load.add_argument("--target", action="append", required=True, help="NAME=http://HOST:PORT")
    load.add_argument("--marks", required=True)
    load.add_argument("--expect-release", required=True)
    load.add_argument("--concurrency", type=int, default=10)
    # Slow clients hold workers: keep them below the workers that serve (4 single-threaded uWSGI workers).
    load.add_argument("--slow-clients", type=int, default=2)
    load.add_argument("--slow-seconds", type=float, default=2.0)
    load.add_argument("--think-seconds", type=float, default=0.04,
                      help="pause of each fast client between requests; leaves CPU to the fleet and to ansible")
    load.add_argument("--min-requests", type=int, default=2000)
    load.add_argument("--max-requests", type=int, default=200_000)
    load.add_argument("--max-seconds", type=float, default=300)
    balancer = commands.add_parser("lb")
    balancer.add_argument("--url", required=True)
    balancer.add_argument("--marks", required=True)
    balancer.add_argument("--expect-release", required=True, help="releases allowed once the run ended, comma-separated")
    balancer.add_argument("--forbid-release", default="", help="releases that must never answer, comma-separated")
    balancer.add_argument("--concurrency", type=int, default=10)
    balancer.add_argument("--slow-clients", type=int, default=3)
    balancer.add_argument("--slow-seconds", type=float, default=2.0)
    balancer.add_argument("--think-seconds", type=float, default=0.04)
    balancer.add_argument("--min-requests", type=int, default=2000)
    balancer.add_argument("--max-requests", type=int, default=400_000)
    balancer.add_argument("--max-seconds", type=float, default=900)
    balancer.add_argument("--request-timeout", type=float, default=None,
                          help="seconds a request may wait for its answer (default: slow seconds + 60); a paused "
                               "load balancer holds requests until it runs again")
    balancer.add_argument("--timeline", default="", help="write every response (epoch start, seconds, ok, release) here")
    balancer.add_argument("--check-assets", action=argparse.BooleanOptionalAction, default=False,
                          help="fetch the asset each checked answer names, through the same URL: it must answer 200 "
                               "naming the page's release (a failure is an 'asset skew' failed request)")
    balancer.add_argument("--asset-every", type=int, default=5,
                          help="with --check-assets, check the asset of every Nth answer of each fast client (default 5)")
    workers = commands.add_parser("workers")
    workers.add_argument("--url", required=True)
    workers.add_argument("--pids", required=True)
    workers.add_argument("--release", required=True)
    workers.add_argument("--dependency", required=True)
    workers.add_argument("--concurrency", type=int, default=16)
    workers.add_argument("--max-seconds", type=float, default=20)
    args = parser.parse_args(argv)
    return {"load": run_load, "lb": run_lb, "workers": run_workers}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

"""Load and proof for the molecule scenarios: run from the controller against the hosts' published ports.

    python3 tests/fleet/probe.py load --target app1=http://127.0.0.1:18101 ... --marks DIR [--max-seconds 300]
        Real HTTP load on every target (fresh connection per request, slow requests always in flight).
        Writes DIR/warm once every target has answered; the playbook writes DIR/reload-started before it
        switches and reloads, and DIR/reload-done afterwards. Ends after reload-done (and at least
        --min-requests per target) and exits 1 unless every target had 0 failed requests, an old worker
        finishing a slow request after the new release first answered, and only --expect-release answers
        from requests started after reload-done. Prints one JSON document.

    python3 tests/fleet/probe.py workers --url URL --pids 11,12 --release v2 --dependency 3.10
        Concurrent requests until each listed worker pid has answered; exits 1 unless each named the
        release and the dependency version (and no other pid answered).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.loadgen import LoadGenerator  # noqa: E402  (path set just above)


def wait_for_mark(path: Path, deadline: float) -> float | None:
    """Poll for a mark file; the monotonic time it was seen, or None at the deadline."""
    while time.monotonic() < deadline:
        if path.exists():
            return time.monotonic()
        time.sleep(0.05)
    return None


def judge_target(name: str, result, reload_started: float | None, reload_done: float | None, release: str):
    problems = []
    if result.failed:
        problems.append(f"{name}: {result.failed} failed requests: " + result.summary(5))
    # The first answer from the new release shows the reload under way: a slow request that started before it
    # and succeeded after it was in flight on an old worker while workers were being replaced.
    first_new = min((r.t_end for r in result.responses if r.ok and r.release == release), default=None)
    spanning = [
        r for r in result.responses
        if r.kind == "slow" and first_new is not None and r.t_start < first_new < r.t_end
    ]
    if not any(r.ok and r.release != release for r in spanning):
        problems.append(f"{name}: no slow request on an old worker was in flight (and succeeded) during the reload")
    late = [r for r in result.responses if reload_done is not None and r.t_start >= reload_done]
    stale = sorted({(r.release, r.pid) for r in late if r.ok and r.release != release}, key=str)
    if stale:
        problems.append(f"{name}: answers from other releases after the reload finished: {stale[:10]}")
    if reload_done is not None and not late:
        problems.append(f"{name}: no request started after the reload finished")
    report = {
        "requests": result.total,
        "failed": result.failed,
        "slow": result.slow_total,
        "slow_spanning_reload": {"old": sum(1 for r in spanning if r.ok and r.release != release),
                                 "new": sum(1 for r in spanning if r.ok and r.release == release)},
        "requests_per_second": round(result.requests_per_second),
        "p50_ms": round(result.p50_ms, 1),
        "p99_ms": round(result.p99_ms, 1),
        "releases_seen": dict(result.releases_seen()),
        "after_reload": {"requests": len(late), "pids": sorted({r.pid for r in late if r.ok})},
        "first_failures": result.failures[:5],
    }
    return report, problems


def run_load(args) -> int:
    marks = Path(args.marks)
    marks.mkdir(parents=True, exist_ok=True)
    targets = dict(item.split("=", 1) for item in args.target)
    generators = {
        name: LoadGenerator(
            url,
            concurrency=args.concurrency,
            slow_clients=args.slow_clients,
            slow_seconds=args.slow_seconds,
            min_requests=args.min_requests,
            max_requests=args.max_requests,
            max_seconds=args.max_seconds,
            request_timeout=args.slow_seconds + 60,
            think_seconds=args.think_seconds,
        )
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
        report["targets"][name], found = judge_target(name, result, reload_started, reload_done, args.expect_release)
        problems.extend(found)
    if reload_started is not None and reload_done is not None:
        report["reload_seconds"] = round(reload_done - reload_started, 2)
    report["requests"] = sum(r.total for r in results.values())
    report["failed"] = sum(r.failed for r in results.values())
    report["problems"] = problems
    print(json.dumps(report, indent=1, default=str))
    return 1 if problems else 0


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
    workers = commands.add_parser("workers")
    workers.add_argument("--url", required=True)
    workers.add_argument("--pids", required=True)
    workers.add_argument("--release", required=True)
    workers.add_argument("--dependency", required=True)
    workers.add_argument("--concurrency", type=int, default=16)
    workers.add_argument("--max-seconds", type=float, default=20)
    args = parser.parse_args(argv)
    return run_load(args) if args.command == "load" else run_workers(args)


if __name__ == "__main__":
    sys.exit(main())

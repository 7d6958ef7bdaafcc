"""Load and proof for the molecule scenario "django" (the shop of tests/django): run from the controller.

    python3 tests/fleet/django_probe.py load --url http://127.0.0.1:18410 --marks DIR --expect-release v2
            [--forbid-release v3-broken-migration] [--require-pages v1,v2] [--readers 7 --writers 3 ...]
        A shop's traffic while a playbook runs: readers GET / (a page that reads the database) and then, for every
        page, the stylesheet the page names (its hashed name under the manifest storage), which must answer 200
        with the bytes of the page's own release (the stylesheet carries the release id); writers POST /items/
        (a row written to the database, 201); slow clients keep GET /slow/ requests in flight all along. Every
        request opens a fresh connection (tests/support/loadgen.py says why). Writes DIR/warm once the shop
        answers, runs until DIR/done (written by the caller when the playbook ended) plus 2 s and at least
        --min-requests requests, within --max-requests and --max-seconds. Prints one JSON document; exits 1
        unless no request failed, every asset check passed, every page of --require-pages was seen (with its
        asset), only --expect-release answered requests started after DIR/done, and --forbid-release never.

    python3 tests/fleet/django_probe.py workers --url http://HOST:8000 --pids 11,12 --release v2
            --greeting-sha256 HEX --secret-sha256 HEX
        Concurrent GET /env-check/ on one app host until each listed worker pid has answered; exits 1 unless each
        named the release and the sha256 of the expected SHOP_GREETING and DJANGO_SECRET_KEY (the environment
        reached the worker intact), and no other pid answered. Never sees or prints the values themselves.
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# The record of one request, the base URL check and the percentile of the rollout scenarios' load generator.
from tests.support.loadgen import Response, _percentile_ms, _split_base_url  # noqa: E402  (path set just above)

PAGE_RELEASE = re.compile(rb'<body data-release="([^"]+)" data-pid="([0-9]+)"')
PAGE_COUNT = re.compile(rb'<span id="count">([0-9]+)</span>')
PAGE_STYLESHEET = re.compile(rb'<link rel="stylesheet" href="([^"]+)"')
# ManifestStaticFilesStorage names a file after the first 12 hex digits of its content's md5.
HASHED_STYLESHEET = re.compile(r"^/static/items/app\.[0-9a-f]{12}\.css$")
STYLESHEET_RELEASE = re.compile(rb'--shop-release: "([^"]*)";')
KINDS = ("page", "asset", "post", "slow")


class Refused(Exception):
    """An answer that does not count as served: wrong status or a body that is not the shop's."""


@dataclass(frozen=True)
class AssetCheck:
    """The stylesheet a page named, fetched right after the page."""

    t_start: float
    page_release: str
    url: str
    asset_release: str | None  # the release the bytes name; None when no stylesheet of the shop came back
    error: str | None  # None exactly when it answered 200 with the page's own release

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def skew(self) -> bool:
        """Answered, but with another release's bytes."""
        return self.asset_release is not None and self.asset_release != self.page_release


def exchange(host: str, port: int, method: str, path: str, timeout: float, body: bytes | None = None):
    """One request on a fresh connection: (status, body). Raises OSError or HTTPException when none came back."""
    headers = {"Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def judged(kind: str, host: str, port: int, method: str, path: str, timeout: float, judge, body: bytes | None = None):
    """Issue one request and judge its answer: (Response, whatever judge returned or None)."""
    t_start = time.monotonic()
    status = None
    try:
        status, content = exchange(host, port, method, path, timeout, body)
        release, pid, extra = judge(status, content)
    except (OSError, http.client.HTTPException) as exc:
        return Response(t_start, time.monotonic(), kind, status, None, None, f"{type(exc).__name__}: {exc}"), None
    except Refused as exc:
        return Response(t_start, time.monotonic(), kind, status, None, None, str(exc)), None
    return Response(t_start, time.monotonic(), kind, status, release, pid, None), extra


def expect_status(status: int, content: bytes, wanted: int) -> None:
    if status != wanted:
        raise Refused(f"HTTP {status}: {content[:200]!r}")


def judge_page(status: int, content: bytes):
    """A page: 200, the release and worker, the item count it read from the database, the stylesheet it names."""
    expect_status(status, content, 200)
    identity, count = PAGE_RELEASE.search(content), PAGE_COUNT.search(content)
    stylesheet = PAGE_STYLESHEET.search(content)
    if not (identity and count and stylesheet):
        raise Refused(f"not a page of the shop (release, count or stylesheet missing): {content[:200]!r}")
    return identity.group(1).decode(), int(identity.group(2)), urlsplit(stylesheet.group(1).decode()).path


def judge_json(wanted: int):
    def judge(status: int, content: bytes):
        expect_status(status, content, wanted)
        try:
            payload = json.loads(content)
            release, pid = payload["release"], payload["pid"]
        except (ValueError, TypeError, KeyError) as exc:
            raise Refused(f"bad body ({type(exc).__name__}): {content[:200]!r}") from None
        if not isinstance(release, str) or not isinstance(pid, int):
            raise Refused(f"bad body (wrong field types): {content[:200]!r}")
        return release, pid, payload
    return judge


def judge_stylesheet(status: int, content: bytes):
    expect_status(status, content, 200)
    marker = STYLESHEET_RELEASE.search(content)
    if not marker:
        raise Refused(f"not the shop's stylesheet (no --shop-release): {content[:200]!r}")
    return marker.group(1).decode(), None, None


class ShopLoad:
    """Threads of readers, writers and slow clients against one base URL, bounded in requests and seconds."""

    def __init__(self, args) -> None:
        self.host, self.port = _split_base_url(args.url)
        self.args = args
        self.lock = threading.Lock()
        self.issued = 0
        self.completed = 0  # pages, assets and posts answered (failed or not): the min-requests count
        self.stop_requested = False
        self.end_reason = "stop"
        self.started_at = 0.0
        self.threads: list[threading.Thread] = []
        # One sink per thread, merged after join: recording needs no lock.
        self.sinks: list[tuple[list[Response], list[AssetCheck]]] = []

    def may_issue(self, fast: bool) -> bool:
        with self.lock:
            if time.monotonic() - self.started_at >= self.args.max_seconds:
                self.end_reason = "max_seconds"
                return False
            if self.issued >= self.args.max_requests:
                self.end_reason = "max_requests"
                return False
            # Slow clients stop with the run; fast ones go on until the run has its minimum sample.
            if self.stop_requested and (not fast or self.completed >= self.args.min_requests):
                return False
            self.issued += 1
            return True

    def count(self, responses: int) -> None:
        with self.lock:
            self.completed += responses

    def start(self) -> None:
        self.started_at = time.monotonic()
        roles = ([self.reader] * self.args.readers + [self.writer] * self.args.writers
                 + [self.slow] * self.args.slow_clients)
        for index, role in enumerate(roles):
            sink: tuple[list[Response], list[AssetCheck]] = ([], [])
            self.sinks.append(sink)
            thread = threading.Thread(target=role, args=(index, sink), name=f"{role.__name__}-{index}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def stop(self) -> tuple[list[Response], list[AssetCheck], float]:
        with self.lock:
            self.stop_requested = True
        deadline = (max(time.monotonic(), self.started_at + self.args.max_seconds)
                    + 2 * self.args.request_timeout + self.args.slow_seconds + 5)
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self.threads if thread.is_alive()]
        if stuck:
            raise RuntimeError(f"load threads did not finish: {stuck}")
        responses = sorted((r for sink in self.sinks for r in sink[0]), key=lambda r: r.t_start)
        checks = sorted((c for sink in self.sinks for c in sink[1]), key=lambda c: c.t_start)
        return responses, checks, time.monotonic() - self.started_at

    def reader(self, index: int, sink) -> None:
        """GET / and then, for every page that answered, the stylesheet it names."""
        responses, checks = sink
        timeout = self.args.request_timeout
        while self.may_issue(fast=True):
            page, stylesheet = judged("page", self.host, self.port, "GET", "/", timeout, judge_page)
            responses.append(page)
            if page.ok:
                # Not gated by may_issue: every page that answered gets its asset check.
                asset = judged("asset", self.host, self.port, "GET", stylesheet, timeout, judge_stylesheet)[0]
                responses.append(asset)
                error = asset.error
                if error is None and not HASHED_STYLESHEET.match(stylesheet):
                    error = f"the page names {stylesheet}, not a hashed name of the manifest storage"
                elif error is None and asset.release != page.release:
                    error = f"the {page.release} page's stylesheet answered with the bytes of {asset.release}"
                checks.append(AssetCheck(page.t_start, page.release, stylesheet, asset.release, error))
            self.count(2 if page.ok else 1)
            time.sleep(self.args.think_seconds)

    def writer(self, index: int, sink) -> None:
        """POST /items/: one row per request."""
        responses = sink[0]
        number = 0
        while self.may_issue(fast=True):
            number += 1
            body = urlencode({"name": f"probe-{index}-{number}", "note": f"probe {index}/{number}"}).encode()
            post = judged("post", self.host, self.port, "POST", "/items/", self.args.request_timeout,
                          judge_json(201), body)[0]
            responses.append(post)
            self.count(1)
            time.sleep(self.args.think_seconds)

    def slow(self, index: int, sink) -> None:
        """GET /slow/ back to back: a request of this client is always in flight."""
        responses = sink[0]
        path = f"/slow/?s={self.args.slow_seconds}"
        while self.may_issue(fast=False):
            response = judged("slow", self.host, self.port, "GET", path, self.args.request_timeout, judge_json(200))[0]
            responses.append(response)
            if not response.ok:
                # A refusal comes back at once: no busy loop against a server that is down.
                time.sleep(self.args.think_seconds)


def wait_for_mark(path: Path, deadline: float) -> float | None:
    """Poll for a mark file; the monotonic time it was seen, or None at the deadline."""
    while time.monotonic() < deadline:
        if path.exists():
            return time.monotonic()
        time.sleep(0.05)
    return None


def milliseconds(responses: list[Response]) -> dict:
    latencies = sorted(r.t_end - r.t_start for r in responses if r.ok)
    return {"p50_ms": round(_percentile_ms(latencies, 0.50), 1), "p99_ms": round(_percentile_ms(latencies, 0.99), 1)}


def failure_lines(responses: list[Response], started_at: float, limit: int) -> list[str]:
    return [f"+{r.t_start - started_at:.2f}s {r.kind}: {r.error}" for r in responses if not r.ok][:limit]


def run_load(args) -> int:
    marks = Path(args.marks)
    marks.mkdir(parents=True, exist_ok=True)
    load = ShopLoad(args)
    deadline = time.monotonic() + args.max_seconds
    load.start()
    while time.monotonic() < deadline and load.completed < 50:
        time.sleep(0.05)
    (marks / "warm").write_text("ok\n")
    done = wait_for_mark(marks / "done", deadline)
    # Some traffic after the run: what clients see once it is over.
    time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    responses, checks, seconds = load.stop()

    expected = set(filter(None, args.expect_release.split(",")))
    forbidden = set(filter(None, args.forbid_release.split(",")))
    required = set(filter(None, args.require_pages.split(",")))
    by_kind = {kind: [r for r in responses if r.kind == kind] for kind in KINDS}

    # --asset-404-is-skew: an asset that answered 404 is the measured skew of a server that serves each release's own
    # assets only (WhiteNoise), reported, not a failed request; every other failure still is one.
    def skew_404(response) -> bool:
        return args.asset_404_is_skew and response.kind == "asset" and "HTTP 404" in (response.error or "")

    asset_404s = [r for r in responses if not r.ok and skew_404(r)]
    failed = [r for r in responses if not r.ok and not skew_404(r)]
    served = [r for r in responses if r.ok and r.kind != "asset"]
    late = [r for r in served if done is not None and r.t_start >= done]
    seen = Counter(r.release for r in served)
    checked_pages = Counter(c.page_release for c in checks if c.ok)
    failed_checks = [c for c in checks if not c.ok and not (args.asset_404_is_skew and "HTTP 404" in (c.error or ""))]
    skews = [c for c in checks if c.skew]

    problems = []
    if done is None:
        problems.append(f"the caller did not mark the end of its run within {args.max_seconds} s")
    if failed:
        problems.append(f"{len(failed)} failed requests: " + "; ".join(failure_lines(responses, load.started_at, 5)))
    if failed_checks:
        problems.append(f"{len(failed_checks)} of {len(checks)} asset checks failed: "
                        + "; ".join(f"{c.url}: {c.error}" for c in failed_checks[:5]))
    if not any(r.ok for r in by_kind["slow"]):
        problems.append("no slow request completed: nothing was in flight")
    if not any(r.ok for r in by_kind["post"]):
        problems.append("no POST /items/ succeeded: nothing was written")
    if done is not None and not late:
        problems.append("no request started after the run ended")
    stale = sorted({r.release for r in late} - expected)
    if stale:
        problems.append(f"answers from {stale} after the run ended; expected only {sorted(expected)}")
    if forbidden & set(seen):
        problems.append(f"{sorted(forbidden & set(seen))} answered, which must never be served: {dict(seen)}")
    missing = sorted(required - set(checked_pages))
    if missing:
        problems.append(f"no page of {missing} was served with its stylesheet checked; pages checked: "
                        f"{dict(checked_pages)}")
    if load.completed < args.min_requests:
        problems.append(f"only {load.completed} pages, assets and posts answered, fewer than {args.min_requests}"
                        f" (ended by {load.end_reason})")

    report = {
        "url": args.url,
        "requests": len(responses),
        "failed": len(failed),
        "seconds": round(seconds, 1),
        "end_reason": load.end_reason,
        "kinds": {kind: {"requests": len(items), "failed": sum(1 for r in items if not r.ok), **milliseconds(items)}
                  for kind, items in by_kind.items()},
        **milliseconds([r for r in responses if r.kind != "slow"]),
        "slow_requests": len(by_kind["slow"]),
        "releases_seen": dict(seen),
        "pages_by_release": dict(Counter(r.release for r in by_kind["page"] if r.ok)),
        "asset_checks": {"done": len(checks), "passed": len(checks) - len(failed_checks), "failed": len(failed_checks),
                         "passed_by_page_release": dict(checked_pages)},
        "skew_failures": len(skews),
        "asset_404s": len(asset_404s),
        "asset_404_window_s": (round(asset_404s[-1].t_start - asset_404s[0].t_start, 2) if asset_404s else 0),
        "skew_examples": [{"page": c.page_release, "url": c.url, "bytes_of": c.asset_release} for c in skews[:5]],
        "items_created": sum(1 for r in by_kind["post"] if r.ok),
        "releases_after_run": dict(Counter(r.release for r in late)),
        "first_failures": failure_lines(responses, load.started_at, 10),
        "problems": problems,
    }
    print(json.dumps(report, indent=1))
    return 1 if problems else 0


def run_workers(args) -> int:
    host, port = _split_base_url(args.url)
    expected = {int(pid) for pid in args.pids.split(",") if pid}
    answers: dict[int, dict] = {}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.max_seconds
    issued = 0

    def client():
        nonlocal issued
        judge = judge_json(200)
        while time.monotonic() < deadline:
            with lock:
                # Stop once every worker answered, or when the host keeps failing, or at the bound.
                if expected <= set(answers) or len(errors) > 20 or issued >= args.max_requests:
                    return
                issued += 1
            response, payload = judged("env", host, port, "GET", "/env-check/",
                                       max(0.5, deadline - time.monotonic()), judge)
            with lock:
                if response.ok:
                    answers[response.pid] = payload
                else:
                    errors.append(response.error)

    # Concurrency matters: uWSGI's workers accept from one socket, and one client could keep meeting the same one.
    threads = [threading.Thread(target=client, daemon=True) for index in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.max_seconds + 10)

    problems = []
    missing = sorted(expected - set(answers))
    if missing:
        problems.append(f"workers {missing} never answered within {args.max_seconds} s ({issued} requests)")
    strangers = sorted(set(answers) - expected)
    if strangers:
        problems.append(f"pids {strangers} answered but are not the workers listed")
    workers = {}
    for pid, payload in sorted(answers.items()):
        workers[pid] = {
            "release": payload.get("release"),
            "greeting_ok": payload.get("greeting_sha256") == args.greeting_sha256,
            "greeting_length": payload.get("greeting_length"),
            "secret_ok": payload.get("secret_sha256") == args.secret_sha256,
        }
        if payload.get("release") != args.release:
            problems.append(f"worker {pid} serves {payload.get('release')}, expected {args.release}")
        if not workers[pid]["greeting_ok"]:
            # The greeting is no secret: its hash and length tell how its quoting went wrong.
            problems.append(f"worker {pid}: SHOP_GREETING differs from the inventory's (sha256"
                            f" {payload.get('greeting_sha256')}, {payload.get('greeting_length')} characters)")
        if not workers[pid]["secret_ok"]:
            problems.append(f"worker {pid}: DJANGO_SECRET_KEY differs from the inventory's")
    problems.extend(errors[:5])
    print(json.dumps({"url": args.url, "requests": issued, "workers": workers, "problems": problems}, indent=1))
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load")
    load.add_argument("--url", required=True, help="http://HOST:PORT of the load balancer (or of one app host)")
    load.add_argument("--marks", required=True)
    load.add_argument("--expect-release", required=True, help="releases allowed once the run ended, comma-separated")
    load.add_argument("--forbid-release", default="", help="releases that must never answer, comma-separated")
    load.add_argument("--require-pages", default="", help="releases whose pages (and assets) must have been seen")
    load.add_argument("--asset-404-is-skew", action="store_true",
                      help="count an asset answering 404 as measured skew (asset_404s), not as a failed request")
    # 10 fast clients in all; slow clients hold workers: keep them well below the workers that serve.
    load.add_argument("--readers", type=int, default=7)
    load.add_argument("--writers", type=int, default=3)
    load.add_argument("--slow-clients", type=int, default=2)
    load.add_argument("--slow-seconds", type=float, default=1.5)
    # Every page and post costs a PostgreSQL connection: a slower pace than the demo app's leaves the CPUs of a
    # small machine to the fleet and to ansible-playbook, and still makes thousands of requests per deploy.
    load.add_argument("--think-seconds", type=float, default=0.15,
                      help="pause of each fast client between requests")
    load.add_argument("--min-requests", type=int, default=2000)
    load.add_argument("--max-requests", type=int, default=200_000)
    load.add_argument("--max-seconds", type=float, default=600)
    load.add_argument("--request-timeout", type=float, default=60)
    workers = commands.add_parser("workers")
    workers.add_argument("--url", required=True, help="http://HOST:PORT of one app host's server")
    workers.add_argument("--pids", required=True)
    workers.add_argument("--release", required=True)
    workers.add_argument("--greeting-sha256", required=True)
    workers.add_argument("--secret-sha256", required=True)
    workers.add_argument("--concurrency", type=int, default=8)
    workers.add_argument("--max-requests", type=int, default=3000)
    workers.add_argument("--max-seconds", type=float, default=30)
    args = parser.parse_args(argv)
    if args.command == "load" and args.readers + args.writers < 10:
        parser.error("--readers plus --writers: at least 10 concurrent clients")
    return {"load": run_load, "workers": run_workers}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

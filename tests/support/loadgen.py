"""Real HTTP load over loopback, used to prove that reloads drop no requests.

Every request opens a fresh TCP connection and sends ``Connection: close``.
That is deliberate: with keep-alive a client would stay pinned to whichever
worker accepted its first connection, and a reload would show up as a handful
of broken connections instead of as what production traffic sees, namely a
stream of new connections that must each be accepted by *some* live worker.

All timestamps are ``time.monotonic()`` values, so callers can correlate them
with their own ``time.monotonic()`` readings (for example "only responses that
started after the reload finished").
"""

from __future__ import annotations

import bisect
import http.client
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from .process import StartStop

RequestKind = Literal["fast", "slow"]


@dataclass(frozen=True, slots=True)
class Response:
    """The outcome of one request; ``error`` is None exactly when it succeeded."""

    t_start: float
    t_end: float
    kind: RequestKind
    status: int | None  # None when no HTTP status line was received at all
    release: str | None
    pid: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _split_base_url(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"expected http://HOST:PORT, got {base_url!r}")
    return parts.hostname, parts.port


def _fetch_identity(
    host: str, port: int, path: str, kind: RequestKind, timeout: float
) -> Response:
    """Issue one GET on a new connection and judge the answer.

    A request only counts as a success if it produced a 200 whose JSON body
    names a release and a pid: a worker without a loaded app answers 500, and a
    truncated or garbled body must not pass as "served".
    """
    t_start = time.monotonic()
    status: int | None = None

    def failure(error: str) -> Response:
        return Response(t_start, time.monotonic(), kind, status, None, None, error)

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        reply = conn.getresponse()
        status = reply.status
        body = reply.read()
    except (OSError, http.client.HTTPException) as exc:
        # OSError covers refused/reset connections and socket timeouts;
        # HTTPException covers malformed or missing status lines.
        return failure(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()

    if status != 200:
        return failure(f"HTTP {status}: {body[:200]!r}")
    try:
        payload = json.loads(body)
        release, pid = payload["release"], payload["pid"]
    except (ValueError, TypeError, KeyError) as exc:
        return failure(f"bad body ({type(exc).__name__}): {body[:200]!r}")
    if not isinstance(release, str) or not isinstance(pid, int):
        return failure(f"bad body (wrong field types): {body[:200]!r}")
    return Response(t_start, time.monotonic(), kind, status, release, pid, None)


def _percentile_ms(sorted_seconds: list[float], fraction: float) -> float:
    """Nearest-rank percentile, in milliseconds; NaN when there is no data."""
    if not sorted_seconds:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_seconds)))
    return sorted_seconds[rank - 1] * 1000.0


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}ms"


@dataclass
class LoadResult:
    """Everything a load run observed. Latency percentiles cover successful
    fast requests only, because slow requests are slow on purpose."""

    started_at: float  # time.monotonic() when the load started
    duration: float
    # "stop" when stop() ended the run, else the bound that ended it first
    # ("max_seconds" or "max_requests") - a bounded run may be too short.
    end_reason: str
    responses: list[Response] = field(repr=False)
    total: int = 0
    failed: int = 0
    fast_total: int = 0
    slow_total: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list, repr=False)
    requests_per_second: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan

    @classmethod
    def from_responses(
        cls,
        responses: list[Response],
        started_at: float,
        finished_at: float,
        end_reason: str,
    ) -> LoadResult:
        responses = sorted(responses, key=lambda r: r.t_start)
        duration = max(finished_at - started_at, 1e-9)
        fast_latencies = sorted(
            r.t_end - r.t_start for r in responses if r.kind == "fast" and r.ok
        )
        return cls(
            started_at=started_at,
            duration=duration,
            end_reason=end_reason,
            responses=responses,
            total=len(responses),
            failed=sum(1 for r in responses if not r.ok),
            fast_total=sum(1 for r in responses if r.kind == "fast"),
            slow_total=sum(1 for r in responses if r.kind == "slow"),
            failures=[
                {
                    "time": r.t_start,
                    "kind": r.kind,
                    "status": r.status,
                    "error": r.error,
                }
                for r in responses
                if not r.ok
            ],
            requests_per_second=len(responses) / duration,
            p50_ms=_percentile_ms(fast_latencies, 0.50),
            p99_ms=_percentile_ms(fast_latencies, 0.99),
        )

    def releases_seen(self) -> Counter[str]:
        """Successful responses per release."""
        return Counter(r.release for r in self.responses if r.release is not None)

    def pids_serving(self, release: str, after: float | None = None) -> set[int]:
        """Worker pids that answered successfully with ``release``, counting
        only requests started at or after ``after`` (a monotonic timestamp)."""
        return {
            r.pid
            for r in self.responses
            if r.ok
            and r.release == release
            and r.pid is not None
            and (after is None or r.t_start >= after)
        }

    def last_response_by_pid(self) -> dict[int, Response]:
        """The latest-finishing successful response from each worker pid."""
        latest: dict[int, Response] = {}
        for r in self.responses:
            if r.ok and r.pid is not None:
                previous = latest.get(r.pid)
                if previous is None or r.t_end >= previous.t_end:
                    latest[r.pid] = r
        return latest

    def summary(self, max_failures: int = 10) -> str:
        """Human-readable report, meant for assertion messages and benchmark logs."""
        lines = [
            f"{self.total} requests ({self.fast_total} fast, {self.slow_total} slow)"
            f" in {self.duration:.2f}s = {self.requests_per_second:.0f} req/s;"
            f" failed={self.failed}; p50={_ms(self.p50_ms)} p99={_ms(self.p99_ms)};"
            f" ended by {self.end_reason}",
            "releases seen: "
            + (
                ", ".join(
                    f"{rel}={n}" for rel, n in sorted(self.releases_seen().items())
                )
                or "none"
            ),
        ]
        for failure in self.failures[:max_failures]:
            offset = failure["time"] - self.started_at
            lines.append(
                f"  FAILED at +{offset:.3f}s [{failure['kind']}] {failure['error']}"
            )
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more failures")
        return "\n".join(lines)


class LoadGenerator(StartStop):
    """Thread-based HTTP load: ``concurrency`` clients hammer ``GET /`` while
    ``slow_clients`` keep ``GET /slow`` requests permanently in flight, so that
    any reload necessarily overlaps with requests a worker is still serving.

    ``stop()`` does not cut the run short: fast clients continue until at least
    ``min_requests`` fast requests have completed, so a short reload window
    still yields a statistically meaningful sample. Independently of ``stop()``,
    the run ends after ``max_seconds`` or ``max_requests`` requests, whichever
    comes first, so a stuck server cannot hang a test.
    """

    def __init__(
        self,
        base_url: str,
        concurrency: int = 10,
        slow_clients: int = 2,
        slow_seconds: float = 2.0,
        min_requests: int = 5000,
        max_requests: int = 100_000,
        max_seconds: float = 120.0,
        request_timeout: float = 65.0,
        think_seconds: float = 0.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if min_requests > max_requests:
            raise ValueError("min_requests must not exceed max_requests")
        self._host, self._port = _split_base_url(base_url)
        self.base_url = base_url
        self.concurrency = concurrency
        self.slow_clients = slow_clients
        self.slow_seconds = slow_seconds
        self.min_requests = min_requests
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.request_timeout = request_timeout
        # Pause of each fast client between two requests: paces the load where the client shares the CPUs
        # with what it tests (a whole fleet and ansible-playbook on one small machine).
        self.think_seconds = think_seconds

        self._lock = threading.Lock()
        self._stop_requested = False
        self._issued = 0
        self._fast_completed = 0
        self._end_reason: str | None = None
        self._threads: list[threading.Thread] = []
        # One list per thread, merged after join, so recording needs no lock.
        self._per_thread_responses: list[list[Response]] = []
        self._started_at: float | None = None
        self.result: LoadResult | None = None

    @property
    def fast_completed(self) -> int:
        """Fast requests answered so far (tests wait on it to let traffic warm up)."""
        with self._lock:
            return self._fast_completed

    def responses_since(self, after: float) -> list[Response]:
        """Responses recorded so far for requests started at or after
        ``after`` (a monotonic timestamp), in no particular order.

        Safe to call while the load runs (a benchmark watches new workers
        answer before moving on); requests still in flight are not included.
        """
        found: list[Response] = []
        for sink in list(self._per_thread_responses):
            # Each client records its requests one after the other, so every
            # sink is in t_start order; a concurrent append only adds to the end.
            start = bisect.bisect_left(sink, after, key=lambda r: r.t_start)
            found.extend(sink[start:])
        return found

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self._started_at is not None:
            raise RuntimeError("LoadGenerator can only be started once")
        self._started_at = time.monotonic()
        slow_path = f"/slow?seconds={self.slow_seconds}"
        clients: list[tuple[RequestKind, str]] = [("fast", "/")] * self.concurrency
        clients += [("slow", slow_path)] * self.slow_clients
        for index, (kind, path) in enumerate(clients):
            sink: list[Response] = []
            self._per_thread_responses.append(sink)
            thread = threading.Thread(
                target=self._client_loop,
                args=(kind, path, sink),
                name=f"loadgen-{kind}-{index}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> LoadResult:
        """Ask clients to wind down, wait for them, and return the result."""
        if self._started_at is None:
            raise RuntimeError("LoadGenerator was never started")
        if self.result is not None:
            return self.result
        with self._lock:
            self._stop_requested = True
        # Clients may legitimately run until max_seconds (if min_requests is not
        # reached yet) and then finish one in-flight request.
        join_deadline = (
            max(time.monotonic(), self._started_at + self.max_seconds)
            + self.request_timeout
            + self.slow_seconds
            + 5.0
        )
        for thread in self._threads:
            thread.join(timeout=max(0.0, join_deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise RuntimeError(f"load generator threads did not finish: {stuck}")
        responses = [r for sink in self._per_thread_responses for r in sink]
        self.result = LoadResult.from_responses(
            responses,
            self._started_at,
            time.monotonic(),
            self._end_reason or "stop",
        )
        return self.result

    # -- client threads ------------------------------------------------------

    def _may_issue(self) -> bool:
        """Decide whether a client may start another request (and count it)."""
        assert self._started_at is not None
        with self._lock:
            if time.monotonic() - self._started_at >= self.max_seconds:
                self._end_reason = self._end_reason or "max_seconds"
                return False
            if self._issued >= self.max_requests:
                self._end_reason = self._end_reason or "max_requests"
                return False
            if self._stop_requested and self._fast_completed >= self.min_requests:
                return False
            self._issued += 1
            return True

    def _client_loop(self, kind: RequestKind, path: str, sink: list[Response]) -> None:
        while self._may_issue():
            sink.append(
                _fetch_identity(
                    self._host, self._port, path, kind, self.request_timeout
                )
            )
            if kind == "fast":
                with self._lock:
                    self._fast_completed += 1
            if kind == "fast" and self.think_seconds:
                time.sleep(self.think_seconds)


def sample_serving_pids(
    base_url: str,
    expected_pids: set[int],
    release: str,
    max_requests: int = 3000,
    max_seconds: float = 20,
    concurrency: int = 10,
) -> dict[str, Any]:
    """Fire concurrent ``GET /`` until every pid in ``expected_pids`` has
    answered with ``release``, or a bound is hit.

    Concurrency is essential: uWSGI workers accept from one shared socket, and
    a sequential client can keep landing on the same idle worker forever.

    Returns ``{"seen": {pid: release}, "missing": set of expected pids that never
    answered with release, "wrong": [(pid, release), ...] for every answer with
    another release, "errors": [str, ...] for failed requests}``.
    """
    host, port = _split_base_url(base_url)
    lock = threading.Lock()
    done = threading.Event()
    deadline = time.monotonic() + max_seconds
    issued = 0
    seen: dict[int, str] = {}
    confirmed: set[int] = set()
    wrong: list[tuple[int, str]] = []
    errors: list[str] = []

    def may_issue() -> bool:
        nonlocal issued
        with lock:
            if done.is_set() or issued >= max_requests or time.monotonic() >= deadline:
                return False
            issued += 1
            return True

    def client() -> None:
        while may_issue():
            response = _fetch_identity(
                host, port, "/", "fast", timeout=max(0.1, deadline - time.monotonic())
            )
            with lock:
                if not response.ok:
                    errors.append(response.error or "unknown error")
                    continue
                assert response.pid is not None and response.release is not None
                seen[response.pid] = response.release
                if response.release == release:
                    confirmed.add(response.pid)
                else:
                    wrong.append((response.pid, response.release))
                if expected_pids <= confirmed:
                    done.set()

    threads = [
        threading.Thread(target=client, name=f"sampler-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Every request is bounded by the deadline, so this join is too.
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 5.0)
    with lock:
        return {
            "seen": dict(seen),
            "missing": set(expected_pids) - confirmed,
            "wrong": list(wrong),
            "errors": list(errors),
        }


def describe_sample(sample: dict[str, Any], none_taken: str) -> str:
    """One line on a ``sample_serving_pids`` result, for a timeout's diagnostics
    (``none_taken`` when no sample was taken: ``sample`` is empty)."""
    if not sample:
        return none_taken
    return (
        f"seen={sample['seen']} missing={sample['missing']}"
        f" wrong={sample['wrong'][:5]} ({len(sample['wrong'])}"
        f" total) errors={len(sample['errors'])}"
    )


__all__ = [
    "LoadGenerator",
    "LoadResult",
    "Response",
    "describe_sample",
    "sample_serving_pids",
]

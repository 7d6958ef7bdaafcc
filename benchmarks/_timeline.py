"""The deploy timeline picture (deploy-timeline.png) of benchmarks/deploy.py and make demo.

From the load's record of every response through the load balancer (tests/fleet/probe.py lb --timeline) and the
deploy's report (graceful_rollout: each host's marks, epoch seconds), one picture an operator reads in seconds:
requests per second with the failed ones on their own zero line, p50/p99 latency of the fast requests, the share of
each release served, and per host its staging and its drained interval, with the batch boundaries across.

A plain module: import it as ``benchmarks._timeline`` with the repository root on ``sys.path``.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

BIN_SECONDS = 1.0


def load_timeline(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def batches(hosts: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(batch, start, end) in epoch seconds, from the hosts' marks: a batch starts when its first host's turn starts
    (the mark batch; prepare, its drain, in reports made before that mark) and ends when its last host is done."""
    spans: dict[str, list[float]] = defaultdict(list)
    for host in hosts:
        marks = host.get("marks") or {}
        if "prepare" in marks and "end" in marks and host.get("batch", "-") != "-":
            spans[host["batch"]] += [float(marks.get("batch", marks["prepare"])), float(marks["end"])]
    return sorted(((batch, min(times), max(times)) for batch, times in spans.items()), key=lambda item: item[1])


def staging(hosts: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(start, end) of the staging play, from the staged hosts' marks."""
    starts = [float(h["marks"]["staged_from"]) for h in hosts if "staged_from" in (h.get("marks") or {})]
    ends = [float(h["marks"]["staged_until"]) for h in hosts if "staged_until" in (h.get("marks") or {})]
    return (min(starts), max(ends)) if starts and ends else None


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def series(responses: list[list[Any]], origin: float, end: float) -> dict[str, Any]:
    """Per 1-second bin from ``origin``: requests, failures, p50/p99 of the fast requests (ms), releases served."""
    count = max(1, int(math.ceil((end - origin) / BIN_SECONDS)))
    total = [0] * count
    failed = [0] * count
    fast: list[list[float]] = [[] for dummy in range(count)]
    releases: list[Counter] = [Counter() for dummy in range(count)]
    for start, seconds, ok, release, slow in responses:
        index = int((start + seconds - origin) // BIN_SECONDS)
        if not 0 <= index < count:
            continue
        total[index] += 1
        if not ok:
            failed[index] += 1
            continue
        releases[index][release or "?"] += 1
        if not slow:
            fast[index].append(seconds * 1000)
    p50 = [_percentile(values, 0.5) if values else float("nan") for values in fast]
    p99 = [_percentile(values, 0.99) if values else float("nan") for values in fast]
    return dict(t=[i * BIN_SECONDS for i in range(count)], total=total, failed=failed, p50=p50, p99=p99,
                releases=releases)


def draw(path: Path, timeline: dict[str, Any], report: dict[str, Any], title: str) -> Path:
    """Write the picture to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hosts = [h for h in report.get("hosts", []) if h.get("marks")]
    responses = timeline["responses"]
    if not responses:
        raise ValueError("the load recorded no response")
    origin = min(r[0] for r in responses)
    end = max(r[0] + r[1] for r in responses)
    data = series(responses, origin, end)
    spans = batches(hosts)
    stage = staging(hosts)

    figure, (rate, latency, share, lanes) = plt.subplots(
        4, 1, figsize=(12, 9), sharex=True, gridspec_kw=dict(height_ratios=[2, 1.5, 1.5, max(1.2, 0.3 * len(hosts))]))
    figure.suptitle(title, fontsize=11)

    rate.plot(data["t"], data["total"], color="tab:blue", label="requests/s through the load balancer")
    rate.plot(data["t"], data["failed"], color="tab:red", linewidth=2,
              label=f"failed/s (total {sum(data['failed'])})")
    rate.axhline(0, color="tab:red", linewidth=0.8, linestyle=":")
    rate.set_ylabel("req/s")
    rate.set_ylim(bottom=-max(1, max(data["total"]) * 0.05))
    rate.legend(loc="lower left", fontsize=8)

    latency.plot(data["t"], data["p50"], color="tab:green", label="p50 (fast requests)")
    latency.plot(data["t"], data["p99"], color="tab:orange", label="p99 (fast requests)")
    latency.set_ylabel("ms")
    latency.legend(loc="upper left", fontsize=8)

    names = sorted({name for counter in data["releases"] for name in counter})
    # A second in which no response ended (the load's last one) has no share to show, not a share of 0 %.
    served = [(t, counter) for t, counter in zip(data["t"], data["releases"]) if sum(counter.values())]
    shares = [[counter[name] / sum(counter.values()) * 100 for dummy, counter in served] for name in names]
    share.stackplot([t for t, dummy in served], shares, labels=[f"release {name}" for name in names], alpha=0.8)
    share.set_ylabel("% served")
    share.set_ylim(0, 100)
    share.legend(loc="upper left", fontsize=8)

    for row, host in enumerate(hosts):
        marks = host["marks"]
        if "staged_from" in marks:
            lanes.broken_barh([(float(marks["staged_from"]) - origin,
                                float(marks["staged_until"]) - float(marks["staged_from"]))],
                              (row - 0.3, 0.6), color="tab:gray", alpha=0.5)
        if "prepare" in marks and "enable" in marks:
            lanes.broken_barh([(float(marks["prepare"]) - origin, float(marks["enable"]) - float(marks["prepare"]))],
                              (row - 0.3, 0.6), color="tab:purple")
    lanes.set_yticks(range(len(hosts)))
    lanes.set_yticklabels([h["host"] for h in hosts], fontsize=8)
    lanes.invert_yaxis()
    lanes.set_xlabel("seconds (gray: staging, purple: drained from the load balancer, drain to enable)")

    for axis in (rate, latency, share, lanes):
        for batch, start, dummy in spans:
            axis.axvline(start - origin, color="black", linewidth=0.6, linestyle="--")
        if stage:
            axis.axvspan(stage[0] - origin, stage[1] - origin, color="tab:gray", alpha=0.08)
    for batch, start, dummy in spans:
        rate.annotate(f"batch {batch}", (start - origin, rate.get_ylim()[1]), fontsize=7, rotation=90,
                      va="top", ha="right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

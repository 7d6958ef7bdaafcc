"""benchmarks/_timeline.py: the batch boundaries, the staging span and the per-second series of the deploy timeline
picture, from a report's marks and a load's responses; and the picture itself, written with the pinned matplotlib."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location('deploy_timeline', ROOT / 'benchmarks' / '_timeline.py')
timeline = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(timeline)

HOSTS = [
    {'host': 'app1', 'batch': '1/2', 'marks': {'staged_from': 100.0, 'staged_until': 110.0, 'start': 90.0,
                                               'prepare': 112.0, 'drain': 113.0, 'enable': 118.0, 'end': 118.5}},
    {'host': 'app2', 'batch': '2/2', 'marks': {'staged_from': 100.5, 'staged_until': 111.0, 'start': 108.0,
                                               'prepare': 119.0, 'drain': 120.0, 'enable': 125.0, 'end': 126.0}},
    {'host': 'app3', 'batch': '2/2', 'marks': {'staged_from': 100.2, 'staged_until': 109.0, 'start': 109.5,
                                               'prepare': 119.2, 'drain': 120.1, 'enable': 124.0, 'end': 124.4}},
    # Failed before its batch: no marks of a batch, not in any.
    {'host': 'app4', 'batch': '-', 'marks': {'start': 100.0}},
]


def test_a_batch_runs_from_its_first_drain_to_its_last_host_done():
    assert timeline.batches(HOSTS) == [('1/2', 112.0, 118.5), ('2/2', 119.0, 126.0)]


def test_a_batch_starts_at_its_mark_batch_before_the_drains():
    hosts = [dict(host, marks=dict(host['marks'], batch=host['marks']['prepare'] - 0.6)) for host in HOSTS[:3]]
    assert [(batch, round(start, 1), end) for batch, start, end in timeline.batches(hosts)] == [
        ('1/2', 111.4, 118.5), ('2/2', 118.4, 126.0)]


def test_staging_runs_from_the_first_staged_host_to_the_last():
    assert timeline.staging(HOSTS) == (100.0, 111.0)
    assert timeline.staging([{'host': 'a', 'marks': {'start': 1.0}}]) is None


def test_series_bins_responses_by_their_end_and_keeps_failures_apart():
    responses = [[0.1, 0.2, True, 'v1', False], [0.5, 0.1, True, 'v2', False], [0.2, 2.0, True, 'v1', True],
                 [1.1, 0.05, False, None, False], [1.3, 0.3, True, 'v2', False]]
    data = timeline.series(responses, 0.0, 3.0)
    assert data['total'] == [2, 2, 1]
    assert data['failed'] == [0, 1, 0]
    assert dict(data['releases'][0]) == {'v1': 1, 'v2': 1}
    assert dict(data['releases'][2]) == {'v1': 1}
    # Latency is the fast requests': the slow one (2 s, by design) is not in p50/p99.
    assert math.isnan(data['p50'][2])
    assert round(data['p99'][1]) == 300


def test_the_picture_is_written(tmp_path):
    responses = [[100.0 + i * 0.05, 0.02, True, 'v1' if i < 300 else 'v2', i % 50 == 0] for i in range(600)]
    path = timeline.draw(tmp_path / 'deploy-timeline.png', {'responses': responses},
                         {'hosts': HOSTS}, 'test deploy')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

"""Check what ansible-runner left of a run, as AWX reads it: rc, status, the set_stats data and the job events.

The artifacts directory is PRIVATE_DATA_DIR/artifacts/IDENT. Checks, each failing with what it found:

* ``rc`` and ``status`` (successful for rc 0, failed otherwise) as --rc asks;
* one ``playbook_on_stats`` event whose ``artifact_data`` holds --key (what set_stats handed AWX);
* for ``graceful_rollout``: the report finished, ``ok`` as --ok asks, one entry per --hosts host, each with the
  result --results names (host=result,...), and for every batch a rolled host reports, a ``Report the batch`` event
  of that batch;
* for ``graceful_status``: one status per --hosts host.

Prints the artifact and the event counts as JSON on success.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Results of hosts no batch rolled: a stopped rollout leaves them, and a host found unreachable before the batches.
UNROLLED = {'not reached', 'unreachable'}


def fail(message: str) -> None:
    sys.exit('runner_artifacts: ' + message)


def read_events(artifacts: Path) -> list:
    events = []
    for path in sorted((artifacts / 'job_events').glob('*.json')):
        try:
            events.append(json.loads(path.read_text()))
        except ValueError:
            fail('%s is not JSON' % path)
    if not events:
        fail('no job event in %s/job_events' % artifacts)
    return events


def check_rollout(artifact: dict, events: list, args) -> dict:
    if artifact.get('finished') is not True:
        fail('graceful_rollout is not the finished report (the run ended before its finish play): %r' % artifact)
    if args.ok is not None and artifact.get('ok') is not (args.ok == 'true'):
        fail('graceful_rollout.ok is %r, expected %s' % (artifact.get('ok'), args.ok))
    reports = {report.get('host'): report for report in artifact.get('hosts') or []}
    if sorted(reports) != sorted(args.hosts):
        fail('graceful_rollout.hosts names %s, expected %s' % (sorted(reports), sorted(args.hosts)))
    for pair in filter(None, (args.results or '').split(',')):
        host, result = pair.split('=', 1)
        if reports[host].get('result') != result:
            fail('graceful_rollout: %s is %r, expected %r (%r)' % (host, reports[host].get('result'), result, reports[host]))
    batch_lines = [event['event_data'].get('res', {}).get('msg', '') for event in events
                   if event.get('event') == 'runner_on_ok' and event.get('event_data', {}).get('task') == 'Report the batch']
    rolled = sorted(set(report['batch'] for report in reports.values()
                        if report.get('result') not in UNROLLED and report.get('batch', '-') != '-'))
    for batch in rolled:
        if not any(str(line).startswith('batch %s: ' % batch) for line in batch_lines):
            fail('no "Report the batch" event for batch %s among %r' % (batch, batch_lines))
    return dict(batches=rolled, batch_events=len(batch_lines),
                results=dict((host, report.get('result')) for host, report in reports.items()))


def check_status(statuses: list, args) -> dict:
    hosts = sorted(status.get('host') for status in statuses)
    if hosts != sorted(args.hosts):
        fail('graceful_status names %s, expected %s' % (hosts, sorted(args.hosts)))
    return dict(releases=dict((status['host'], status.get('release')) for status in statuses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('artifacts', type=Path)
    parser.add_argument('--rc', type=int, required=True)
    parser.add_argument('--key', choices=['graceful_rollout', 'graceful_status'], required=True)
    parser.add_argument('--hosts', type=lambda text: [name for name in text.split(',') if name], required=True)
    parser.add_argument('--ok', choices=['true', 'false'])
    parser.add_argument('--results', default='')
    args = parser.parse_args()

    for name in ('rc', 'status'):
        if not (args.artifacts / name).is_file():
            fail('%s has no %s file' % (args.artifacts, name))
    rc = int((args.artifacts / 'rc').read_text().strip())
    status = (args.artifacts / 'status').read_text().strip()
    expected_status = 'successful' if args.rc == 0 else 'failed'
    if rc != args.rc or status != expected_status:
        fail('rc %d and status %r; expected rc %d and %r' % (rc, status, args.rc, expected_status))
    events = read_events(args.artifacts)
    stats = [event for event in events if event.get('event') == 'playbook_on_stats']
    if len(stats) != 1:
        fail('%d playbook_on_stats events, expected 1' % len(stats))
    artifact_data = stats[0].get('event_data', {}).get('artifact_data') or {}
    if args.key not in artifact_data:
        fail('artifact_data has no %s: %r' % (args.key, sorted(artifact_data)))
    checked = (check_rollout if args.key == 'graceful_rollout' else check_status)(artifact_data[args.key], *(
        (events, args) if args.key == 'graceful_rollout' else (args,)))
    print(json.dumps(dict(rc=rc, status=status, events=len(events), **checked), sort_keys=True))


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# The decisions the rollout makes, one function each, so that the role's YAML reads as a checklist and unit tests
# cover them in milliseconds. Each filter is documented in a file of its name beside this one.

import json

from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.wsgi.plugins.module_utils import _journal, _lock

REPORT_FORMAT = '%-14s %-5s %-11s %-28s %-8s %-7s %-13s %s'
REPORT_COLUMNS = ('host', 'batch', 'result', 'release', 'reload', 'seconds', 'health', 'step timings / cause')
STATUS_FORMAT = '%-16s %-24s %-24s %-22s %-10s %-8s %-8s %s'
STATUS_COLUMNS = ('host', 'release', 'previous', 'switched at', 'service', 'master', 'workers', 'lb')
STEP_ORDER = ('start', 'prepare', 'drain', 'switch', 'reload', 'verify', 'enable')
NOT_REACHED_CAUSE = 'the host failed before its batch (see above)'


def lock_refusal(result, action, app, lock_path, lock_host, now=None):
    """The refusal of a run that did not get the lock, naming the holder and what its journal shows."""
    holder = result.get('holder') or {}
    if not holder.get('run_id'):
        return '%s of %s refused: %s' % (action, app, result.get('msg') or 'the lock could not be taken')
    journal = _journal.summary(result.get('journal') or [], holder.get('acquired_at'), now)
    return (
        '%s of %s refused: another run holds the lock %s on %s: %s of release %s by %s on controller %s, started %s '
        '(run %s); %s. If that run died, graceful_break_lock=true takes the lock over and first reconciles what it '
        'left (every host it left drained or switched is proven and enabled, or switched back).' % (
            action, app, lock_path, lock_host,
            holder.get('action', 'a run'), holder.get('release', '?'), holder.get('user', '?'),
            holder.get('controller', '?'), holder.get('started') or holder.get('acquired_at', '?'),
            holder['run_id'], journal))


def lock_record(text, now=None):
    """{holder, journal, summary} from the text of a lock file; holder is empty when there is no lock."""
    if not text:
        return dict(holder={}, journal=[], summary='')
    lock = _lock.parse('lock', text.encode('utf-8'))
    if lock.corrupt:
        return dict(holder={'corrupt': lock.problem}, journal=[], summary='the lock file is corrupt (%s)' % lock.problem)
    return dict(holder=lock.holder(), journal=lock.journal,
                summary=_journal.summary(lock.journal, lock.content.get('acquired_at'), now))


def lock_line(holder, summary):
    """The status's line about the lock: free, or who holds it for what and what its journal shows."""
    if not holder:
        return 'lock: free'
    return 'lock: held by run %s - %s of %s by %s on %s since %s; %s' % (
        holder.get('run_id', '?'), holder.get('action', '?'), holder.get('release', '?'), holder.get('user', '?'),
        holder.get('controller', '?'), holder.get('started', holder.get('acquired_at', '?')), summary)


def lb_states(results, hosts):
    """{host: state} from the lb_state results of every load balancer host (a loop's results).

    One word when every load balancer agrees (enabled, drained, missing); else each one's view, and ``unknown``
    (with why) for a load balancer that could not be read.
    """
    views = []
    for result in results or []:
        name = result.get('rollout_lb_host') or result.get('item') or '?'
        if result.get('failed') or result.get('unreachable') or 'servers' not in result:
            views.append((name, None, result.get('msg') or 'not read'))
        else:
            views.append((name, result['servers'], ''))
    states = {}
    for host in hosts:
        seen = []
        for name, servers, why in views:
            state = 'unknown' if servers is None else servers.get(host, {}).get('state', 'missing')
            seen.append((name, state))
        words = sorted(set(state for _name, state in seen))
        if not seen:
            states[host] = '-'
        elif len(words) == 1:
            states[host] = words[0]
        else:
            states[host] = ','.join('%s@%s' % (state, name) for name, state in seen)
    return states


def switch_record(text):
    """The entries of a release's record of switches (switches.jsonl), oldest first; blank lines are skipped."""
    entries = []
    for number, line in enumerate((text or '').splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise AnsibleFilterError('switches.jsonl line %d is not JSON' % number)
        if not isinstance(entry, dict):
            raise AnsibleFilterError('switches.jsonl line %d is not a JSON object' % number)
        entries.append(entry)
    return entries


def previous_release(record, live_release):
    """The release current pointed to before the live one was deployed: what a rollback goes to, '' when none.

    Only a deploy counts (an entry without a reason, written before reasons were recorded, is one): after an undo or a
    rollback put the live release back, "previous" is still the release the deploy of it replaced, so a second
    rollback goes one release further back.
    """
    for entry in reversed(record or []):
        if entry.get('release') == live_release and (entry.get('reason') or 'deploy') == 'deploy':
            return entry.get('from') or ''
    return ''


def rollout_target(action, release, live_release, record, rollback_to=''):
    """The release a host goes to: deploy, the run's release; reload, the live one; rollback, graceful_rollback_to or
    the previous release. '' when there is none."""
    if action == 'deploy':
        return release
    if action == 'reload':
        return live_release
    return rollback_to or previous_release(record, live_release)


def batch_position(hosts, batch, batch_size):
    """'N/M': the batch holding the hosts ``batch`` among the batches of ``batch_size`` that ``hosts`` make."""
    size = int(batch_size)
    count = -(-len(hosts) // size)
    return '%d/%d' % (list(hosts).index(batch[0]) // size + 1, count)


def failures_before(host_vars, failed_results):
    """How many hosts have a report with a failed result (the hostvars of the play's hosts)."""
    return len([1 for values in host_vars
                if (values.get('rollout_report') or {}).get('result') in failed_results])


def stop_cause(failed, max_fail_percentage, host_count):
    """Why the rollout leaves the next hosts untouched (failures beyond graceful_max_fail_percentage), or ''."""
    if int(failed) * 100 > int(max_fail_percentage) * int(host_count):
        return 'stopped after %d failed host(s) (graceful_max_fail_percentage %d)' % (int(failed), int(max_fail_percentage))
    return ''


def step_timings(marks, now):
    """{seconds, timings}: the host's time from its start to ``now``, and each step's time, from the marks set at the
    end of each step (epoch seconds); a host that failed counts its failed step and its undo in ``seconds``."""
    marked = [name for name in STEP_ORDER if name in marks]
    timings = {}
    for before, name in zip(marked, marked[1:]):
        timings[name] = round(float(marks[name]) - float(marks[before]), 1)
    return dict(seconds=round(float(now) - float(marks['start']), 1), timings=timings)


def _timings_text(timings):
    return ', '.join('%s %s' % (name, value) for name, value in (timings or {}).items())


def batch_summary(reports, batch):
    """One line for a batch: each host's result, releases, time and step timings, and the step it failed at."""
    parts = []
    for report in reports:
        failed_at = ' (failed at %s)' % report['step'] if report.get('step') else ''
        parts.append('%s %s %s -> %s in %s s (%s)%s' % (
            report['host'], report['result'], report.get('old') or '-', report.get('new') or '-',
            report.get('seconds', '?'), _timings_text(report.get('timings')), failed_at))
    return 'batch %s: %s' % (batch, '; '.join(parts))


def host_reports(host_vars):
    """Every app host's report, in inventory order: the hosts with one, then a 'not reached' one for each host that
    failed before its batch (a failure outside the rollout's rescue)."""
    reached = [values['rollout_report'] for values in host_vars if values.get('rollout_report')]
    missed = [dict(host=values['inventory_hostname'], result='not reached', old='', new='', batch='-',
                   cause=NOT_REACHED_CAUSE) for values in host_vars if not values.get('rollout_report')]
    return reached + missed


def report_table(reports):
    """The run's table: a header, a rule, and a line per host; the last column is the step timings, or for a host
    that failed, the step, the cause and what was undone."""
    lines = [REPORT_FORMAT % REPORT_COLUMNS, '-' * 100]
    for report in reports:
        if 'step' in report and 'cause' in report:
            last = '%s: %s | undone: %s' % (report['step'], report['cause'], report.get('undone', ''))
        else:
            last = report['cause'] if 'cause' in report else _timings_text(report.get('timings'))
        if report.get('commit'):
            last = 'commit %s; %s' % (report['commit'][:12], last)
        lines.append(REPORT_FORMAT % (
            report['host'], report['batch'], report['result'],
            '%s -> %s' % (report.get('old') or '-', report.get('new') or '-'), report.get('reload_mode', '-'),
            report.get('reload_seconds', '-'), report.get('health', '-'), last))
    return lines


def status_table(statuses, hosts, lb_view, lock):
    """The status table: a header, a line per app host (unreachable when it gave no status), and the lock's line
    (``lock`` is what lock_record read)."""
    by_host = dict((status['host'], status) for status in statuses)
    lines = [STATUS_FORMAT % STATUS_COLUMNS]
    for host in hosts:
        status = by_host.get(host) or dict(host=host, release='unreachable', previous='-', switched='-', service='-',
                                           master='-', workers='-')
        release = status['release']
        if status.get('commit') not in (None, '', '-'):
            release = '%s @%s' % (release, status['commit'][:7])
        lines.append(STATUS_FORMAT % (status['host'], release, status['previous'], status['switched'],
                                      status['service'], status['master'], status['workers'], lb_view.get(host, '-')))
    return lines + [lock_line(lock.get('holder'), lock.get('summary', ''))]


def rolls_back(switched, rollback_on_failure, live_release):
    """Whether the undo of a failed host switches it back: current moved, graceful_rollback_on_failure, and the host
    served a release before (a new host has none to go back to)."""
    return bool(switched and rollback_on_failure and live_release)


def undo_outcome(switched, rollback_on_failure, live_release, target, drained, undone, undo_failure):
    """{result, undone, journal}: how a failed host is reported after its undo, and what the run journal keeps of it
    (the release it is left on, whether it stays drained, whether it is settled)."""
    back = rolls_back(switched, rollback_on_failure, live_release)
    if undone:
        steps = list(undone)
    elif not switched:
        steps = ['nothing to undo: current was not switched' + ('' if drained else ' and the host was not drained')]
    elif not rollback_on_failure:
        steps = ['nothing undone (graceful_rollback_on_failure is false): current stays on %s%s'
                 % (target, ', drained' if drained else '')]
    else:
        steps = ['current stays on %s' % target]
    on_live = not switched or (back and not undo_failure)
    return dict(
        result='rolled back' if back and not undo_failure else 'failed',
        undone='; '.join(([undo_failure] if undo_failure else []) + steps),
        journal=dict(release=live_release if on_live else target, drained=bool(drained and undo_failure),
                     settled=bool(not undo_failure and (not switched or back))))


def reconcile_what(item):
    """What an earlier run left on a host (an item of the reconcile plan), in words; '' for none."""
    if not item:
        return ''
    lost = ' (unreachable at %s)' % item['lost_at'] if item.get('lost_at') else ''
    return 'left %s at %s%s by run %s' % ('drained' if item.get('drained') else 'in service',
                                          item.get('step') or 'the end', lost, item.get('run'))


def reconciled_lines(reconciled):
    """'host: result: left: done' for each host an earlier run left unsettled and this run reconciled (or not)."""
    return [': '.join((item['host'], item['result'], item['left'], item['done'])) for item in reconciled]


def failure_message(problems, action, app, release, unlock_failure=''):
    """Why the run failed: each host that did not get the release (its result, step, cause and what was undone),
    and a lock that could not be released."""
    words = ['%s of %s%s failed.' % (action, app, ' release %s' % release if action == 'deploy' else '')]
    for report in problems:
        undone = report.get('undone') or ''
        words.append('%s: %s%s: %s%s' % (report['host'], report['result'],
                                         ' at %s' % report['step'] if 'step' in report else '', report.get('cause', ''),
                                         ' Undone: %s.' % undone if undone else ''))
    if unlock_failure:
        words.append(unlock_failure)
    return ' '.join(words)


def run_notices(run):
    """What the run's report says it could not vouch for: a deploy whose requirements carry no hashes was built
    trusting the package index for every wheel."""
    if (run or {}).get('action') != 'deploy' or (run or {}).get('hashed', True):
        return []
    return ['%s carries no hashes: the wheelhouse was built without --require-hashes, trusting the package index for '
            'every wheel (pip-compile --generate-hashes writes them)' % (run.get('requirements') or 'requirements.txt')]


def failed_step(step, failed_result=None):
    """The step a host failed at, from the step the rollout was in and the failed task's result. The health gate and
    the release proof are one task (release_proof with its health option): when its result says the gate passed,
    the proof failed."""
    health = (failed_result or {}).get('health') if isinstance(failed_result, dict) else None
    if step == 'health' and isinstance(health, dict) and health.get('passed') is True:
        return 'proof'
    return step


class FilterModule:
    def filters(self):
        return {
            'lock_refusal': lock_refusal, 'lock_record': lock_record, 'lb_states': lb_states,
            'switch_record': switch_record, 'previous_release': previous_release, 'rollout_target': rollout_target,
            'batch_position': batch_position, 'failures_before': failures_before, 'stop_cause': stop_cause,
            'step_timings': step_timings, 'batch_summary': batch_summary, 'host_reports': host_reports,
            'report_table': report_table, 'status_table': status_table, 'rolls_back': rolls_back,
            'undo_outcome': undo_outcome, 'reconcile_what': reconcile_what, 'reconciled_lines': reconciled_lines,
            'failure_message': failure_message, 'run_notices': run_notices, 'failed_step': failed_step,
        }

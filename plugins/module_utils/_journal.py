# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The run journal: what a rollout was about to do to each host, and how it ended, kept in its lock record.

Private to the collection: the interface may change without notice.

A run appends one entry before each step that changes the fleet (``drain``, ``switch``, ``reload``, ``enable``)
and one when a host is settled (``done``, ``failed``, ``reconciled``) or lost (``unreachable``). A ``drain`` entry
with ``release`` and ``reload`` announces the switch to that release and the server's reload that follow it, as a
``switch`` entry with ``reload`` true announces the reload; a rollout writes no ``enable`` entry for a host it
drained: each entry is a round trip to the lock host on the host's critical path, and none would change what the
next run does (it reads where current points, proves that release and enables the host). A run that dies
leaves its journal in its lock; one that ends with hosts it could not settle leaves them in the pending record
next to the lock. The next run folds those entries per host (:func:`host_states`) and reconciles every host
that is not settled (:func:`reconcile_plan`) before its own job.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import json
import time

# Steps announced before they change the fleet, in rollout order.
STEPS = ('drain', 'switch', 'reload', 'enable')
# Entries that end a host's part of a run.
SETTLED = ('done', 'reconciled')
OUTCOMES = SETTLED + ('failed', 'unreachable')
KINDS = STEPS + OUTCOMES
MAX_ENTRY_BYTES = 3072


class JournalError(ValueError):
    """An entry that cannot be recorded; the message names the field."""


def check_entry(entry):
    """The entry as recorded: host and step required, step one of KINDS, one line of JSON under the size bound."""
    if not isinstance(entry, dict):
        raise JournalError('journal must be a dict (got %s)' % type(entry).__name__)
    host, step = entry.get('host'), entry.get('step')
    if not isinstance(host, str) or not host:
        raise JournalError('journal.host must name the host the entry is about')
    if step not in KINDS:
        raise JournalError('journal.step must be one of %s (got %r)' % (', '.join(KINDS), step))
    line = entry_line(entry)
    if len(line) > MAX_ENTRY_BYTES:
        raise JournalError('journal entry for %s is %d bytes, more than %d' % (host, len(line), MAX_ENTRY_BYTES))
    return entry


def entry_line(entry):
    """One line of JSON: written with a single O_APPEND write, so concurrent hosts never interleave."""
    return (json.dumps(entry, sort_keys=True, separators=(',', ':')) + '\n').encode('utf-8')


def parse_lines(text):
    """The entries of journal lines; a line that is not a JSON object (a torn last write) is skipped."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get('host') and entry.get('step') in KINDS:
            entries.append(entry)
    return entries


def _truthy(value):
    """A flag as recorded: a bool, or the text a template made of one."""
    if isinstance(value, str):
        return value.strip().lower() in ('true', 'yes', '1')
    return bool(value)


def _new_state(host):
    return dict(host=host, drained=False, step=None, release='', proven='', lost_at='', last_at='', run='',
                reload_announced=False)


def host_states(entries):
    """{host: state} folded from the entries in order.

    state: ``drained`` (out of the load balancer, or may be), ``step`` (the step announced and never settled, or
    None), ``release`` (what current may point to: the switch's target once announced), ``proven`` (the last
    release the host was proven to serve), ``lost_at`` (the step at which it became unreachable), ``last_at``, ``run``,
    ``reload_announced`` (the last step announced a reload: a ``reload`` entry, or a ``switch`` with ``reload``).
    """
    states = {}
    for entry in entries:
        state = states.setdefault(entry['host'], _new_state(entry['host']))
        kind = entry['step']
        state['last_at'] = entry.get('at', state['last_at'])
        state['run'] = entry.get('run', state['run'])
        if kind in STEPS:
            state['step'] = kind
            state['reload_announced'] = kind == 'reload' or _truthy(entry.get('reload', False))
            if kind == 'drain':
                state['drained'] = True
                state['proven'] = state['proven'] or entry.get('from', '')
                state['release'] = entry.get('release') or state['release'] or entry.get('from', '')
            elif kind == 'switch':
                state['proven'] = state['proven'] or entry.get('from', '')
                state['release'] = entry.get('release', state['release'])
            elif kind == 'reload':
                state['release'] = entry.get('release', state['release'])
        elif kind in SETTLED:
            state.update(drained=False, step=None, lost_at='', release=entry.get('release', state['release']))
            state['proven'] = state['release']
        elif kind == 'failed':
            # The undo ran: what it left is in the entry (settled when it put the host back in service).
            state['drained'] = _truthy(entry.get('drained', state['drained']))
            state['release'] = entry.get('release', state['release'])
            if _truthy(entry.get('settled')):
                state.update(step=None, lost_at='', proven=state['release'])
        elif kind == 'unreachable':
            state['lost_at'] = entry.get('at_step') or state['step'] or 'connect'
    return states


def is_settled(state):
    return not state['drained'] and state['step'] is None


def pending(entries):
    """The states of the hosts an interrupted run left unsettled, in the order the entries name them."""
    return [state for state in host_states(entries).values() if not is_settled(state)]


def reconcile_plan(entries):
    """What the next run does on each unsettled host, in order.

    Every host is proven on the release current points to and enabled when it passes. ``fallback`` is the
    release to switch back to when it fails (its last proven one; empty when none is known, then the host stays
    out). ``upgrade_pending`` marks a host whose reload was announced and never settled: a gunicorn upgrade may
    have left two masters (a ``reload`` entry, or a ``switch`` that announced the reload after it).
    """
    plan = []
    for state in pending(entries):
        plan.append(dict(
            host=state['host'],
            drained=state['drained'],
            step=state['step'] or '',
            lost_at=state['lost_at'],
            release=state['release'],
            fallback=state['proven'] if state['proven'] != state['release'] else '',
            upgrade_pending=state['reload_announced'],
            run=state['run'],
        ))
    return plan


def last_open_step(entries):
    """(entry, finished): the journal's last entry, and whether the step it announced was settled after it."""
    if not entries:
        return None, True
    last = entries[-1]
    return last, last['step'] not in STEPS


def parse_utc(text):
    """Epoch seconds of an ISO 8601 UTC time such as 2026-11-26T14:08:00Z; None when it is not one."""
    try:
        return calendar.timegm(time.strptime(text, '%Y-%m-%dT%H:%M:%SZ'))
    except (TypeError, ValueError):
        return None


def age_text(seconds):
    seconds = max(0, int(seconds))
    if seconds < 120:
        return '%d s' % seconds
    if seconds < 7200:
        return '%d min' % (seconds // 60)
    if seconds < 172800:
        return '%.1f h' % (seconds / 3600.0)
    return '%d days' % (seconds // 86400)


def summary(entries, acquired_at=None, now=None):
    """One sentence for an operator: the last step and whether it finished, the hosts left drained or switched,
    and how old the lock is."""
    parts = []
    last, finished = last_open_step(entries)
    if last is None:
        parts.append('its journal is empty (it had not touched a host)')
    else:
        what = '%s of %s' % (last['step'], last['host'])
        if last.get('release') and last['step'] in ('switch', 'reload'):
            what += ' to %s' % last['release']
        parts.append('its last journal step, %s at %s, %s' % (
            what, last.get('at', '?'), 'finished' if finished else 'did not finish'))
    states = host_states(entries).values()
    drained = [state['host'] for state in states if state['drained']]
    switched = [state['host'] for state in states if state['step'] in ('switch', 'reload')
                or (state['step'] in ('drain', 'enable') and state['release'] != state['proven'])]
    if drained:
        parts.append('it left drained: %s' % ', '.join(drained))
    if switched:
        parts.append('it left switched and not proven: %s' % ', '.join(switched))
    if not drained and not switched and last is not None:
        parts.append('it left no host drained or switched')
    started = parse_utc(acquired_at) if acquired_at else None
    if started is not None:
        parts.append('the lock is %s old' % age_text((time.time() if now is None else now) - started))
    return '; '.join(parts)

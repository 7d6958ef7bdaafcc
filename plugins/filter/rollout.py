# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Documented in lock_refusal.yml and lock_record.yml, one file per filter.

from ansible_collections.graceful.wsgi.plugins.module_utils import _journal, _lock


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


class FilterModule:
    def filters(self):
        return {'lock_refusal': lock_refusal, 'lock_record': lock_record, 'lb_states': lb_states}

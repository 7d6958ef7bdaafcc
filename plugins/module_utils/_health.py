# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The health gate: N consecutive good answers from one URL before a deadline.

Private to the collection: the interface may change without notice.
One good answer right after a reload proves little (an old worker may have served
it, or the new one may fail on its second request); a run of them does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import socket
import time
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError, open_url

from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline, Overdue, WaitTimeout, call_within, poll

# A health endpoint answers a few bytes; more than this is read only so that body_regex sees a sensible part.
READ_LIMIT = 65536
RETURNED_BODY_CHARS = 512
REASON_BODY_CHARS = 80
# A request started at the deadline still gets this long, so the last attempt can complete a run.
MIN_REQUEST_SECONDS = 0.25


class GateError(Exception):
    """Bad input; the message names the option."""


class FetchFailed(Exception):
    """No HTTP answer: connection refused or reset, timeout, TLS failure."""


class GateFailed(Exception):
    """The deadline passed before enough consecutive successes; ``state`` says how far it got."""

    def __init__(self, message, state, elapsed):
        super(GateFailed, self).__init__(message)
        self.state = state
        self.elapsed = elapsed


def check_url(url):
    parsed = urlparse(url)
    if parsed.scheme not in ('http', 'https') or not parsed.netloc:
        raise GateError('url=%s: not an http:// or https:// URL with a host' % url)


def compile_pattern(body_regex):
    if body_regex is None:
        return None
    try:
        return re.compile(body_regex)
    except re.error as exc:
        raise GateError('body_regex=%r: not a valid regular expression: %s' % (body_regex, exc))


def check_numbers(successes, timeout, interval, request_timeout, status_codes):
    if successes < 1:
        raise GateError('successes=%d: must be at least 1' % successes)
    if timeout <= 0:
        raise GateError('timeout=%s: must be positive' % timeout)
    if interval < 0:
        raise GateError('interval=%s: must not be negative' % interval)
    if request_timeout <= 0:
        raise GateError('request_timeout=%s: must be positive' % request_timeout)
    if not status_codes:
        raise GateError('status_code: must list at least one status')


def snippet(body, limit):
    text = ' '.join((body or '').split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def judge(status, body, status_codes, pattern):
    """(ok, reason) for one HTTP answer; reason is None when ok."""
    if status not in status_codes:
        return False, 'HTTP %d %r' % (status, snippet(body, REASON_BODY_CHARS))
    if pattern is not None and not pattern.search(body or ''):
        return False, 'HTTP %d, body does not match body_regex %r: %r' % (
            status, pattern.pattern, snippet(body, REASON_BODY_CHARS))
    return True, None


class GateState:
    """Counts attempts, the current and the best run of consecutive successes, and the last failure."""

    def __init__(self, needed):
        self.needed = needed
        self.attempts = 0
        self.consecutive = 0
        self.best = 0
        self.failures = 0
        self.last_failure = None
        self.status = None
        self.body = None

    def record(self, ok, status=None, body=None, reason=None):
        self.attempts += 1
        self.status = status
        self.body = body
        if ok:
            self.consecutive += 1
            self.best = max(self.best, self.consecutive)
        else:
            self.consecutive = 0
            self.failures += 1
            self.last_failure = reason
        return self.passed()

    def passed(self):
        return self.consecutive >= self.needed

    def summary(self):
        return dict(attempts=self.attempts, consecutive=self.consecutive, failures=self.failures,
                    last_failure=self.last_failure, status=self.status,
                    body=None if self.body is None else self.body[:RETURNED_BODY_CHARS])


def _decode(data):
    return data.decode('utf-8', 'replace')


def http_get(url, headers, validate_certs, timeout, opener=open_url):
    """(status, body) of one GET; 4xx and 5xx are answers too. FetchFailed when there is no complete answer within
    ``timeout`` seconds, connect, headers and body together (urllib's own timeout bounds each recv() only)."""
    try:
        return call_within(timeout, _http_get, url, headers, validate_certs, timeout, opener)
    except Overdue:
        raise FetchFailed('no complete answer within %gs' % timeout)


def _http_get(url, headers, validate_certs, timeout, opener):
    try:
        response = opener(url, method='GET', headers=headers, timeout=timeout, validate_certs=validate_certs)
    except HTTPError as exc:
        try:
            body = exc.read(READ_LIMIT)
        except (HTTPException, OSError, AttributeError):
            # Some HTTPErrors carry no readable body (urllib builds them without a file for some redirects).
            body = b''
        return exc.code, _decode(body or b'')
    except URLError as exc:
        raise FetchFailed(_no_answer(exc.reason, timeout))
    except (HTTPException, OSError, UrlsConnectionError, ValueError) as exc:
        raise FetchFailed(_no_answer(exc, timeout))
    try:
        return response.getcode(), _decode(response.read(READ_LIMIT))
    except (HTTPException, OSError) as exc:
        raise FetchFailed(_no_answer(exc, timeout))
    finally:
        response.close()


def _no_answer(reason, timeout):
    if isinstance(reason, socket.timeout) or 'timed out' in str(reason):
        return 'no answer within %gs' % timeout
    return 'no answer: %s' % (reason or type(reason).__name__)


def attempt(fetch, state, status_codes, pattern, request_timeout):
    """One request, judged and recorded; returns whether the gate has passed."""
    try:
        status, body = fetch(request_timeout)
    except FetchFailed as exc:
        return state.record(False, reason=str(exc))
    ok, reason = judge(status, body, status_codes, pattern)
    return state.record(ok, status, body, reason)


def run_gate(url, fetch, successes, timeout, interval, request_timeout, status_codes, pattern,
             clock=time.monotonic, sleep=time.sleep):
    """Attempt until ``successes`` consecutive good answers; returns (state, elapsed) or raises GateFailed.

    ``fetch(timeout)`` returns (status, body) or raises FetchFailed.
    """
    state = GateState(successes)
    deadline = Deadline(timeout, clock)

    def probe():
        # A request never runs (much) past the deadline: the gate's timeout is the task's budget.
        budget = min(request_timeout, max(deadline.remaining(), MIN_REQUEST_SECONDS))
        return state if attempt(fetch, state, status_codes, pattern, budget) else None

    def describe():
        return ('health gate failed: %s did not answer %d consecutive successes within %g s (best run %d, %d '
                'attempts); last failure: %s'
                % (url, successes, timeout, state.best, state.attempts, state.last_failure))

    try:
        poll(probe, deadline, interval, sleep=sleep, describe=describe)
    except WaitTimeout as exc:
        raise GateFailed(str(exc), state, deadline.elapsed())
    return state, deadline.elapsed()


# The options of a health gate: the module graceful.wsgi.health_gate's, and the suboptions of release_proof's
# health, which runs the gate and the proof in one task.
ARGUMENT_SPEC = dict(
    url=dict(type='str', required=True),
    successes=dict(type='int', default=3),
    timeout=dict(type='float', default=60),
    interval=dict(type='float', default=0.5),
    request_timeout=dict(type='float', default=5),
    status_code=dict(type='list', elements='int', default=[200]),
    body_regex=dict(type='str'),
    headers=dict(type='dict', default={}),
    validate_certs=dict(type='bool', default=True),
)


def gate(params, option_prefix=''):
    """Runs the gate the options ``params`` describe: (passed, result, msg).

    ``result`` has the module's return values (url, attempts, consecutive, elapsed, status, body, failures,
    last_failure); ``msg`` says why it failed, or what passed. Bad options fail at once, before any request, with
    their name after ``option_prefix`` (``health.`` where they are a module's suboptions).
    """
    url = params['url']
    result = dict(url=url, attempts=0, consecutive=0, elapsed=0.0, status=None, body=None, failures=0,
                  last_failure=None)
    try:
        check_url(url)
        check_numbers(params['successes'], params['timeout'], params['interval'], params['request_timeout'],
                      params['status_code'])
        pattern = compile_pattern(params['body_regex'])
    except GateError as exc:
        return False, result, option_prefix + str(exc)
    headers = dict((str(name), str(value)) for name, value in params['headers'].items())

    def fetch(timeout):
        return http_get(url, headers, params['validate_certs'], timeout)

    try:
        state, elapsed = run_gate(url, fetch, params['successes'], params['timeout'], params['interval'],
                                  params['request_timeout'], params['status_code'], pattern)
    except GateFailed as exc:
        result.update(exc.state.summary(), elapsed=round(exc.elapsed, 3))
        return False, result, str(exc)
    result.update(state.summary(), elapsed=round(elapsed, 3))
    return True, result, 'health gate passed: %s answered %d consecutive successes after %d attempts in %.2f s' % (
        url, state.consecutive, state.attempts, elapsed)

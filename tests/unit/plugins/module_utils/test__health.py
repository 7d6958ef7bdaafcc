# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import re
import socket
import threading
import time
from urllib.error import HTTPError, URLError

import pytest

from ansible.module_utils.urls import SSLValidationError

from ansible_collections.graceful.wsgi.plugins.module_utils import _health
from ansible_collections.graceful.wsgi.tests.unit.plugins.module_utils.clock import FakeClock

URL = 'http://127.0.0.1:8000/healthz'


class Script:
    """A fetch that answers from a list, one entry per request: (status, body), or the reason for no answer."""

    def __init__(self, clock, answers, seconds_per_request=0.1):
        self.clock = clock
        self.answers = list(answers)
        self.seconds = seconds_per_request
        self.timeouts = []

    def __call__(self, timeout):
        self.timeouts.append(timeout)
        self.clock.now += self.seconds
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, str):
            raise _health.FetchFailed(answer)
        return answer


def gate(clock, answers, successes=3, timeout=10.0, interval=0.5, request_timeout=5.0, status_codes=(200,),
         pattern=None):
    fetch = Script(clock, answers)
    result = _health.run_gate(URL, fetch, successes, timeout, interval, request_timeout, list(status_codes), pattern,
                              clock=clock, sleep=clock.sleep)
    return result, fetch


@pytest.mark.parametrize('status, body, codes, pattern, ok, reason', [
    (200, 'ok', [200], None, True, None),
    (204, '', [200, 204], None, True, None),
    (503, 'unhealthy: release v4', [200], None, False, "HTTP 503 'unhealthy: release v4'"),
    (200, 'ok release v4', [200], r'release v5\b', False,
     "HTTP 200, body does not match body_regex 'release v5\\\\b': 'ok release v4'"),
    (200, 'ok release v5\n', [200], r'release v5\b', True, None),
    (301, '', [200], None, False, "HTTP 301 ''"),
])
def test_judge(status, body, codes, pattern, ok, reason):
    assert _health.judge(status, body, codes, re.compile(pattern) if pattern else None) == (ok, reason)


def test_judge_shortens_long_bodies_on_one_line():
    ok, reason = _health.judge(500, 'Traceback\n' + 'x' * 500, [200], None)
    assert not ok and reason.startswith("HTTP 500 'Traceback xxx") and reason.endswith("...'")
    assert len(reason) < 100


def test_gate_state_counts_consecutive_and_resets_on_failure():
    state = _health.GateState(3)
    assert not state.record(True, 200, 'ok')
    assert not state.record(True, 200, 'ok')
    assert not state.record(False, 503, 'down', "HTTP 503 'down'")
    assert (state.consecutive, state.best, state.failures) == (0, 2, 1)
    assert not state.record(True, 200, 'ok')
    assert not state.record(True, 200, 'ok')
    assert state.record(True, 200, 'ok')
    summary = state.summary()
    assert summary == dict(attempts=6, consecutive=3, failures=1, last_failure="HTTP 503 'down'", status=200,
                           body='ok')
    assert state.best == 3


def test_gate_state_summary_truncates_the_body_and_has_no_status_without_an_answer():
    state = _health.GateState(1)
    state.record(False, 200, 'y' * 2000, 'no match')
    assert len(state.summary()['body']) == 512
    state.record(False, reason='no answer: refused')
    assert state.summary()['status'] is None and state.summary()['body'] is None


def test_run_gate_passes_after_failures_then_enough_successes():
    clock = FakeClock()
    answers = [(503, 'starting')] * 3 + [(200, 'ok')]
    (state, elapsed), fetch = gate(clock, answers)
    assert (state.attempts, state.consecutive, state.failures) == (6, 3, 3)
    assert state.last_failure == "HTTP 503 'starting'"
    # 6 requests of 0.1 s and 5 pauses of 0.5 s
    assert elapsed == pytest.approx(3.1)


def test_run_gate_a_single_success_suffices_when_asked():
    clock = FakeClock()
    (state, elapsed), fetch = gate(clock, [(200, 'ok')], successes=1)
    assert state.attempts == 1 and elapsed == pytest.approx(0.1)


def test_run_gate_flapping_never_passes_and_reports_best_run():
    clock = FakeClock()
    answers = [(200, 'ok'), (200, 'ok'), (503, 'flap')] * 20
    with pytest.raises(_health.GateFailed) as caught:
        gate(clock, answers, timeout=5.0)
    failure = caught.value
    assert str(failure).startswith('health gate failed: %s did not answer 3 consecutive successes within 5 s '
                                   '(best run 2, ' % URL)
    assert str(failure).endswith("attempts); last failure: HTTP 503 'flap'")
    # 0.6 s per attempt; the 10th is the last look at the deadline, and its request ends 0.1 s later
    assert failure.state.best == 2 and failure.state.attempts == 10
    assert '(best run 2, 10 attempts)' in str(failure)
    assert failure.elapsed == pytest.approx(5.1)


def test_run_gate_connection_errors_count_as_failures_and_requests_stop_at_the_deadline():
    clock = FakeClock()
    with pytest.raises(_health.GateFailed) as caught:
        gate(clock, ['no answer: [Errno 111] Connection refused'], timeout=2.0, interval=0.5,
             request_timeout=5.0)
    assert caught.value.state.status is None
    assert str(caught.value).endswith('last failure: no answer: [Errno 111] Connection refused')


def test_run_gate_caps_request_timeout_by_what_is_left():
    clock = FakeClock()
    fetch = Script(clock, [(503, 'down')])
    with pytest.raises(_health.GateFailed):
        _health.run_gate(URL, fetch, 3, 2.0, 0.9, 5.0, [200], None, clock=clock, sleep=clock.sleep)
    assert fetch.timeouts[0] == pytest.approx(2.0)
    assert all(timeout <= 2.0 for timeout in fetch.timeouts)
    # The last look, at the deadline, still gets a usable request timeout.
    assert fetch.timeouts[-1] == _health.MIN_REQUEST_SECONDS


def test_run_gate_body_regex_must_match_every_success():
    clock = FakeClock()
    answers = [(200, 'ok release v4')] * 2 + [(200, 'ok release v5')]
    (state, elapsed), fetch = gate(clock, answers, pattern=re.compile(r'release v5\b'))
    assert (state.attempts, state.failures) == (5, 2)
    assert 'does not match body_regex' in state.last_failure


@pytest.mark.parametrize('url', ['127.0.0.1:8000/healthz', 'ftp://host/x', 'http:///path', ''])
def test_check_url_rejects_what_is_not_http(url):
    with pytest.raises(_health.GateError, match='^url=%s: not an http:// or https:// URL with a host$' % re.escape(url)):
        _health.check_url(url)


def test_check_url_accepts_http_and_https():
    _health.check_url('http://127.0.0.1:8000/healthz')
    _health.check_url('https://app.example.com/')


@pytest.mark.parametrize('args, message', [
    ((0, 60, 0.5, 5, [200]), 'successes=0: must be at least 1'),
    ((3, 0, 0.5, 5, [200]), 'timeout=0: must be positive'),
    ((3, -1.5, 0.5, 5, [200]), 'timeout=-1.5: must be positive'),
    ((3, 60, -0.1, 5, [200]), 'interval=-0.1: must not be negative'),
    ((3, 60, 0.5, 0, [200]), 'request_timeout=0: must be positive'),
    ((3, 60, 0.5, 5, []), 'status_code: must list at least one status'),
])
def test_check_numbers(args, message):
    with pytest.raises(_health.GateError) as caught:
        _health.check_numbers(*args)
    assert str(caught.value) == message


def test_compile_pattern():
    assert _health.compile_pattern(None) is None
    assert _health.compile_pattern('release v[0-9]+').search('release v12')
    with pytest.raises(_health.GateError, match=r"^body_regex='release \(v5': not a valid regular expression"):
        _health.compile_pattern('release (v5')


class FakeResponse:
    def __init__(self, status, body):
        self.status = status
        self.stream = io.BytesIO(body)
        self.closed = False

    def getcode(self):
        return self.status

    def read(self, limit=-1):
        return self.stream.read(limit)

    def close(self):
        self.closed = True


def test_http_get_returns_status_and_body_and_passes_options():
    calls = []
    response = FakeResponse(200, b'ok release v5')

    def opener(url, **kwargs):
        calls.append((url, kwargs))
        return response

    assert _health.http_get(URL, {'Host': 'app'}, False, 1.5, opener=opener) == (200, 'ok release v5')
    assert calls == [(URL, dict(method='GET', headers={'Host': 'app'}, timeout=1.5, validate_certs=False))]
    assert response.closed


def test_http_get_reads_the_body_of_an_error_status():
    def opener(url, **kwargs):
        raise HTTPError(url, 503, 'Service Unavailable', {}, io.BytesIO(b'unhealthy: release v4'))

    assert _health.http_get(URL, {}, True, 1, opener=opener) == (503, 'unhealthy: release v4')


def test_http_get_error_status_without_a_body():
    def opener(url, **kwargs):
        raise HTTPError(url, 502, 'Bad Gateway', {}, None)

    assert _health.http_get(URL, {}, True, 1, opener=opener) == (502, '')


@pytest.mark.parametrize('error, reason', [
    (URLError(ConnectionRefusedError(111, 'Connection refused')), 'no answer: [Errno 111] Connection refused'),
    (URLError(socket.timeout('timed out')), 'no answer within 2s'),
    (socket.timeout('timed out'), 'no answer within 2s'),
    (ConnectionResetError(104, 'Connection reset by peer'), 'no answer: [Errno 104] Connection reset by peer'),
    (SSLValidationError('certificate verify failed'), 'no answer: certificate verify failed'),
])
def test_http_get_without_an_answer(error, reason):
    def opener(url, **kwargs):
        raise error

    with pytest.raises(_health.FetchFailed) as caught:
        _health.http_get(URL, {}, True, 2, opener=opener)
    assert str(caught.value) == reason


def test_http_get_body_cut_off_is_no_answer():
    class Broken(FakeResponse):
        def read(self, limit=-1):
            raise ConnectionResetError(104, 'Connection reset by peer')

    response = Broken(200, b'')
    with pytest.raises(_health.FetchFailed, match='Connection reset by peer'):
        _health.http_get(URL, {}, True, 2, opener=lambda url, **kwargs: response)
    assert response.closed


def test_http_get_bounds_the_whole_request_against_a_server_trickling_its_body():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    stop = threading.Event()

    def trickle():
        conn, _addr = server.accept()
        try:
            conn.recv(65536)
            conn.sendall(b'HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n')
            while not stop.wait(0.02):
                conn.sendall(b'.')
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=trickle)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(_health.FetchFailed) as caught:
            _health.http_get('http://127.0.0.1:%d/healthz' % server.getsockname()[1], {}, True, 0.3)
        assert time.monotonic() - started < 1.0
        assert str(caught.value) == 'no complete answer within 0.3s'
    finally:
        stop.set()
        thread.join()
        server.close()

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import health_gate
from ansible_collections.graceful.wsgi.plugins.module_utils import _health
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

URL = 'http://127.0.0.1:8000/healthz'


class Server:
    """Stands in for http_get on a simulated clock: each request takes 0.1 s and gets the next answer.

    An answer is (status, body), or a string: the reason there was no answer.
    """

    def __init__(self):
        self.now = 0.0
        self.answers = [(200, 'ok')]
        self.requests = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def http_get(self, url, headers, validate_certs, timeout, opener=None):
        self.requests.append(dict(url=url, headers=headers, validate_certs=validate_certs, timeout=timeout))
        self.now += 0.1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, str):
            raise _health.FetchFailed(answer)
        return answer


@pytest.fixture
def server(monkeypatch):
    fake = Server()
    real_run_gate = _health.run_gate
    monkeypatch.setattr(_health, 'http_get', fake.http_get)
    monkeypatch.setattr(_health, 'run_gate',
                        lambda *args, **kwargs: real_run_gate(*args, clock=fake.clock, sleep=fake.sleep, **kwargs))
    return fake


def run(**args):
    args.setdefault('url', URL)
    with set_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
            health_gate.main()
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def test_passes_after_the_503s_of_a_starting_release(server):
    server.answers = [(503, 'starting')] * 2 + [(200, 'ok release v5')]
    result, failed = run()
    assert not failed and result['changed'] is False
    assert (result['attempts'], result['consecutive'], result['failures']) == (5, 3, 2)
    assert (result['status'], result['body'], result['url']) == (200, 'ok release v5', URL)
    assert result['last_failure'] == "HTTP 503 'starting'"
    assert result['elapsed'] == pytest.approx(2.5)  # 5 requests of 0.1 s, 4 pauses of 0.5 s
    assert result['msg'] == ('health gate passed: %s answered 3 consecutive successes after 5 attempts in 2.50 s'
                             % URL)


def test_first_answers_good_needs_exactly_successes_attempts(server):
    result, failed = run(successes=5, interval=0)
    assert not failed and result['attempts'] == 5 and result['failures'] == 0 and result['last_failure'] is None


def test_fails_at_the_deadline_naming_url_and_numbers(server):
    server.answers = [(200, 'ok'), (503, 'unhealthy: release v4')] * 50
    result, failed = run(timeout=20)
    assert failed and result['changed'] is False
    assert result['msg'] == ("health gate failed: %s did not answer 3 consecutive successes within 20 s (best run 1, "
                             "%d attempts); last failure: HTTP 503 'unhealthy: release v4'" % (URL, result['attempts']))
    # 0.6 s per attempt, and a last look at the deadline
    assert (result['attempts'], result['consecutive'], result['failures']) == (35, 1, 17)
    assert result['elapsed'] == pytest.approx(20.1)
    assert result['last_failure'] == "HTTP 503 'unhealthy: release v4'"


def test_body_regex_and_status_codes_decide_success(server):
    server.answers = [(200, 'ok release v4'), (204, ''), (204, 'release v5'), (200, 'ok release v5')]
    result, failed = run(status_code=[200, 204], body_regex=r'release v5\b', successes=2)
    assert not failed and result['attempts'] == 4 and result['failures'] == 2
    assert "body does not match body_regex" in result['last_failure']


def test_connection_errors_reset_the_run_and_leave_no_status(server):
    server.answers = ['no answer: [Errno 111] Connection refused']
    result, failed = run(timeout=1)
    assert failed and result['status'] is None and result['body'] is None
    assert result['msg'].endswith('last failure: no answer: [Errno 111] Connection refused')


def test_options_reach_the_request(server):
    result, failed = run(successes=1, headers={'Host': 'app.example.com', 'X-Probe': 1}, validate_certs=False,
                         request_timeout=2.5)
    assert not failed
    assert server.requests == [dict(url=URL, headers={'Host': 'app.example.com', 'X-Probe': '1'},
                                    validate_certs=False, timeout=2.5)]


def test_runs_in_check_mode(server):
    result, failed = run(_ansible_check_mode=True, successes=1)
    assert not failed and result['changed'] is False and len(server.requests) == 1


def test_body_is_returned_truncated(server):
    server.answers = [(200, 'x' * 5000)]
    result, failed = run(successes=1)
    assert len(result['body']) == 512


@pytest.mark.parametrize('args, message', [
    (dict(successes=0), 'successes=0: must be at least 1'),
    (dict(timeout=0), 'timeout=0.0: must be positive'),
    (dict(interval=-1), 'interval=-1.0: must not be negative'),
    (dict(request_timeout=0), 'request_timeout=0.0: must be positive'),
    (dict(status_code=[]), 'status_code: must list at least one status'),
    (dict(url='127.0.0.1:8000/healthz'), 'url=127.0.0.1:8000/healthz: not an http:// or https:// URL with a host'),
])
def test_bad_input_fails_before_any_request(server, args, message):
    result, failed = run(**args)
    assert failed and result['msg'] == message and server.requests == []
    assert result['attempts'] == 0


def test_invalid_body_regex_names_the_option(server):
    result, failed = run(body_regex='release (v5')
    assert failed and result['msg'].startswith("body_regex='release (v5': not a valid regular expression")
    assert server.requests == []


def test_argument_spec_rejects_a_status_that_is_not_a_number(server):
    result, failed = run(status_code=['ok'])
    assert failed and 'status_code' in result['msg'] and server.requests == []

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import signal
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline, Overdue, WaitTimeout, call_within, poll
from ansible_collections.graceful.wsgi.tests.unit.plugins.module_utils.clock import FakeClock


def test_poll_returns_first_result():
    clock = FakeClock()
    answers = iter([None, None, 'done'])
    assert poll(lambda: next(answers), Deadline(10, clock), 0.5, sleep=clock.sleep) == 'done'
    assert clock.now == 1.0


def test_poll_times_out_with_description_and_never_oversleeps():
    clock = FakeClock()
    calls = []

    def probe():
        calls.append(clock.now)

    with pytest.raises(WaitTimeout, match='still waiting'):
        poll(probe, Deadline(1.0, clock), 0.3, sleep=clock.sleep, describe=lambda: 'still waiting')
    assert calls[-1] == pytest.approx(1.0)  # a last look exactly at the deadline
    assert clock.now == pytest.approx(1.0)


def test_poll_lets_probe_abort():
    clock = FakeClock()

    def probe():
        raise RuntimeError('broken release')

    with pytest.raises(RuntimeError):
        poll(probe, Deadline(10, clock), 0.1, sleep=clock.sleep)
    assert clock.now == 0.0


def test_deadline_accounting():
    clock = FakeClock()
    deadline = Deadline(2, clock)
    clock.sleep(0.5)
    assert deadline.elapsed() == 0.5
    assert deadline.remaining() == 1.5
    assert not deadline.expired()
    clock.sleep(2)
    assert deadline.remaining() == 0.0
    assert deadline.expired()


def test_call_within_interrupts_a_call_that_blocks_past_its_limit():
    started = time.monotonic()
    with pytest.raises(Overdue, match='no return within 0.1s'):
        call_within(0.1, time.sleep, 5)
    assert time.monotonic() - started < 1.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_call_within_returns_the_result_and_leaves_no_alarm_behind():
    previous = signal.getsignal(signal.SIGALRM)
    assert call_within(5, divmod, 7, 2) == (3, 1)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is previous


def test_call_within_no_time_left_does_not_call():
    with pytest.raises(Overdue):
        call_within(0, pytest.fail, 'called')


def test_call_within_gives_an_alarm_set_before_it_back():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        call_within(5, divmod, 7, 2)
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 29 < left <= 30 and fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

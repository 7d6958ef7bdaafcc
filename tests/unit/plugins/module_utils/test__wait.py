# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils._wait import Deadline, WaitTimeout, poll
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

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Bounded polling shared by every control module.

Private to the collection: the interface may change without notice.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import signal
import time


class Overdue(Exception):
    """A call did not return within its time limit."""


class WaitTimeout(Exception):
    """The deadline passed before the probe reported completion."""

    def __init__(self, message, last=None):
        super(WaitTimeout, self).__init__(message)
        self.last = last


class ReloadFailed(Exception):
    """A reload driver could not prove its reload; the message says why.

    ``details`` is what the driver had done or seen by then (signals sent, a snapshot of the server), which the
    module adds to its failed result.
    """

    def __init__(self, message, details=None):
        super(ReloadFailed, self).__init__(message)
        self.details = details


def timing_error(timeout, poll_interval, timeout_may_be_zero=False):
    """What is wrong with a module's ``timeout`` and ``poll_interval`` (the doc fragment graceful.wsgi.timing), or None.

    ``timeout`` must be positive (or, where ``timeout_may_be_zero``, not negative: one look, no wait), and
    ``poll_interval`` positive and not longer than ``timeout``: a wait that polls less often than it may last
    would only look once.
    """
    if timeout_may_be_zero and timeout < 0:
        return 'timeout=%s: must not be negative' % timeout
    if not timeout_may_be_zero and not timeout > 0:
        return 'timeout=%s: must be positive' % timeout
    if not poll_interval > 0:
        return 'poll_interval=%s: must be positive' % poll_interval
    if timeout > 0 and poll_interval > timeout:
        return 'poll_interval=%s is longer than timeout=%s' % (poll_interval, timeout)
    return None


class Deadline:
    """A point in monotonic time; cheap to pass around and query."""

    def __init__(self, seconds, clock=time.monotonic):
        self._clock = clock
        self.seconds = seconds
        self.started = clock()
        self.expires = self.started + seconds

    def remaining(self):
        return max(0.0, self.expires - self._clock())

    def expired(self):
        return self._clock() >= self.expires

    def elapsed(self):
        return self._clock() - self.started


def poll(probe, deadline, interval, sleep=time.sleep, describe=None):
    """Call ``probe()`` until it returns something other than ``None``.

    The probe raises to abort (a broken release must fail at once, not at the
    deadline).  Sleeping never overshoots the deadline, and the probe always
    runs once more at the deadline so a late success is not reported as a
    timeout.  ``describe()`` builds the timeout message from the probe's state.
    """
    while True:
        result = probe()
        if result is not None:
            return result
        remaining = deadline.remaining()
        if remaining <= 0:
            message = describe() if describe else 'timed out'
            raise WaitTimeout(message)
        sleep(min(interval, remaining))


def call_within(seconds, function, *args, **kwargs):
    """``function(*args, **kwargs)``, interrupted with Overdue once ``seconds`` have passed, wherever it blocks.

    For calls whose own timeout bounds each blocking step and not the whole: urllib's applies to each recv(), so a
    server sending a byte now and then holds a request for ever. It takes SIGALRM, which only the main thread gets;
    a module runs in the main thread of a process of its own.
    """
    if seconds <= 0:
        raise Overdue('no time left')  # a timer of 0 would never fire
    armed = [True]

    def overdue(signum, frame):
        if armed[0]:
            raise Overdue('no return within %gs' % seconds)

    previous = signal.signal(signal.SIGALRM, overdue)
    started = time.monotonic()
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            return function(*args, **kwargs)
        finally:
            # An alarm from here on comes after the call: it must not turn a result into a failure.
            armed[0] = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        if outer_delay:
            # Another alarm was set (a test runner's): it gets back what is left of it, late rather than never.
            signal.setitimer(signal.ITIMER_REAL, max(outer_delay - (time.monotonic() - started), 0.001), outer_interval)

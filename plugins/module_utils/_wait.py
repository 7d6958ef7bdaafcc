# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Bounded polling shared by every control module.

Private to the collection: the interface may change without notice.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


class WaitTimeout(Exception):
    """The deadline passed before the probe reported completion."""

    def __init__(self, message, last=None):
        super(WaitTimeout, self).__init__(message)
        self.last = last


class Deadline:
    """A point in monotonic time; cheap to pass around and query."""

    def __init__(self, seconds, clock=time.monotonic):
        self._clock = clock
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

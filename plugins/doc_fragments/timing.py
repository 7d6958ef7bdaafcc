# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # How long a module waits for its proof, and how often it looks. A module may set its own default.
    DOCUMENTATION = r'''
options:
  timeout:
    description:
      - Seconds the module waits for its proof before it fails. The task fails at once, without waiting this long,
        when the server shows that the proof cannot come (a master gone, workers that do not boot).
      - Must be positive, and at least O(poll_interval).
    type: float
  poll_interval:
    description:
      - Seconds between two looks at the server while the module waits.
      - Must be positive and not longer than O(timeout).
    type: float
    default: 0.1
'''

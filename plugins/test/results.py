# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# The one check of whether a step's last task heard from its host: the rollout's checkpoints and its load balancer
# step skip their ping when it did (a round trip less on the critical path). Documented in answered.yml.

from collections.abc import Mapping


def answered(result):
    """Whether ``result`` is a task result from a module that ran on its host and answered: a mapping with
    ``changed``, neither skipped, unreachable nor failed. Anything else (undefined made none, a skipped task, a
    timeout) is no answer."""
    return (isinstance(result, Mapping) and 'changed' in result and not result.get('skipped')
            and not result.get('unreachable') and not result.get('failed'))


class TestModule:
    def tests(self):
        return {'answered': answered}

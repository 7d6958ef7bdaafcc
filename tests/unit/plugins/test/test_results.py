# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.test import results


@pytest.mark.parametrize('result', [{'changed': False}, {'changed': True, 'waited': 1.2}, {'changed': False, 'failed': False}])
def test_a_result_from_the_host_is_an_answer(result):
    assert results.answered(result)


# A skipped task, an unreachable host, a failure (a task timeout among them) and what is no result at all.
@pytest.mark.parametrize('result', [
    {'changed': False, 'skipped': True}, {'changed': False, 'unreachable': True, 'msg': 'timed out'},
    {'changed': False, 'failed': True, 'msg': 'The task timed out after 30 seconds'}, {'msg': 'no changed key'},
    {}, None, 'ok', [{'changed': False}],
])
def test_anything_else_is_no_answer(result):
    assert not results.answered(result)

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.wsgi.plugins.filter import hooks


def test_plan_has_every_stage_in_deploy_order_and_normalises_steps():
    plan = hooks.hook_plan({'before_switch_once': [{'command': 'python manage.py migrate'}],
                            'after_stage': [{'command': 'python manage.py collectstatic --noinput'},
                                            {'tasks': 'hooks/warm.yml'}]}, cwd='/work/site')
    assert list(plan) == list(hooks.HOOK_STAGES)
    assert plan['after_stage'] == [
        {'stage': 'after_stage', 'index': 0, 'name': 'graceful_hooks.after_stage[0]',
         'command': 'python manage.py collectstatic --noinput'},
        {'stage': 'after_stage', 'index': 1, 'name': 'graceful_hooks.after_stage[1]', 'tasks': '/work/site/hooks/warm.yml'}]
    assert plan['before_switch_once'][0]['name'] == 'graceful_hooks.before_switch_once[0]'
    assert plan['on_failure'] == [] and plan['after_rollout'] == []


@pytest.mark.parametrize('value', [None, '', {}])
def test_no_hooks_is_an_empty_plan(value):
    assert all(steps == [] for steps in hooks.hook_plan(value).values())


def test_absolute_task_file_is_kept():
    assert hooks.hook_plan({'after_enable': [{'tasks': '/etc/hooks/x.yml'}]})['after_enable'][0]['tasks'] == '/etc/hooks/x.yml'


@pytest.mark.parametrize('value, message', [
    ({'before_switch': [{'command': 'x'}]}, "graceful_hooks: unknown stage 'before_switch'; the stages are after_stage, "),
    ({'after_stage': {'command': 'x'}}, 'graceful_hooks.after_stage must be a list of steps'),
    ({'after_stage': [{'command': 'x', 'tasks': 'y'}]}, 'graceful_hooks.after_stage[0] must be {command: "..."} or'),
    ({'after_stage': [{'shell': 'x'}]}, 'graceful_hooks.after_stage[0] must be {command'),
    ({'after_stage': ['python manage.py migrate']}, 'graceful_hooks.after_stage[0] must be {command'),
    ({'before_enable': [{'command': 'ok'}, {'command': '  '}]}, 'graceful_hooks.before_enable[1]: command must be a non-empty'),
    ({'after_enable': [{'tasks': 3}]}, 'graceful_hooks.after_enable[0]: tasks must be a non-empty string'),
    (['after_stage'], 'graceful_hooks must be a dict from stage to a list of steps (got list)'),
])
def test_invalid_hooks_name_the_stage_and_step(value, message):
    with pytest.raises(AnsibleFilterError, match='^' + re.escape(message)):
        hooks.hook_plan(value)


MIGRATE = {'stage': 'before_switch_once', 'index': 0, 'name': 'graceful_hooks.before_switch_once[0]',
           'command': 'python manage.py migrate --noinput'}


def test_failure_names_stage_step_host_exit_code_and_last_lines():
    result = {'rc': 1, 'delta': '0:00:02.500000', 'stdout_lines': ['Operations to perform:', 'Applying items.0003_x...'],
              'stderr_lines': ['Traceback (most recent call last):', '  ...', 'RuntimeError: migration 0003 fails']}
    assert hooks.hook_failure(result, MIGRATE, 'app1', 300) == (
        'graceful_hooks.before_switch_once[0] (command: python manage.py migrate --noinput) failed on app1: exit code 1: '
        'Operations to perform: | Applying items.0003_x... | Traceback (most recent call last): | ... | '
        'RuntimeError: migration 0003 fails')


def test_failure_keeps_only_the_last_lines():
    result = {'rc': 2, 'stdout_lines': ['line %d' % n for n in range(20)], 'stderr_lines': []}
    assert hooks.hook_failure(result, MIGRATE, 'app1').endswith('exit code 2: ' + ' | '.join(
        'line %d' % n for n in range(12, 20)))


def test_failure_at_the_bound_says_so():
    result = {'rc': 124, 'delta': '0:05:00.100000', 'stdout_lines': [], 'stderr_lines': []}
    assert hooks.hook_failure(result, MIGRATE, 'app1', 300).endswith(
        'exit code 124 after 300.1 s, the bound graceful_hook_timeout 300 s (no output)')


def test_failure_of_a_task_file_names_its_task():
    step = {'stage': 'before_enable', 'index': 1, 'name': 'graceful_hooks.before_enable[1]', 'tasks': '/site/warm.yml'}
    assert hooks.hook_failure({'task': 'Warm the cache', 'msg': 'Status code was 500\nand no body'}, step, 'app2') == (
        "graceful_hooks.before_enable[1] (tasks: /site/warm.yml) failed on app2 at task 'Warm the cache': "
        'Status code was 500 and no body')


def test_failure_without_exit_code_gives_the_message():
    assert hooks.hook_failure({'msg': 'Timeout (12s) waiting for privilege escalation'}, MIGRATE, 'app1').endswith(
        'failed on app1: Timeout (12s) waiting for privilege escalation')


def test_long_commands_are_shortened_in_messages():
    assert hooks.hook_step_text({'command': 'x ' * 60}) == 'command: ' + ('x ' * 60)[:77] + '...'

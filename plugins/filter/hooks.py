# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# graceful_hooks: which steps run at which stage of a deploy, and how a failing step is told. Each filter is
# documented in a file of its name beside this one.

import os
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six import string_types

# In the order a deploy reaches them. Per host: after_stage, before_enable, after_enable. Once: before_switch_once
# (on one app host), after_rollout and on_failure (on the controller).
HOOK_STAGES = ('after_stage', 'before_switch_once', 'before_enable', 'after_enable', 'after_rollout', 'on_failure')
STEP_KINDS = ('command', 'tasks')
OUTPUT_LINES = 8


def _label(stage, index):
    return 'graceful_hooks.%s[%d]' % (stage, index)


def hook_plan(hooks, cwd=None):
    """graceful_hooks checked and normalised: {stage: [{stage, index, name, command | tasks}]} for every stage
    (empty lists for the stages not given). A task file's path is made absolute against ``cwd`` (the directory
    ansible-playbook runs in); the filter does not look at the file system otherwise."""
    if hooks in (None, ''):
        hooks = {}
    if not isinstance(hooks, dict):
        raise AnsibleFilterError('graceful_hooks must be a dict from stage to a list of steps (got %s)'
                                 % type(hooks).__name__)
    unknown = sorted(str(stage) for stage in hooks if stage not in HOOK_STAGES)
    if unknown:
        raise AnsibleFilterError('graceful_hooks: unknown stage %s; the stages are %s'
                                 % (', '.join(repr(stage) for stage in unknown), ', '.join(HOOK_STAGES)))
    plan = {}
    for stage in HOOK_STAGES:
        steps = hooks.get(stage) or []
        if not isinstance(steps, list):
            raise AnsibleFilterError('graceful_hooks.%s must be a list of steps' % stage)
        plan[stage] = [_step(stage, index, step, cwd) for index, step in enumerate(steps)]
    return plan


def _step(stage, index, step, cwd):
    label = _label(stage, index)
    if not isinstance(step, dict) or len(step) != 1 or list(step)[0] not in STEP_KINDS:
        raise AnsibleFilterError('%s must be {command: "..."} or {tasks: "<task file on the controller>"}, '
                                 'exactly one of them' % label)
    kind, value = list(step.items())[0]
    if not isinstance(value, string_types) or not value.strip() or '\0' in value:
        raise AnsibleFilterError('%s: %s must be a non-empty string' % (label, kind))
    if kind == 'tasks':
        value = os.path.normpath(os.path.join(cwd or os.getcwd(), value))
    return {'stage': stage, 'index': index, 'name': label, kind: value}


def hook_step_text(step):
    """What a step runs, in a few words, for messages: 'command: ...' or 'tasks: path'."""
    if 'command' in step:
        command = re.sub(r'\s+', ' ', step['command']).strip()
        return 'command: %s' % (command if len(command) <= 80 else command[:77] + '...')
    return 'tasks: %s' % step['tasks']


def hook_failure(result, step, host, timeout=0):
    """Why a hook step failed, ending with the cause: the stage and step, the host, the exit code (or the bound it
    exceeded) and the last lines of its output. ``result`` is the registered result of the command, or for a task
    file {'task': name of the failed task, 'msg': its message}."""
    where = '%s (%s) failed on %s' % (step['name'], hook_step_text(step), host)
    if 'tasks' in step:
        return '%s at task %r: %s' % (where, result.get('task') or '?', _one_line(result.get('msg') or 'failed'))
    rc = result.get('rc')
    if rc is None:
        return '%s: %s' % (where, _one_line(result.get('msg') or 'it did not run'))
    elapsed = _seconds(result.get('delta'))
    ended = ('exit code %s after %.1f s, the bound graceful_hook_timeout %s s' % (rc, elapsed, timeout)
             if timeout and elapsed >= float(timeout) else 'exit code %s' % rc)
    lines = [line for line in (result.get('stdout_lines') or []) + (result.get('stderr_lines') or []) if line.strip()]
    tail = ' | '.join(line.strip() for line in lines[-OUTPUT_LINES:])
    return '%s: %s%s' % (where, ended, ': %s' % tail if tail else ' (no output)')


def _seconds(delta):
    """The command module's 'delta' (H:MM:SS.ffffff) in seconds; 0 when absent."""
    try:
        hours, minutes, seconds = str(delta).split(':')
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


def _one_line(text):
    return re.sub(r'\s+', ' ', str(text)).strip()[:600]


class FilterModule:
    def filters(self):
        return {'hook_plan': hook_plan, 'hook_failure': hook_failure, 'hook_step_text': hook_step_text}

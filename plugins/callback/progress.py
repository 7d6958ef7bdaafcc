# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: progress
type: stdout
short_description: A deploy's progress as an operator reads it, a line per step of the run and per batch
version_added: 0.1.0
description:
  - A stdout callback for the playbooks of the collection (C(graceful.wsgi.deploy), C(rollback), C(reload),
    C(status)). It prints each play as it starts, with the seconds since the run started; every message the
    rollout writes for operators (C(ansible.builtin.debug)), as it happens, such as the line of each batch and the
    report; a task that failed, in one line; and a line per host at the end.
  - It leaves out the rest of the task-by-task output, skipped tasks and the retries of a task that waits
    (C(FAILED - RETRYING)).
  - With O(report_path), it also writes the run's report, the C(graceful_rollout) statistic the rollout hands to
    AWX, to that file as JSON.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
options:
  report_path:
    description:
      - A file to write the run's custom statistics to, as JSON, when the playbook ends (mode 0600).
    type: path
    env:
      - name: GRACEFUL_PROGRESS_REPORT
    ini:
      - section: callback_graceful_progress
        key: report_path
notes:
  - Enable it with C(ANSIBLE_STDOUT_CALLBACK=graceful.wsgi.progress), or C(stdout_callback) in C(ansible.cfg).
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DEBUG_ACTIONS = ('debug', 'ansible.builtin.debug', 'ansible.legacy.debug')


def _result(event):
    """The result dict of a task event (CallbackTaskResult.result in ansible-core 2.19, TaskResult._result before)."""
    result = getattr(event, 'result', None)
    return result if isinstance(result, dict) else getattr(event, '_result', {})


def _task(event):
    return getattr(event, 'task', None) or getattr(event, '_task', None)


def _host(event):
    host = getattr(event, 'host', None) or getattr(event, '_host', None)
    return host.get_name() if host is not None else '?'


def _one_line(value, limit=400):
    text = ' '.join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'graceful.wsgi.progress'

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._started = time.time()
        self._last_play = None

    def _say(self, text, color=None):
        self._display.display(text, color=color)

    def v2_playbook_on_play_start(self, play):
        name = play.get_name().strip()
        # The batches are one play each: their own lines say more than the play's name again.
        if name != self._last_play:
            self._say('[%6.1f s] %s' % (time.time() - self._started, name))
        self._last_play = name

    def v2_runner_on_ok(self, result):
        task = _task(result)
        if task is None or task.action not in DEBUG_ACTIONS:
            return
        message = _result(result).get('msg')
        if message in (None, '', []):
            return
        lines = message if isinstance(message, list) else str(message).splitlines()
        for line in lines:
            self._say('    %s' % line)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors:
            return
        task = _task(result)
        self._say('    ! %s: %s: %s' % (
            _host(result), task.get_name() if task else '?', _one_line(_result(result).get('msg', 'failed'))), color='red')

    def v2_runner_on_unreachable(self, result):
        task = _task(result)
        self._say('    ! %s unreachable at %s: %s' % (
            _host(result), task.get_name() if task else '?', _one_line(_result(result).get('msg', ''))), color='red')

    def v2_playbook_on_stats(self, stats):
        for host in sorted(stats.processed.keys()):
            summary = stats.summarize(host)
            self._say('%-24s ok=%-4d changed=%-3d failed=%-3d unreachable=%-3d rescued=%d' % (
                host, summary['ok'], summary['changed'], summary['failures'], summary['unreachable'],
                summary['rescued']))
        self._say('[%6.1f s] done' % (time.time() - self._started))
        path = self.get_option('report_path')
        if path:
            custom = dict(stats.custom.get('_run', {})) if getattr(stats, 'custom', None) else {}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, 'w') as handle:
                json.dump(custom, handle, default=str)

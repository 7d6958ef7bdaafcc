# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.graceful.wsgi.plugins.module_utils import _release_stage


class ActionModule(ActionBase):
    """release_stage: the archives the host lacks sent from the controller, then the module, in one run.

    Which archives the host lacks is asked with one shell command (test -e of their markers), not a module run: a
    staging of a release the host has costs one module run in all."""

    # No temporary directory up front: one is made only when an archive is sent.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused
        validation, args = self.validate_argument_spec(argument_spec=_release_stage.ARGUMENT_SPEC)
        params = validation.validated_parameters
        problem = _release_stage.check_params(params)
        if problem:
            raise AnsibleActionFail(problem)
        for option in _release_stage.ARCHIVES:
            if params.get(option) and not os.path.isfile(params[option]):
                raise AnsibleActionFail('%s=%s: no such file on the controller' % (option, params[option]))
        markers = _release_stage.archive_markers(params)
        missing = self.archives_missing(markers)
        made_tmp = False
        try:
            for option in sorted(markers):
                if option not in missing:
                    args.pop(option, None)  # the host has it: the module must not look for it
                elif not self._task.check_mode:
                    if self._connection._shell.tmpdir is None:
                        self._make_tmp_path()
                        made_tmp = True
                    remote = self._connection._shell.join_path(self._connection._shell.tmpdir, option)
                    self._transfer_file(params[option], remote)
                    self._fixup_perms2((self._connection._shell.tmpdir, remote))
                    args[option] = remote
            return self._execute_module(module_name='graceful.wsgi.release_stage', module_args=args,
                                        task_vars=task_vars)
        finally:
            if made_tmp:
                self._remove_tmp_path(self._connection._shell.tmpdir)

    def archives_missing(self, markers):
        """The options whose archive the host lacks (their marker file is not there)."""
        if not markers:
            return set()
        command = '; '.join('test -e %s && echo %s' % (shlex.quote(path), option)
                            for option, path in sorted(markers.items())) + '; true'
        result = self._low_level_execute_command(command)
        if result.get('rc') != 0:
            raise AnsibleActionFail('could not ask the host which archives it has (rc=%s): %s'
                                    % (result.get('rc'), (result.get('stderr') or result.get('stdout') or '').strip()))
        present = set(result.get('stdout', '').split())
        return set(markers) - present

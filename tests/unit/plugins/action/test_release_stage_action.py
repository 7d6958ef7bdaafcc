# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action plugin of release_stage: what it asks the host, what it sends, and what it hands the module. The
connection is faked; the molecule scenarios run it over SSH."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleActionFail
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task
from ansible.plugins.loader import connection_loader
from ansible.template import Templar
from ansible.parsing.dataloader import DataLoader
from ansible_collections.graceful.wsgi.plugins.action.release_stage import ActionModule

MARKERS = {'wheelhouse_archive': '/srv/shop/wheelhouse/5f0c2b7e91d04a6c/.complete',
           'src_archive': '/srv/shop/releases/v1/.graceful-release'}


class Recorder(ActionModule):
    """The plugin with the host faked: ``present`` are the markers the host has."""

    def __init__(self, args, present=(), check_mode=False):
        task = Task()
        task.args = args
        task.check_mode = check_mode
        play_context = PlayContext()
        connection = connection_loader.get('local', play_context)
        loader = DataLoader()
        super(Recorder, self).__init__(task, connection, play_context, loader, Templar(loader=loader), None)
        self.present = set(present)
        self.commands, self.sent, self.module_args, self.made, self.removed = [], [], None, 0, []

    def _low_level_execute_command(self, cmd, *args, **kwargs):
        self.commands.append(cmd)
        found = [option for option, path in MARKERS.items() if path in cmd and option in self.present]
        return dict(rc=0, stdout=''.join(option + '\n' for option in found), stderr='')

    def _make_tmp_path(self, remote_user=None):
        self.made += 1
        self._connection._shell.tmpdir = '/root/.ansible/tmp/ansible-tmp-1'
        return self._connection._shell.tmpdir

    def _transfer_file(self, local_path, remote_path):
        self.sent.append((local_path, remote_path))
        return remote_path

    def _fixup_perms2(self, remote_paths, remote_user=None, execute=True):
        return None

    def _remove_tmp_path(self, tmp_path, force=False):
        self.removed.append(tmp_path)

    def _execute_module(self, module_name=None, module_args=None, task_vars=None, **kwargs):
        assert module_name == 'graceful.wsgi.release_stage'
        self.module_args = module_args
        return dict(changed=True)


@pytest.fixture
def archives(tmp_path):
    wheelhouse = tmp_path / '5f0c2b7e91d04a6c.tar'
    source = tmp_path / 'v1.tar.gz'
    wheelhouse.write_bytes(b'')
    source.write_bytes(b'')
    return dict(app_root='/srv/shop', release='v1', wheelhouse='5f0c2b7e91d04a6c',
                wheelhouse_archive=str(wheelhouse), src_archive=str(source))


def test_only_what_the_host_lacks_is_sent(archives):
    action = Recorder(archives, present={'wheelhouse_archive'})
    assert action.run(task_vars={}) == dict(changed=True)
    # One shell command asks for both markers; no module run for it.
    assert len(action.commands) == 1
    assert all(path in action.commands[0] for path in MARKERS.values())
    assert action.sent == [(archives['src_archive'], '/root/.ansible/tmp/ansible-tmp-1/src_archive')]
    assert action.module_args['src_archive'] == '/root/.ansible/tmp/ansible-tmp-1/src_archive'
    assert 'wheelhouse_archive' not in action.module_args
    assert action.made == 1 and action.removed == ['/root/.ansible/tmp/ansible-tmp-1']


def test_a_host_that_has_both_gets_the_module_alone(archives):
    action = Recorder(archives, present=set(MARKERS))
    action.run(task_vars={})
    # No temporary directory: ActionBase.run makes none up front (TRANSFERS_FILES), and none is needed.
    assert action.sent == [] and action.made == 0 and action.removed == []
    assert 'src_archive' not in action.module_args and 'wheelhouse_archive' not in action.module_args


def test_check_mode_sends_nothing_and_the_module_reports_what_would_be_unpacked(archives):
    action = Recorder(archives, check_mode=True)
    action.run(task_vars={})
    assert action.sent == [] and action.made == 0
    assert action.module_args['src_archive'] == archives['src_archive']
    assert action.module_args['wheelhouse_archive'] == archives['wheelhouse_archive']


def test_the_probe_quotes_the_paths_it_asks_for(archives):
    action = Recorder(dict(archives, app_root="/srv/shop"), present=())
    action.run(task_vars={})
    assert action.commands[0] == ("test -e /srv/shop/releases/v1/.graceful-release && echo src_archive; "
                                  "test -e /srv/shop/wheelhouse/5f0c2b7e91d04a6c/.complete && echo wheelhouse_archive; true")


@pytest.mark.parametrize('change, message', [
    (dict(src_archive='/nowhere/v1.tar.gz'), 'src_archive=/nowhere/v1.tar.gz: no such file on the controller'),
    (dict(release='v1; rm -rf /'), "release='v1; rm -rf /': use 1 to 64 letters"),
    (dict(app_root='/srv/$(id)'), "app_root='/srv/$(id)': use an absolute path"),
])
def test_bad_input_is_refused_before_the_host_is_asked(archives, change, message):
    action = Recorder(dict(archives, **change))
    with pytest.raises(AnsibleActionFail) as caught:
        action.run(task_vars={})
    assert str(caught.value).startswith(message)
    assert action.commands == [] and action.sent == []

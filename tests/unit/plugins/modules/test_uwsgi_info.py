# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import uwsgi_info
from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)


def test_reports_instance(monkeypatch):
    document = {'pid': 7, 'version': '2.0.31', 'listen_queue': 3, 'listen_queue_errors': 1,
                'workers': [{'id': 1, 'pid': 8, 'accepting': 1, 'status': 'busy', 'respawn_count': 2,
                             'apps': [{'mountpoint': '', 'startup_time': 1}]}]}
    monkeypatch.setattr(_uwsgi, 'read_stats', lambda address, timeout: document)
    with set_module_args({'stats': '127.0.0.1:9191', '_ansible_check_mode': True}):
        with pytest.raises(AnsibleExitJson) as caught:
            uwsgi_info.main()
    result = caught.value.args[0]
    assert result['changed'] is False
    assert (result['master_pid'], result['listen_queue'], result['listen_queue_errors']) == (7, 3, 1)
    assert result['workers'][0]['apps_loaded'] == 1
    assert result['workers'][0]['status'] == 'busy'


def test_unreachable_stats_names_the_path(tmp_path):
    path = str(tmp_path / 'stats.sock')
    with set_module_args({'stats': path}):
        with pytest.raises(AnsibleFailJson) as caught:
            uwsgi_info.main()
    assert caught.value.args[0]['msg'].startswith('stats=%s: no such socket' % path)

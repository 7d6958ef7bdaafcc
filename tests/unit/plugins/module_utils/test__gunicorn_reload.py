# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The gunicorn_reload driver without AnsibleModule: run() takes the options and gives (failed, result).

The reloads themselves are tested through the module, on the fake gunicorn (tests/unit/plugins/modules).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn_reload


def params(**overrides):
    values = dict(pidfile='/nonexistent/gunicorn.pid', mode='hup', pending_upgrade='fail', wait=True, timeout=300.0,
                  poll_interval=0.1)
    values.update(overrides)
    return values


@pytest.mark.parametrize('overrides, message', [
    (dict(timeout=0.0), 'timeout=0.0: must be positive'),
    (dict(poll_interval=0.0), 'poll_interval=0.0: must be positive'),
    (dict(timeout=1.0, poll_interval=2.0), 'poll_interval=2.0 is longer than timeout=1.0'),
])
def test_timing_is_checked_first(overrides, message):
    failed, result = _gunicorn_reload.run(params(**overrides), check_mode=False)
    assert failed
    assert result == dict(changed=False, mode='hup', signals=[], elapsed=0.0, pending_settled=None,
                          pending_detail=None, msg=message)


def test_a_missing_pidfile_fails_with_nothing_signalled(tmp_path):
    pidfile = str(tmp_path / 'gunicorn.pid')
    failed, result = _gunicorn_reload.run(params(pidfile=pidfile, mode='upgrade'), check_mode=True)
    assert failed and not result['changed'] and result['pidfile_handover'] is False
    assert result['msg'] == ('pidfile=%s does not exist (gunicorn not running, or started without --pid %s); nothing '
                             'was signalled' % (pidfile, pidfile))


def test_settings_without_warn_drop_warnings():
    settings = _gunicorn_reload.Settings('/run/app.pid', 5.0, 0.1)
    assert settings.systemctl is None and settings.journalctl is None
    assert settings.warn('ignored') is None

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import time

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc, _systemd

V1 = '''12:pids:/system.slice/myapp.service
11:memory:/system.slice/myapp.service
3:cpu,cpuacct:/system.slice/myapp.service
1:name=systemd:/system.slice/myapp.service
'''


@pytest.mark.parametrize('text, unit', [
    ('0::/system.slice/myapp.service\n', 'myapp.service'),                      # cgroup v2 (Debian 12)
    (V1, 'myapp.service'),                                                      # cgroup v1
    (V1 + '0::/system.slice/myapp.service\n', 'myapp.service'),                 # hybrid
    ('0::/\n1:name=systemd:/system.slice/myapp.service\n', 'myapp.service'),    # hybrid, unified tree unused
    ('0::/system.slice/system-web.slice/web@blue.service\n', 'web@blue.service'),  # template, in its own slice
    ('0::/system.slice/myapp.service/gunicorn\n', 'myapp.service'),             # Delegate=yes, a sub-cgroup
    ('0::/system.slice/_cpu.service\n', 'cpu.service'),                         # escaped: clashes with a controller
    ('0::/system.slice/app\\x2dblue.service\n', 'app\\x2dblue.service'),         # systemd's own unit-name escape
    ('0::/user.slice/user-1000.slice/user@1000.service/app.slice/myapp.service\n', None),  # a user manager's unit
    ('0::/user.slice/user-1000.slice/session-4.scope\n', None),                 # started from a login shell
    ('0::/system.slice/docker-0123abcd.scope\n', None),                         # a container
    ('0::/\n', None),                                                           # container with cgroup namespace
    ('12:pids:/system.slice/myapp.service\n', None),                            # v1 without systemd's hierarchy
    ('0::/system.slice/.service\n', None),
    ('', None),
    (None, None),
])
def test_unit_from_cgroup(text, unit):
    assert _systemd.unit_from_cgroup(text) == unit


def test_parse_show():
    text = 'MainPID=4398\nPIDFile=/run/myapp/gunicorn.pid\nActiveState=active\nNRestarts=0\n\nnoise\n'
    assert _systemd.parse_show(text) == {
        'MainPID': '4398', 'PIDFile': '/run/myapp/gunicorn.pid', 'ActiveState': 'active', 'NRestarts': '0'}


def test_parse_show_keeps_empty_values_and_equals_signs_in_values():
    assert _systemd.parse_show('PIDFile=\nEnvironment=A=1 B=2\n') == {'PIDFile': '', 'Environment': 'A=1 B=2'}
    assert _systemd.parse_show('') == {} and _systemd.parse_show(None) == {}


@pytest.mark.parametrize('value, expected', [('4398', 4398), ('0', 0), ('', None), ('[not set]', None)])
def test_int_property(value, expected):
    assert _systemd.int_property({'MainPID': value}, 'MainPID') == expected
    assert _systemd.int_property({}, 'MainPID') is None


def test_cursor_from_show_cursor_output():
    assert _systemd.cursor_from('-- cursor: s=0a1b;i=2c3;b=4d\n') == 's=0a1b;i=2c3;b=4d'
    assert _systemd.cursor_from('some line\n-- cursor: s=1\n') == 's=1'
    assert _systemd.cursor_from('-- No entries --\n') is None
    assert _systemd.cursor_from('') is None and _systemd.cursor_from(None) is None


def test_run_returns_the_exit_code_and_both_outputs():
    assert _systemd.run(['sh', '-c', 'echo MainPID=42; echo warning >&2; exit 3'], 5) == (3, 'MainPID=42\n', 'warning\n')


def test_run_names_a_command_that_cannot_be_run(tmp_path):
    missing = str(tmp_path / 'systemctl')
    with pytest.raises(_systemd.SystemdError, match='^%s show app.service cannot be run: No such file or directory$'
                       % missing):
        _systemd.run([missing, 'show', 'app.service'], 5)


def wait_gone(pid, seconds=2.0):
    deadline = time.monotonic() + seconds
    while _proc.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _proc.is_alive(pid)


def test_run_kills_an_overdue_command_with_its_whole_process_group(tmp_path):
    pids = tmp_path / 'pids'
    script = 'sleep 30 & echo $$ $! > %s; wait' % pids
    started = time.monotonic()
    with pytest.raises(_systemd.SystemdError) as caught:
        _systemd.run(['sh', '-c', script], 0.3)
    assert time.monotonic() - started < 2.0
    assert str(caught.value) == 'sh -c %s did not finish within 0.3s (killed)' % script
    shell, child = [int(word) for word in pids.read_text().split()]
    assert wait_gone(shell) and wait_gone(child)


def test_run_does_not_wait_for_a_process_that_left_the_group_holding_the_output(tmp_path):
    pids = tmp_path / 'pids'
    script = 'setsid sleep 30 & echo $! > %s; sleep 30' % pids
    started = time.monotonic()
    try:
        with pytest.raises(_systemd.SystemdError, match=r'did not finish within 0.3s \(killed\)$'):
            _systemd.run(['sh', '-c', script], 0.3)
        assert time.monotonic() - started < 2.0 + _systemd.KILL_WAIT_SECONDS
    finally:
        escaped = int(pids.read_text())
        os.kill(escaped, signal.SIGKILL)

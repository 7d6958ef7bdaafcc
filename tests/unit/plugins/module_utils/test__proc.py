# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc


def make_proc(root, pid, comm, state, ppid, argv):
    base = root / str(pid)
    base.mkdir()
    (base / 'stat').write_text('%d (%s) %s %d 1 1 0 -1\n' % (pid, comm, state, ppid))
    (base / 'cmdline').write_bytes(b'\0'.join(a.encode() for a in argv) + (b'\0' if argv else b''))


def test_parse_stat_handles_parentheses_and_spaces_in_comm():
    assert _proc.parse_stat('42 (my (odd) name) S 7 42 42 0') == ('my (odd) name', 'S', 7)


def test_read_process_and_children(tmp_path):
    make_proc(tmp_path, 10, 'uwsgi', 'S', 1, ['/venv/bin/uwsgi', '--ini', 'app.ini'])
    make_proc(tmp_path, 11, 'uwsgi', 'S', 10, ['/venv/bin/uwsgi', '--ini', 'app.ini'])
    make_proc(tmp_path, 12, 'uwsgi', 'Z', 10, [])
    make_proc(tmp_path, 13, 'sshd', 'S', 1, ['sshd'])
    (tmp_path / 'self').mkdir()
    info = _proc.read_process(10, str(tmp_path))
    assert (info.pid, info.ppid, info.program) == (10, 1, 'uwsgi')
    assert info.describe() == 'pid 10 (/venv/bin/uwsgi --ini app.ini)'
    assert _proc.read_process(12, str(tmp_path)) is None  # zombies are not alive
    assert _proc.read_process(99, str(tmp_path)) is None
    assert _proc.child_pids(10, str(tmp_path)) == [11]


def test_kernel_thread_is_described_by_comm(tmp_path):
    make_proc(tmp_path, 2, 'kthreadd', 'S', 0, [])
    assert _proc.read_process(2, str(tmp_path)).describe() == 'pid 2 ([kthreadd])'


def test_this_process_is_alive():
    assert _proc.is_alive(os.getpid())
    assert os.getpid() in _proc.child_pids(os.getppid())  # the kernel's children list
    assert _proc.read_link(os.getpid(), 'cwd') == os.getcwd()
    assert 'PATH' in _proc.read_environ(os.getpid())


@pytest.mark.parametrize('content, message', [
    ('', 'it is empty'), ('  \n', 'it is empty'), ('abc', 'does not hold a PID'), ('0', 'does not hold a PID'),
    ('-5', 'does not hold a PID'),
])
def test_read_pidfile_rejects(tmp_path, content, message):
    path = tmp_path / 'app.pid'
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        _proc.read_pidfile(str(path))


def test_read_pidfile(tmp_path):
    path = tmp_path / 'app.pid'
    path.write_text('1234\n')
    assert _proc.read_pidfile(str(path)) == 1234

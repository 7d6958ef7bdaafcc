# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Whether a gunicorn master preloaded the application, read as gunicorn reads its settings at start."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _proc

VENV = ['/srv/app/venv/bin/python3', '/srv/app/venv/bin/gunicorn']


@pytest.mark.parametrize('cmdline, expected', [
    (VENV + ['-c', 'conf.py', 'app:app'], ['-c', 'conf.py', 'app:app']),
    (['/srv/app/venv/bin/gunicorn', '--preload', 'app:app'], ['--preload', 'app:app']),
    (['python3', '-u', '-W', 'ignore', '-m', 'gunicorn', '--preload'], ['--preload']),
    (['/usr/bin/python3', '-X', 'dev', '/usr/bin/gunicorn', 'app:app'], ['app:app']),
    (['gunicorn: master [app]'], None),
])
def test_gunicorn_arguments_start_after_the_gunicorn_script(cmdline, expected):
    assert _gunicorn.gunicorn_arguments(cmdline) == expected


@pytest.mark.parametrize('args, expected', [
    (['app:app'], (False, None)),
    (['--preload', 'app:app'], (True, None)),
    (['--prel', 'app:app'], (True, None)),           # argparse takes an unambiguous prefix
    (['--pr', 'app:app'], (False, None)),            # ambiguous: --proxy-protocol, --print-config
    (['--', '--preload'], (False, None)),            # after --, an argument, not an option
    (['-c', '/etc/g.py', 'app:app'], (False, '/etc/g.py')),
    (['-c/etc/g.py'], (False, '/etc/g.py')),
    (['--config', 'python:conf'], (False, 'python:conf')),
    (['--config=file:/etc/g.py', '--preload'], (True, 'file:/etc/g.py')),
    (['--conf', 'g.py'], (False, 'g.py')),
    (['-c', '--preload'], (True, None)),             # argparse never takes an option for a value
    (['-c', 'a.py', '-c', 'b.py'], (False, 'b.py')),  # the last one counts
    (['--chdir', '/srv', '--check-config'], (False, None)),
])
def test_option_scan_reads_the_flag_and_the_config_as_argparse_does(args, expected):
    assert _gunicorn.option_scan(args) == expected


@pytest.mark.parametrize('text, value, source', [
    ('workers = 3\n', False, 'not set in /c.py (default false)'),
    ('preload_app = True\n', True, '/c.py line 1'),
    ('preload_app = False\n', False, '/c.py line 1'),
    ('preload_app = " TRUE "\n', True, '/c.py line 1'),  # validate_bool's strings
    ('preload_app = True\nworkers = 2\npreload_app = False\n', False, '/c.py line 3'),  # the last one counts
    ('preload_app: bool = True\n', True, '/c.py line 1'),
    ('def on_starting(server):\n    preload_app = True\n', None, None),  # a function's local: refused, not guessed
    ('import os\npreload_app = os.environ.get("PRELOAD") == "1"\n', None, '/c.py line 2 sets preload_app to '
     'something other than true or false'),
    ('if True:\n    preload_app = True\n', None, '/c.py line 2 sets preload_app, or may, in a way only running '
     'it would tell'),
    ('from settings import *\n', None, '/c.py line 1 sets preload_app, or may, in a way only running it would tell'),
    ('from settings import preload_app\n', None, None),
    ('for preload_app in (True,):\n    pass\n', None, None),
    ('preload_app = 1\n', None, None),
    ('preload_app = (\n', None, '/c.py is not Python that can be parsed'),
])
def test_config_preload_reads_literals_and_refuses_anything_else(text, value, source):
    preload = _gunicorn.config_preload(text, '/c.py')
    assert preload.value is value
    if source:
        assert preload.source == source
    assert text.strip() not in preload.source, 'the file is never quoted'


def test_config_preload_never_quotes_the_file():
    # The path comes from a command line the app's user controls: what it names must not leak into the task.
    secret = 'root:$6$salt$hash:19000:0:99999:7:::\n'
    preload = _gunicorn.config_preload(secret, '/etc/shadow')
    assert preload.value is None and 'salt' not in preload.source and '19000' not in preload.source


class Master:
    def __init__(self, cmdline, environ=None, pid=100):
        self.pid = pid
        self.info = _proc.ProcessInfo(pid, 1, 'S', cmdline, 'gunicorn')
        self.environ = environ or {}


@pytest.fixture
def proc_root(tmp_path):
    """A /proc whose pid 100 works in tmp_path/srv (its cwd)."""
    (tmp_path / 'srv').mkdir()
    (tmp_path / 'proc' / '100').mkdir(parents=True)
    os.symlink(str(tmp_path / 'srv'), str(tmp_path / 'proc' / '100' / 'cwd'))
    return tmp_path / 'proc'


def reader_of(files, reads):
    def read(path, uid, gid):
        reads.append(path)
        if path in files:
            return files[path], None
        return None, 'No such file or directory'
    return read


def test_preload_on_the_command_line_needs_no_config(proc_root):
    reads = []
    preload = _gunicorn.find_preload(Master(VENV + ['--preload', '-c', '/etc/g.py']), str(proc_root),
                                     reader_of({}, reads))
    assert (preload.value, preload.source) == (True, 'the command line (--preload)') and reads == []


def test_preload_in_gunicorn_cmd_args(proc_root):
    master = Master(VENV + ['app:app'], environ={'GUNICORN_CMD_ARGS': '--workers 3 --preload'})
    preload = _gunicorn.find_preload(master, str(proc_root), reader_of({}, []))
    assert (preload.value, preload.source) == (True, 'GUNICORN_CMD_ARGS in its environment (--preload)')


def test_the_config_named_in_gunicorn_cmd_args_is_read_when_the_command_line_names_none(proc_root):
    master = Master(VENV + ['app:app'], environ={'GUNICORN_CMD_ARGS': "-c '/etc/my g.py'"})
    preload = _gunicorn.find_preload(master, str(proc_root), reader_of({'/etc/my g.py': 'preload_app = True'}, []))
    assert (preload.value, preload.source) == (True, '/etc/my g.py line 1')


def test_the_command_line_config_wins_over_gunicorn_cmd_args(proc_root):
    master = Master(VENV + ['-c', '/etc/a.py'], environ={'GUNICORN_CMD_ARGS': '-c /etc/b.py'})
    reads = []
    _gunicorn.find_preload(master, str(proc_root), reader_of({'/etc/a.py': ''}, reads))
    assert reads == ['/etc/a.py']


def test_without_a_config_option_gunicorn_conf_py_in_the_working_directory_is_read(proc_root, tmp_path):
    default = str(tmp_path / 'srv' / 'gunicorn.conf.py')
    (tmp_path / 'srv' / 'gunicorn.conf.py').write_text('preload_app = True\n')
    preload = _gunicorn.find_preload(Master(VENV + ['app:app']), str(proc_root),
                                     reader_of({default: 'preload_app = True\n'}, []))
    assert (preload.value, preload.source) == (True, default + ' line 1')


def test_without_any_config_the_default_is_false(proc_root, tmp_path):
    reads = []
    preload = _gunicorn.find_preload(Master(VENV + ['app:app']), str(proc_root), reader_of({}, reads))
    assert preload.value is False and reads == []
    assert preload.source == 'no --preload, and no config file (no %s)' % (tmp_path / 'srv' / 'gunicorn.conf.py')


def test_a_relative_config_is_taken_from_the_working_directory(proc_root, tmp_path):
    reads = []
    _gunicorn.find_preload(Master(VENV + ['-c', 'file:conf/g.py']), str(proc_root), reader_of({}, reads))
    assert reads == [str(tmp_path / 'srv' / 'conf' / 'g.py')]


@pytest.mark.parametrize('cmdline, environ, source', [
    (VENV + ['-c', 'python:myapp.gunicorn_settings'], {},
     'its config is the Python module myapp.gunicorn_settings, which only importing it would tell'),
    (['gunicorn: master [app]'], {}, "its command line was replaced by a setproctitle title (gunicorn: master [app])"),
    (VENV + ['app:app'], {'GUNICORN_CMD_ARGS': '--name "unclosed'},
     'GUNICORN_CMD_ARGS in its environment cannot be split into arguments'),
    (VENV + ['-c', '/etc/gone.py'], {}, 'its config file /etc/gone.py cannot be read: No such file or directory'),
])
def test_what_cannot_be_told_is_none_with_the_reason(proc_root, cmdline, environ, source):
    preload = _gunicorn.find_preload(Master(cmdline, environ), str(proc_root), reader_of({}, []))
    assert (preload.value, preload.source) == (None, source)


def test_read_config_reads_a_file_and_refuses_a_fifo_without_blocking(tmp_path):
    config = tmp_path / 'g.py'
    config.write_text('preload_app = True\n')
    assert _gunicorn.read_config(str(config), None, None) == ('preload_app = True\n', None)
    fifo = tmp_path / 'fifo.py'
    os.mkfifo(str(fifo))
    assert _gunicorn.read_config(str(fifo), None, None) == (None, 'not a regular file')
    assert _gunicorn.read_config(str(tmp_path / 'none.py'), None, None) == (None, 'No such file or directory')


def test_read_config_refuses_a_file_too_large_to_be_a_config(tmp_path, monkeypatch):
    monkeypatch.setattr(_gunicorn, 'CONFIG_LIMIT', 10)
    config = tmp_path / 'g.py'
    config.write_text('preload_app = False\n')
    assert _gunicorn.read_config(str(config), None, None) == (None, 'larger than 10 bytes')


def test_root_reads_the_config_as_the_masters_user(tmp_path, monkeypatch):
    config = tmp_path / 'g.py'
    config.write_text('preload_app = False\n')
    calls = []

    def run_as(uid, gid, function, timeout):
        calls.append((uid, gid, timeout))
        return function()

    monkeypatch.setattr(os, 'geteuid', lambda: 0)
    monkeypatch.setattr(_proc, 'run_as', run_as)
    assert _gunicorn.read_config(str(config), 1000, 1001) == ('preload_app = False\n', None)
    assert calls == [(1000, 1001, _proc.OWNER_READ_SECONDS)]
    # A master that runs as root read its config as root: nothing to drop.
    assert _gunicorn.read_config(str(config), 0, 0) == ('preload_app = False\n', None) and len(calls) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason='taking another user needs root')
def test_read_config_as_the_user_who_may_not_read_it_says_so(tmp_path):
    config = tmp_path / 'g.py'
    config.write_text('preload_app = False\n')
    os.chmod(str(config), 0o600)
    os.chmod(str(tmp_path), 0o755)
    assert _gunicorn.read_config(str(config), 65534, 65534) == (None, 'Permission denied')

# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

import jinja2
import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _nginx

# The collection's root, for the role's template (tests run from the collection link or the work tree).
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
TEMPLATE = os.path.join(ROOT, 'roles', 'lb_nginx', 'templates', 'server.conf.j2')
SECRET = 'never-shown-4f1c'


def rendered(name, address, down):
    """The server file the role lb_nginx writes, from its own template."""
    with open(TEMPLATE) as handle:
        template = jinja2.Template(handle.read(), keep_trailing_newline=True)
    return template.render(ansible_managed='Ansible managed: do not edit', lb_nginx_server=name,
                           lb_nginx_server_address=address, lb_nginx_max_fails=1, lb_nginx_fail_timeout=10,
                           lb_nginx_server_down=down)


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(_nginx, 'TRUSTED_UID', os.geteuid())
    (tmp_path / 'servers').mkdir()
    return tmp_path


def write(config_dir, name, text):
    path = config_dir / 'servers' / (name + '.conf')
    path.write_text(text)
    return str(path)


def test_the_role_template_renders_what_the_parser_reads():
    assert rendered('app1', '10.0.0.11:8000', True) == (
        '# Ansible managed: do not edit\nserver 10.0.0.11:8000 max_fails=1 fail_timeout=10s down;  # app1\n')
    assert _nginx.parse_server_line('p', rendered('app1', '10.0.0.11:8000', True)) == (
        '10.0.0.11:8000', ['max_fails=1', 'fail_timeout=10s', 'down'])
    assert _nginx.parse_server_line('p', rendered('app1', '10.0.0.11:8000', False)) == (
        '10.0.0.11:8000', ['max_fails=1', 'fail_timeout=10s'])


def test_read_servers_reports_every_file_the_upstream_includes(config_dir):
    app1 = write(config_dir, 'app1', rendered('app1', '10.0.0.11:8000', False))
    app2 = write(config_dir, 'app2', rendered('app2', '10.0.0.12:8000', True))
    # Not included by nginx's "*.conf" glob: hidden files (a template's temporary file) and other suffixes.
    write(config_dir, '.ansible_tmpXYZapp3', 'garbage')
    (config_dir / 'servers' / 'app4.conf.bak').write_text('garbage')
    assert _nginx.read_servers(str(config_dir)) == {
        'app1': dict(state='enabled', detail='up in %s' % app1, address='10.0.0.11:8000', path=app1),
        'app2': dict(state='drained', detail='marked down in %s' % app2, address='10.0.0.12:8000', path=app2),
    }


def test_read_servers_of_named_servers_reports_the_unknown_as_missing(config_dir):
    write(config_dir, 'app1', rendered('app1', '10.0.0.11:8000', True))
    write(config_dir, 'app2', rendered('app2', '10.0.0.12:8000', False))
    reports = _nginx.read_servers(str(config_dir), ['app1', 'app9'])
    assert sorted(reports) == ['app1', 'app9']
    assert reports['app1']['state'] == 'drained'
    path = str(config_dir / 'servers' / 'app9.conf')
    assert reports['app9'] == dict(state='missing', detail='no %s: nginx does not know this server' % path,
                                   address=None, path=path)


@pytest.mark.parametrize('text, expected', [
    ('server 10.0.0.11:8000 down;\n', 'drained'),
    ('server 10.0.0.11:8000;\n', 'enabled'),
    ('  server   unix:/run/app.sock   weight=2\n   down ;  # app1\n', 'drained'),
    ('# server 10.0.0.11:8000 down;\nserver 10.0.0.11:8000 max_fails=1;  # down\n', 'enabled'),
    ('server 10.0.0.11:8000 max_fails=1 fail_timeout=10s; # app1 was down;\n', 'enabled'),
])
def test_only_the_down_parameter_of_the_directive_drains(text, expected):
    assert _nginx.server_report('p', text)['state'] == expected


@pytest.mark.parametrize('text, message', [
    ('', 'p: holds 0 directives, 0 of them "server ADDRESS ...;"; a server file holds exactly one'),
    ('# only a comment\n', 'p: holds 0 directives, 0 of them "server ADDRESS ...;"; a server file holds exactly one'),
    ('server a:1; server b:1 down;\n', 'p: holds 2 directives, 2 of them "server ADDRESS ...;"; a server file holds '
                                       'exactly one'),
    ('server a:1;\nzone x 64k;\n', 'p: holds 2 directives, 1 of them "server ADDRESS ...;"; a server file holds '
                                   'exactly one'),
    ('keepalive 8;\n', 'p: holds 1 directive, 0 of them "server ADDRESS ...;"; a server file holds exactly one'),
    ('server a:1 down\n', 'p: does not end its last directive with ";"; not a server file'),
])
def test_anything_but_one_server_directive_is_refused_without_quoting_it(text, message):
    with pytest.raises(_nginx.NginxError) as caught:
        _nginx.parse_server_line('p', text)
    assert str(caught.value) == message


def test_a_missing_config_dir_names_the_option(tmp_path):
    missing = str(tmp_path / 'nope')
    with pytest.raises(_nginx.NginxError) as caught:
        _nginx.read_servers(missing)
    assert str(caught.value) == ('config_dir=%s: %s does not exist (is the role lb_nginx set up for this app on this '
                                 'host?)' % (missing, missing))


def test_a_config_dir_without_servers_names_the_servers_directory(tmp_path):
    with pytest.raises(_nginx.NginxError) as caught:
        _nginx.read_servers(str(tmp_path), ['app1'])
    assert str(caught.value) == ('config_dir=%s: %s/servers does not exist (is the role lb_nginx set up for this app '
                                 'on this host?)' % (tmp_path, tmp_path))
    (tmp_path / 'servers').write_text('')
    with pytest.raises(_nginx.NginxError, match='servers is not a directory'):
        _nginx.read_servers(str(tmp_path))


def fails_without_content(config_dir, name='app1'):
    with pytest.raises(_nginx.NginxError) as caught:
        _nginx.read_servers(str(config_dir))
    assert SECRET not in str(caught.value)
    return str(caught.value)


def test_a_symlinked_server_file_is_not_followed(config_dir, tmp_path_factory):
    target = tmp_path_factory.mktemp('elsewhere') / 'secret.conf'
    target.write_text('server %s down;\n' % SECRET)
    path = config_dir / 'servers' / 'app1.conf'
    os.symlink(str(target), str(path))
    assert fails_without_content(config_dir) == ('%s: is a symbolic link; server files are never followed through '
                                                 'one' % path)


def test_a_fifo_is_refused_without_blocking(config_dir):
    path = config_dir / 'servers' / 'app1.conf'
    os.mkfifo(str(path))
    started = time.monotonic()
    assert fails_without_content(config_dir) == '%s: is a FIFO, not a server file' % path
    assert time.monotonic() - started < 1


def test_a_directory_is_refused(config_dir):
    path = config_dir / 'servers' / 'app1.conf'
    path.mkdir()
    assert fails_without_content(config_dir) == '%s: is a directory, not a server file' % path


@pytest.mark.skipif(os.geteuid() != 0, reason='giving the file to another user needs root')
def test_a_file_another_user_owns_is_not_trusted(config_dir, monkeypatch):
    monkeypatch.setattr(_nginx, 'TRUSTED_UID', 0)
    path = write(config_dir, 'app1', 'server %s:8000;\n' % SECRET)
    os.chown(path, 65534, 65534)
    assert fails_without_content(config_dir) == ('%s: is owned by uid 65534, not root; not trusted as a server file'
                                                 % path)


def test_a_large_file_is_refused(config_dir):
    path = write(config_dir, 'app1', '# %s\n' % SECRET * 10000 + 'server a:1;\n')
    size = os.path.getsize(path)
    assert fails_without_content(config_dir) == '%s: is %d bytes, too large for a server file' % (path, size)


def test_an_unreadable_server_file_is_not_quoted(config_dir):
    write(config_dir, 'app1', 'server %s:8000 down; server b:1;\n' % SECRET)
    assert 'holds 2 directives' in fails_without_content(config_dir)

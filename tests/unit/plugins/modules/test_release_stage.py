# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""release_stage on an app directory in a temporary tree, with real archives and tar. The venv and pip are faked:
the commands are recorded and their effect (the interpreter, a package) is written. The molecule scenarios run the
real ones on the fleet."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd
import tarfile
import zipfile

import pytest

from ansible_collections.graceful.wsgi.plugins.modules import release_stage
from ansible_collections.graceful.wsgi.plugins.module_utils import _release_stage, _systemd
from ansible_collections.graceful.wsgi.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, set_module_args)

USER = pwd.getpwuid(os.geteuid()).pw_name
GROUP = grp.getgrgid(os.getegid()).gr_name


class Host:
    """Runs tar for real; records the venv and pip commands and does what they would."""

    def __init__(self, pip_fails=False, hang=False):
        self.commands = []
        self.pip_fails = pip_fails
        self.hang = hang

    def __call__(self, argv, timeout):
        self.commands.append(argv)
        if self.hang:
            raise _systemd.SystemdError('%s did not finish within %gs (killed)' % (' '.join(argv), timeout))
        if argv[0] == 'tar':
            return _systemd.run(argv, timeout)
        if argv[1:3] == ['-m', 'venv']:
            bin_dir = os.path.join(argv[-1], 'bin')
            os.makedirs(bin_dir)
            open(os.path.join(bin_dir, 'python'), 'w').close()
            return 0, '', ''
        if 'install' in argv:
            if self.pip_fails:
                return 1, '', 'ERROR: MarkupSafe-2.1.5-cp312-cp312-linux_x86_64.whl is not a supported wheel on this platform.'
            return 0, '', ''
        raise AssertionError('unexpected command %r' % argv)

    def ran(self, word):
        return [argv for argv in self.commands if word in ' '.join(argv)]


@pytest.fixture(autouse=True)
def own_the_tree(monkeypatch):
    monkeypatch.setattr(_release_stage, 'ROOT_IDS', (os.geteuid(), os.getegid()))


@pytest.fixture
def archives(tmp_path):
    source = tmp_path / 'source'
    (source / 'media').mkdir(parents=True)
    (source / 'app.py').write_text('def app(environ, start_response):\n    pass\n')
    src_archive = tmp_path / 'v1.tar.gz'
    with tarfile.open(str(src_archive), 'w:gz') as archive:
        archive.add(str(source), arcname='.')
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    (wheels / 'six-1.16.0-py2.py3-none-any.whl').write_bytes(b'PK')
    (wheels / '.complete').write_text('\n')
    wheelhouse_archive = tmp_path / 'wh.tar'
    with tarfile.open(str(wheelhouse_archive), 'w') as archive:
        archive.add(str(wheels), arcname='.')
    return str(src_archive), str(wheelhouse_archive)


@pytest.fixture
def pip_wheel(tmp_path):
    """A wheel of pip as Debian ships it for ensurepip."""
    path = tmp_path / 'python-wheels' / 'pip-23.0.1-py3-none-any.whl'
    path.parent.mkdir()
    with zipfile.ZipFile(str(path), 'w') as wheel:
        wheel.writestr('pip/__init__.py', '')
        wheel.writestr('pip/__main__.py', '')
    return str(path)


def params(tmp_path, archives, **overrides):
    values = dict(app_root=str(tmp_path / 'srv' / 'shop'), release='v1', wheelhouse='5f0c2b7e91d04a6c',
                  wheelhouse_archive=archives[1], src_archive=archives[0], python='/usr/bin/python3', user=USER,
                  shared=[dict(path='media', owner=USER, group=GROUP, mode='0750')], writable=['staticfiles'],
                  command_timeout=30.0)
    values.update(overrides)
    return values


def module(host, check=False, pip_wheel='', **args):
    args.update(_ansible_check_mode=check)
    original = _release_stage.run

    def run(params, check_mode):
        return original(params, check_mode, runner=host, pip_wheel_path=pip_wheel)

    _release_stage.run, saved = run, _release_stage.run
    try:
        with set_module_args(args):
            with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as caught:
                release_stage.main()
    finally:
        _release_stage.run = saved
    return caught.value.args[0], isinstance(caught.value, AnsibleFailJson)


def test_a_first_staging_lays_the_release_out(tmp_path, archives, pip_wheel):
    host = Host()
    result, failed = module(host, pip_wheel=pip_wheel, **params(tmp_path, archives))
    assert not failed, result
    root = tmp_path / 'srv' / 'shop'
    release = root / 'releases' / 'v1'
    assert result['changed']
    assert result['changes'] == ['app_root', 'code', 'links', 'release', 'releases', 'shared', 'venv', 'wheelhouse',
                                 'wheels', 'writable']
    assert (release / 'app.py').is_file() and (release / '.graceful-release').read_text() == 'v1\n'
    wheel = str(root / 'wheelhouse' / '5f0c2b7e91d04a6c' / 'six-1.16.0-py2.py3-none-any.whl')
    assert result['wheels'] == [wheel]
    assert not (root / 'wheelhouse' / '5f0c2b7e91d04a6c.unpacking').exists()
    # No ensurepip: the venv's interpreter runs pip unpacked from the host's wheel of it, which installs into the venv.
    assert host.ran('-m venv') == [['/usr/bin/python3', '-m', 'venv', '--without-pip', str(release / 'venv')]]
    pip = host.ran('install')[0]
    unpacked = root / 'wheelhouse' / '.pip-23.0.1-py3-none-any'
    assert pip[:3] == [str(release / 'venv' / 'bin' / 'python'), str(unpacked / 'pip'), 'install']
    assert (unpacked / 'pip' / '__main__.py').is_file()
    assert pip[-1] == wheel and '--no-index' in pip and '--no-deps' in pip and '--only-binary=:all:' in pip
    assert (release / 'venv' / '.graceful-wheels').read_text() == 'six-1.16.0-py2.py3-none-any.whl\n'
    # The source's empty media directory gave way to the link to the shared one.
    assert os.readlink(str(release / 'media')) == str(root / 'shared' / 'media')
    assert oct((root / 'shared' / 'media').stat().st_mode & 0o777) == '0o750'
    assert oct((release / 'staticfiles').stat().st_mode & 0o777) == '0o755'


def test_a_second_staging_changes_nothing_and_runs_nothing(tmp_path, archives):
    module(Host(), **params(tmp_path, archives))
    host = Host()
    result, failed = module(host, **params(tmp_path, archives))
    assert not failed and not result['changed'] and result['changes'] == []
    assert host.commands == []
    assert result['msg'] == 'release v1 was staged already'


def test_what_the_host_has_is_not_asked_for_again(tmp_path, archives):
    module(Host(), **params(tmp_path, archives))
    # The action plugin leaves out the archives whose markers it found.
    result, failed = module(Host(), **params(tmp_path, archives, wheelhouse_archive=None, src_archive=None))
    assert not failed and not result['changed'], result


def test_check_mode_reports_the_staging_and_leaves_no_trace(tmp_path, archives):
    host = Host()
    result, failed = module(host, check=True, **params(tmp_path, archives))
    assert not failed and result['changed']
    assert set(result['changes']) >= {'app_root', 'code', 'venv', 'wheelhouse'}
    assert host.commands == [] and not (tmp_path / 'srv').exists()


def test_check_mode_after_a_staging_reports_nothing(tmp_path, archives):
    module(Host(), **params(tmp_path, archives))
    result, failed = module(Host(), check=True, **params(tmp_path, archives))
    assert not failed and not result['changed'], result


def test_a_venv_an_earlier_version_made_is_installed_into_never_removed(tmp_path, archives):
    module(Host(), **params(tmp_path, archives))
    venv = tmp_path / 'srv' / 'shop' / 'releases' / 'v1' / 'venv'
    (venv / '.graceful-wheels').unlink()
    (venv / 'kept').write_text('')
    host = Host()
    result, failed = module(host, **params(tmp_path, archives))
    assert not failed and result['changes'] == ['wheels']
    assert host.ran('-m venv') == [] and len(host.ran('install')) == 1
    assert (venv / 'kept').exists() and (venv / '.graceful-wheels').exists()


def test_the_next_release_runs_the_pip_unpacked_for_the_first(tmp_path, archives, pip_wheel):
    module(Host(), pip_wheel=pip_wheel, **params(tmp_path, archives))
    unpacked = tmp_path / 'srv' / 'shop' / 'wheelhouse' / '.pip-23.0.1-py3-none-any'
    (unpacked / 'pip' / 'compiled-by-its-first-run').write_text('')
    host = Host()
    result, failed = module(host, pip_wheel=pip_wheel, **params(tmp_path, archives, release='v2', src_archive=archives[0]))
    assert not failed and 'code' in result['changes'], result
    assert host.ran('install')[0][1] == str(unpacked / 'pip')
    assert (unpacked / 'pip' / 'compiled-by-its-first-run').exists()


def test_without_a_pip_wheel_the_venv_gets_its_own_pip(tmp_path, archives):
    host = Host()
    result, failed = module(host, pip_wheel='', **params(tmp_path, archives))
    assert not failed, result
    venv = str(tmp_path / 'srv' / 'shop' / 'releases' / 'v1' / 'venv')
    assert host.ran('-m venv') == [['/usr/bin/python3', '-m', 'venv', venv]]
    assert host.ran('install')[0][:4] == [venv + '/bin/python', '-m', 'pip', 'install']


def test_an_interrupted_wheelhouse_unpack_is_redone(tmp_path, archives):
    wheelhouse = tmp_path / 'srv' / 'shop' / 'wheelhouse' / '5f0c2b7e91d04a6c'
    wheelhouse.mkdir(parents=True)
    (wheelhouse / 'Django-4.0-py3-none-any.whl').write_bytes(b'PK')  # a stray wheel of the interrupted unpack
    (tmp_path / 'srv' / 'shop' / 'wheelhouse' / '5f0c2b7e91d04a6c.unpacking').mkdir()
    result, failed = module(Host(), **params(tmp_path, archives))
    assert not failed, result
    assert sorted(os.listdir(str(wheelhouse))) == ['.complete', 'six-1.16.0-py2.py3-none-any.whl']


def test_pip_refusing_a_wheel_fails_with_the_wheels_for_the_message(tmp_path, archives):
    result, failed = module(Host(pip_fails=True), **params(tmp_path, archives))
    assert failed and result['pip_failed'] and not result['changed']
    assert result['wheels'][0].endswith('six-1.16.0-py2.py3-none-any.whl')
    assert 'is not a supported wheel on this platform' in result['msg']
    # Nothing is marked installed: the next run installs again.
    assert not (tmp_path / 'srv' / 'shop' / 'releases' / 'v1' / 'venv' / '.graceful-wheels').exists()


def test_a_command_that_hangs_is_named_and_nothing_is_marked(tmp_path, archives):
    result, failed = module(Host(hang=True), **params(tmp_path, archives, command_timeout=2.0))
    assert failed and 'pip_failed' not in result
    assert result['msg'].startswith('tar --extract --file ') and 'did not finish within 2s' in result['msg']
    assert not (tmp_path / 'srv' / 'shop' / 'wheelhouse' / '5f0c2b7e91d04a6c').exists()


@pytest.mark.parametrize('where', ['shared/media', 'releases/v1/staticfiles'])
def test_a_link_the_app_put_in_place_of_its_directory_is_refused_and_not_followed(tmp_path, archives, where):
    module(Host(), **params(tmp_path, archives))
    root = tmp_path / 'srv' / 'shop'
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir(mode=0o700)
    path = root / where
    path.rmdir()
    path.symlink_to(elsewhere)
    result, failed = module(Host(), **params(tmp_path, archives))
    assert failed and result['msg'] == '%s is not a directory but a link or a file: refused, nothing was followed' % path
    assert oct(elsewhere.stat().st_mode & 0o777) == '0o700'


def test_a_directory_with_files_where_the_shared_link_goes_is_refused_by_name(tmp_path, archives):
    module(Host(), **params(tmp_path, archives, shared=[]))
    release = tmp_path / 'srv' / 'shop' / 'releases' / 'v1'
    (release / 'media' / 'logo.png').write_bytes(b'')
    result, failed = module(Host(), **params(tmp_path, archives))
    assert failed and result['msg'].startswith('%s is a directory with files in it' % (release / 'media'))
    assert (release / 'media' / 'logo.png').exists()


def test_a_missing_wheelhouse_without_its_archive_is_named(tmp_path, archives):
    result, failed = module(Host(), **params(tmp_path, archives, wheelhouse_archive=None))
    assert failed and result['msg'].startswith('wheelhouse 5f0c2b7e91d04a6c is not on the host')


@pytest.mark.parametrize('option, value, message', [
    ('release', '../etc', "release='../etc': use 1 to 64 letters"),
    ('wheelhouse', 'a/b', "wheelhouse='a/b': use 1 to 64 letters"),
    ('app_root', 'srv/shop', "app_root='srv/shop': use an absolute path"),
    ('user', 'root --x', "user='root --x': a user name"),
    ('writable', ['static/../..'], "writable[0]='static/../..': a path inside the release"),
    ('shared', [dict(path='/etc')], "shared[0].path='/etc': a path inside the release"),
    ('shared', [dict(path='media', mode='rwx')], "shared[0].mode='rwx': octal digits"),
    ('shared', [dict(path='media', owner='x y')], "shared[0].owner='x y': a user name"),
])
def test_names_that_become_paths_or_owners_are_checked_first(tmp_path, archives, option, value, message):
    host = Host()
    result, failed = module(host, **params(tmp_path, archives, **{option: value}))
    assert failed and result['msg'].startswith(message), result['msg']
    assert host.commands == [] and not (tmp_path / 'srv').exists()


def test_the_pip_wheel_is_the_system_pythons_alone(tmp_path, pip_wheel):
    newer = tmp_path / 'python-wheels' / 'pip-23.10.1-py3-none-any.whl'
    newer.write_bytes(b'PK')
    patterns = (str(tmp_path / 'python-wheels' / 'pip-*-py3-none-any.whl'),)
    python3 = tmp_path / 'python3.11'
    python3.write_text('')
    (tmp_path / 'python3').symlink_to(python3)
    assert _release_stage.pip_wheel_for(str(tmp_path / 'python3'), str(python3), patterns) == str(newer)
    assert _release_stage.pip_wheel_for('/opt/python3.13/bin/python3', str(python3), patterns) == ''
    assert _release_stage.pip_wheel_for(str(python3), str(python3), (str(tmp_path / 'none-*.whl'),)) == ''


def test_an_app_root_on_a_linked_volume_is_followed(tmp_path, archives):
    volume = tmp_path / 'data'
    volume.mkdir()
    (tmp_path / 'srv').symlink_to(volume)
    result, failed = module(Host(), **params(tmp_path, archives))
    assert not failed, result
    assert (volume / 'shop' / 'releases' / 'v1' / '.graceful-release').is_file()

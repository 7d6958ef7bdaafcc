# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import json
import os
import stat
import tarfile
import zipfile

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.wsgi.plugins.filter import source


# -- links --------------------------------------------------------------------------------------------------------


def make_source(top, links):
    """A source directory with app.py, static/app.css and the links {name: target}."""
    (top / 'static').mkdir(parents=True)
    (top / 'app.py').write_text('app = None\n')
    (top / 'static' / 'app.css').write_text('body{}\n')
    for name, target in links.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, str(top / name))
    return str(top)


def test_links_inside_the_source_are_fine(tmp_path):
    top = make_source(tmp_path / 'src', {'static/current.css': 'app.css', 'assets': 'static', 'config/app.py': '../app.py',
                                         'assets2': './static/../static', 'dangling': 'not-there'})
    assert source.source_links(top) == []


@pytest.mark.parametrize('name, target', [
    ('link', '/etc/shadow'),
    ('cfg', os.path.expanduser('~/.ssh/id_ed25519')),
    ('static/up', '../..'),
    ('static/deep/up', '../../../etc/passwd'),
    ('here', '..'),
])
def test_a_link_that_leaves_the_source_is_named_with_its_target(tmp_path, name, target):
    top = make_source(tmp_path / 'src', {name: target})
    assert source.source_links(top) == ['%s -> %s' % (name, target)]


def test_an_absolute_link_into_the_source_itself_is_outside_where_it_lands(tmp_path):
    top = make_source(tmp_path / 'src', {})
    os.symlink(os.path.join(top, 'app.py'), os.path.join(top, 'abs'))
    assert source.source_links(top) == ['abs -> %s' % os.path.join(top, 'app.py')]


def test_a_link_resolved_through_another_link_is_followed_as_the_kernel_would(tmp_path):
    # 'root' is the source's top; 'root/../x' is outside although 'x' alone would read as inside.
    top = make_source(tmp_path / 'src', {'root': '.', 'escape': 'root/../x', 'chain': 'hop', 'hop': '/etc'})
    assert source.source_links(top) == ['chain -> hop', 'escape -> root/../x', 'hop -> /etc']


def test_a_loop_of_links_is_refused(tmp_path):
    top = make_source(tmp_path / 'src', {'a': 'b', 'b': 'a'})
    assert source.source_links(top) == ['a -> b', 'b -> a']


def test_a_linked_directory_is_not_walked_into(tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    os.symlink('/etc/shadow', str(outside / 'secret'))
    top = make_source(tmp_path / 'src', {'lib': str(outside)})
    assert source.source_links(top) == ['lib -> %s' % outside]


def tar_of(path, members, mode='w:gz'):
    """A tar archive of members (name, kind, target): kind file, dir, sym or hard."""
    with tarfile.open(str(path), mode) as archive:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == 'dir':
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif kind == 'file':
                data = b'x\n'
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == 'sym' else tarfile.LNKTYPE
                info.linkname = target
                archive.addfile(info)
    return str(path)


def test_an_archive_with_links_inside_is_fine(tmp_path):
    archive = tar_of(tmp_path / 'app.tar.gz', [('app-1/', 'dir', ''), ('app-1/app.py', 'file', ''),
                                               ('app-1/static', 'dir', ''), ('app-1/current.py', 'sym', 'app.py'),
                                               ('app-1/again.py', 'hard', 'app-1/app.py'), ('./app-1/s', 'sym', 'static')])
    assert source.source_links(archive) == []


def test_an_archive_names_its_links_out_and_its_members_out(tmp_path):
    archive = tar_of(tmp_path / 'app.tar', [('app.py', 'file', ''), ('link', 'sym', '/etc/shadow'),
                                            ('up', 'sym', '../../etc'), ('hard', 'hard', '/etc/shadow'),
                                            ('../evil.py', 'file', ''), ('/abs.py', 'file', ''),
                                            ('d', 'sym', '/etc'), ('through', 'hard', 'd/shadow')], mode='w')
    assert source.source_links(archive) == [
        '../evil.py (a member outside the archive)', '/abs.py (a member outside the archive)', 'd -> /etc',
        'link -> /etc/shadow', 'up -> ../../etc', 'hard => /etc/shadow', 'through => d/shadow']


def test_a_zip_archive_names_its_links_out(tmp_path):
    path = str(tmp_path / 'app.zip')
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('app.py', 'app = None\n')
        for name, target in (('cfg', '/root/.ssh/id_ed25519'), ('ok', 'app.py')):
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
        archive.writestr('../x.py', '')
    assert source.source_links(path) == ['../x.py (a member outside the archive)', 'cfg -> /root/.ssh/id_ed25519']


def test_a_file_that_is_no_archive_this_reads_or_a_missing_path_has_no_links(tmp_path):
    other = tmp_path / 'app.tar.zst'
    other.write_bytes(b'\x28\xb5\x2f\xfd not read here')
    assert source.source_links(str(other)) == []
    assert source.source_links(str(tmp_path / 'missing')) == []


def test_source_links_wants_a_path():
    with pytest.raises(AnsibleFilterError, match='source_links: expected the path'):
        source.source_links('')


# -- requirements -------------------------------------------------------------------------------------------------


def check(tmp_path, text, extra=None, files=None):
    for name, content in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    (tmp_path / 'requirements.txt').write_text(text)
    return source.requirements_check(str(tmp_path / 'requirements.txt'), str(tmp_path), extra)


def test_plain_pinned_requirements_with_comments_and_markers_pass_unhashed(tmp_path):
    result = check(tmp_path, '# the shop\n\nDjango==4.2.30  # LTS\nrequests[socks]>=2.31\n'
                             'tomli==2.0.1; python_version < "3.11"\n--only-binary :all:\n--prefer-binary\n',
                   extra=['gunicorn==27.0.1'])
    assert result == dict(hashed=False, refused=[], names=['django', 'requests', 'tomli'],
                          extra_packages=['gunicorn==27.0.1'])


def test_hashed_requirements_with_continuations_pass_hashed(tmp_path):
    result = check(tmp_path, 'idna==3.7 \\\n    --hash=sha256:aaaa \\\n    --hash sha256:bbbb\n'
                             'Gunicorn==27.0.1 --hash=sha256:cccc\n')
    assert result['hashed'] and result['refused'] == [] and result['names'] == ['gunicorn', 'idna']


# Each makes pip fetch from somewhere else than the index by name and version: refused, naming the file and line.
@pytest.mark.parametrize('line, why', [
    ('https://example.com/idna-3.7-py3-none-any.whl', 'a direct URL'),
    ('git+https://example.com/idna.git@v3.7#egg=idna', 'a direct URL'),
    ('file:///tmp/idna.whl', 'a direct URL'),
    ('idna @ https://example.com/idna-3.7.tar.gz', 'a direct reference (name @ URL)'),
    ('-f https://example.com/wheels/', 'another place to find packages (-f)'),
    ('--find-links=/tmp/wheels', 'another place to find packages (--find-links)'),
    ('--find-links /tmp/wheels', 'another place to find packages (--find-links)'),
    ('-i https://evil.example/simple', 'another index (-i)'),
    ('--index-url https://evil.example/simple', 'another index (--index-url)'),
    ('--extra-index-url=https://evil.example/simple', 'another index (--extra-index-url)'),
    ('-e .', 'an editable requirement (a path or a URL) (-e)'),
    ('--editable git+https://example.com/x.git#egg=x', 'an editable requirement'),
    ('--trusted-host example.com', 'a host to trust without TLS'),
    ('./libs/idna', 'not a package name and version (a path, an archive or a URL)'),
    ('idna-3.7-py3-none-any.whl', 'an archive file, not a package name'),
    ('idna==3.7 --global-option=--x', 'a requirement with the option --global-option'),
    ('--use-pep517', 'an option other than -r, -c'),
    ('${TOKEN_URL}', 'an environment variable'),
    ('-r https://example.com/requirements.txt', 'a requirements file at a URL'),
])
def test_lines_that_fetch_elsewhere_are_refused_naming_the_line(tmp_path, line, why):
    result = check(tmp_path, '# pinned\nidna==3.7\n%s\n' % line)
    assert len(result['refused']) == 1
    assert result['refused'][0].startswith("requirements.txt line 3: %r is " % line)
    assert why in result['refused'][0]


def test_a_refused_line_after_a_continuation_is_named_by_its_first_line(tmp_path):
    result = check(tmp_path, 'idna==3.7 \\\n  ; python_version > "3"\n--index-url \\\n  https://evil.example/simple\n')
    assert result['refused'] == ["requirements.txt line 3: '--index-url   https://evil.example/simple' is another "
                                 "index (--index-url): the wheelhouse is built from the package index pip is "
                                 "configured with, by name and version only"]


def test_included_files_are_read_and_named(tmp_path):
    result = check(tmp_path, '-r requirements/base.txt\n-c constraints.txt\n',
                   files={'requirements/base.txt': 'idna==3.7\n-r more.txt\n',
                          'requirements/more.txt': 'six==1.16.0\nhttp://example.com/x.whl\n',
                          'constraints.txt': 'idna<4\n--find-links /tmp\n'})
    assert result['names'] == ['idna', 'six']
    assert result['refused'] == [
        "requirements/more.txt line 2: 'http://example.com/x.whl' is a direct URL: name a package and its version instead",
        "constraints.txt line 2: '--find-links /tmp' is another place to find packages (--find-links): the wheelhouse "
        "is built from the package index pip is configured with, by name and version only"]


def test_an_included_file_outside_the_source_or_missing_is_refused(tmp_path):
    (tmp_path / 'outside.txt').write_text('idna==3.7\n')
    source_dir = tmp_path / 'src'
    source_dir.mkdir()
    (source_dir / 'requirements.txt').write_text('-r ../outside.txt\n-r missing.txt\n')
    result = source.requirements_check(str(source_dir / 'requirements.txt'), str(source_dir))
    assert result['refused'] == ["requirements.txt line 1: '-r ../outside.txt' is a file outside the source",
                                 "requirements.txt line 2: '-r missing.txt' is a file that does not exist"]


def test_an_include_loop_is_read_once(tmp_path):
    result = check(tmp_path, 'idna==3.7\n-r requirements.txt\n')
    assert result['refused'] == [] and result['names'] == ['idna']


def test_with_hashes_every_requirement_needs_one(tmp_path):
    result = check(tmp_path, 'idna==3.7 --hash=sha256:aaaa\nsix==1.16.0\n')
    assert result['hashed']
    assert result['refused'] == ["requirements.txt line 2: 'six==1.16.0' is a requirement without --hash, while the "
                                 "others carry hashes"]


def test_require_hashes_alone_asks_every_requirement_for_one(tmp_path):
    result = check(tmp_path, '--require-hashes\nsix==1.16.0\n')
    assert result['hashed'] and result['refused'][0].startswith("requirements.txt line 2: 'six==1.16.0'")


def test_with_hashes_an_extra_package_is_left_to_the_requirements_pin_or_refused(tmp_path):
    text = 'gunicorn==27.0.1 --hash=sha256:aaaa\nidna==3.7 --hash=sha256:bbbb\n'
    assert check(tmp_path, text, extra=['Gunicorn==27.0.1'])['extra_packages'] == []
    (tmp_path / 'requirements.txt').write_text('idna==3.7 --hash=sha256:bbbb\n')
    refused = source.requirements_check(str(tmp_path / 'requirements.txt'), str(tmp_path), ['gunicorn==27.0.1'],
                                        'graceful_gunicorn_package')['refused']
    assert refused == ["graceful_gunicorn_package: 'gunicorn==27.0.1' is not in the requirements, which carry hashes: "
                       "add it there with its --hash"]


def test_an_extra_package_must_be_a_name_and_version(tmp_path):
    refused = check(tmp_path, 'idna==3.7\n', extra=['https://example.com/g.whl', 'g @ https://example.com/g.whl'])['refused']
    assert refused == ["extra_packages: 'https://example.com/g.whl' is not a package name and version",
                       "extra_packages: 'g @ https://example.com/g.whl' is not a package name and version"]


def test_a_missing_or_binary_requirements_file_is_refused(tmp_path):
    assert source.requirements_check(str(tmp_path / 'requirements.txt'), str(tmp_path))['refused'] == [
        "requirements.txt: 'requirements.txt' is a file that does not exist"]
    (tmp_path / 'requirements.txt').write_bytes(b'\xff\xfe')
    assert source.requirements_check(str(tmp_path / 'requirements.txt'))['refused'] == [
        "requirements.txt: 'requirements.txt' is not UTF-8 text"]


def test_a_long_line_is_shortened_in_the_message(tmp_path):
    line = 'https://example.com/' + 'x' * 300
    refused = check(tmp_path, line + '\n')['refused'][0]
    assert line not in refused and '...' in refused and len(refused) < 250


# -- wheel_mismatch ---------------------------------------------------------------------------------------------------

HOST_311 = {'version': '3.11.2', 'tags': ['cp311-cp311-manylinux_2_17_x86_64', 'cp311-abi3-manylinux_2_17_x86_64',
                                          'py3-none-any', 'py311-none-any']}
CP312_WHEEL = '/cache/ab12/MarkupSafe-2.1.5-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl'
PURE_WHEEL = '/cache/ab12/idna-3.7-py3-none-any.whl'


def test_a_wheel_for_another_python_is_named_with_both_python_versions():
    message = source.wheel_mismatch([CP312_WHEEL, PURE_WHEEL], HOST_311, '3.12.1', '/usr/bin/python3', '/opt/py312/bin/python')
    assert 'MarkupSafe-2.1.5-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl' in message
    assert 'idna' not in message
    assert "host's /usr/bin/python3 (Python 3.11.2)" in message
    assert 'built by /opt/py312/bin/python (Python 3.12.1)' in message
    assert 'set release_controller_python to a Python 3.11' in message


def test_the_host_python_may_come_as_the_json_it_printed():
    message = source.wheel_mismatch([CP312_WHEEL], json.dumps(HOST_311), '3.12.1')
    assert 'cannot install: MarkupSafe' in message


def test_a_wheel_any_of_whose_compressed_tags_matches_is_accepted():
    abi3 = '/cache/cryptography-42.0.0-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl'
    host = dict(HOST_311, tags=HOST_311['tags'] + ['cp39-abi3-manylinux2014_x86_64'])
    message = source.wheel_mismatch([abi3, PURE_WHEEL], host, '3.11.2', pip_message='ERROR: disk full\n  later line')
    assert message.startswith('pip could not install the wheelhouse')
    assert message.endswith('ERROR: disk full later line')


@pytest.mark.parametrize('host_python', ['', 'Traceback: no module named packaging', None, ['x']])
def test_a_host_python_that_could_not_be_asked_still_gives_pip_s_message(host_python):
    message = source.wheel_mismatch([CP312_WHEEL], host_python, '', pip_message='not a supported wheel on this platform')
    assert 'Python unknown (it did not run)' in message
    assert 'a Python that could not be asked' in message
    assert message.endswith('not a supported wheel on this platform')


def test_a_file_that_is_no_wheel_name_is_named():
    message = source.wheel_mismatch(['/cache/notes.whl'], HOST_311, '3.11.2')
    assert 'notes.whl (not a wheel file name)' in message

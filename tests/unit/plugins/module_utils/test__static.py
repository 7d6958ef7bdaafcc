# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.graceful.wsgi.plugins.module_utils import _static

STATIC = {'/static/': 'staticfiles'}
SECRET = 'root-only-secret-5e1f'
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (chown)')


@pytest.fixture
def app(tmp_path):
    """An app root with releases v1 and v2, each with hashed assets and an unhashed robots.txt."""
    root = tmp_path / 'srv' / 'shop'
    for release, digest in (('v1', 'aaaa1111'), ('v2', 'bbbb2222')):
        static = root / 'releases' / release / 'staticfiles'
        (static / 'css').mkdir(parents=True)
        (static / 'css' / ('app.%s.css' % digest)).write_text('body { color: %s }\n' % release)
        (static / 'admin' / 'js').mkdir(parents=True)
        (static / 'admin' / 'js' / 'core.js').write_text('// the same in every release\n')
        (static / 'robots.txt').write_text('# robots of %s\n' % release)
    # Outside the app: what a symlink of the app user could point to.
    (tmp_path / 'secret').write_text(SECRET)
    return root


def source(app, release='v2'):
    return app / 'releases' / release / 'staticfiles'


def shared(app):
    return app / 'shared' / 'static' / 'static'


def tree(path):
    """{relative path: (type, content or link target, mode)} of everything below ``path``."""
    found = {}
    for top, dirs, files in os.walk(str(path)):
        for name in dirs + files:
            full = os.path.join(top, name)
            status = os.lstat(full)
            if stat.S_ISLNK(status.st_mode):
                found[os.path.relpath(full, str(path))] = ('link', os.readlink(full), None)
            elif stat.S_ISREG(status.st_mode):
                with open(full) as handle:
                    found[os.path.relpath(full, str(path))] = ('file', handle.read(), stat.S_IMODE(status.st_mode))
            else:
                found[os.path.relpath(full, str(path))] = (_static.kind(status.st_mode), None,
                                                           stat.S_IMODE(status.st_mode))
    return found


def run(app, release='v2', prune=True, check_mode=False, static=None):
    result, warnings = _static.run(str(app), static or STATIC, release, prune, check_mode)
    json.dumps(result)  # what a module can return
    return result, warnings


# ---------------------------------------------------------------- validate

def test_validate_gives_each_prefix_its_shared_directory():
    mappings = _static.validate({'/static/': 'staticfiles', '/media/css': 'assets/css/', '/a.b_c-d/': 'x'}, 'v2')
    assert mappings == [
        _static.Mapping('/a.b_c-d/', 'x', ('x',), ('a.b_c-d',)),
        _static.Mapping('/media/css', 'assets/css/', ('assets', 'css'), ('media', 'css')),
        _static.Mapping('/static/', 'staticfiles', ('staticfiles',), ('static',)),
    ]
    assert _static.shared_path('/srv/shop', mappings[1]) == '/srv/shop/shared/static/media/css'
    assert _static.shared_path('/srv/shop', mappings[2]) == '/srv/shop/shared/static/static'


@pytest.mark.parametrize('prefix', ['/', '', 'static/', '//', '/static//', '/../x/', '/x/../', '/./', '/x/.', '/a b/',
                                    '/static/\n', '/stätic/', '/s*/', '/static\\x/', 7])
def test_validate_refuses_a_prefix_naming_it(prefix):
    with pytest.raises(_static.StaticError) as caught:
        _static.validate({prefix: 'staticfiles'})
    assert str(caught.value).startswith('static key %r: not a URL path prefix such as /static/' % (prefix,))


@pytest.mark.parametrize('directory', ['/srv/shop/staticfiles', '../staticfiles', 'a/../b', '..', '.', 'a/./b', '',
                                       'a//b', 'static files', 'staticfiles\n', 5, None, ['staticfiles']])
def test_validate_refuses_a_directory_naming_the_key(directory):
    with pytest.raises(_static.StaticError) as caught:
        _static.validate({'/static/': directory})
    assert str(caught.value).startswith("static['/static/'] = %r: not a directory relative to the release" % (
        directory,))


@pytest.mark.parametrize('release', ['', '.', '..', '../v1', 'v1/x', '.hidden', '-v1', 'v 1', 'v1\n'])
def test_validate_refuses_a_release_name(release):
    with pytest.raises(_static.StaticError, match=r'^release=.*: not a release name'):
        _static.validate(STATIC, release)


def test_validate_refuses_prefixes_that_share_or_nest_their_directories():
    with pytest.raises(_static.StaticError) as caught:
        _static.validate({'/static': 'a', '/static/': 'b'})
    assert str(caught.value) == "static keys '/static' and '/static/': both name the shared directory shared/static/static"
    with pytest.raises(_static.StaticError) as caught:
        _static.validate({'/media/': 'a', '/media/css/': 'b'})
    assert str(caught.value) == ("static keys '/media/' and '/media/css/': one shared directory would be inside the "
                                 "other, whose pruning would remove its files")
    assert len(_static.validate({'/media/': 'a', '/mediacss/': 'b'})) == 2


def test_validate_refuses_nothing_to_manage():
    with pytest.raises(_static.StaticError, match=r'^static must map at least one URL prefix'):
        _static.validate({})


# ---------------------------------------------------------------- merge

def test_a_merge_makes_the_shared_directories_and_copies_the_release(app):
    result, warnings = run(app, 'v1')
    assert warnings == []
    assert result['changed'] and result['dirs'] == {'/static/': str(shared(app))}
    assert result['copied'] == ['static/admin/js/core.js', 'static/css/app.aaaa1111.css', 'static/robots.txt']
    assert result['copied_count'] == 3 and result['removed'] == [] and result['skipped'] == []
    assert result['msg'] == ('copied 3 files of release v1 (0 unchanged), removed 0 entries; shared directories: '
                             '/static/ %s' % shared(app))
    assert tree(shared(app)) == {
        'admin': ('directory', None, 0o755), 'admin/js': ('directory', None, 0o755),
        'admin/js/core.js': ('file', '// the same in every release\n', 0o644),
        'css': ('directory', None, 0o755), 'css/app.aaaa1111.css': ('file', 'body { color: v1 }\n', 0o644),
        'robots.txt': ('file', '# robots of v1\n', 0o644)}
    for path in (app / 'shared', app / 'shared' / 'static', shared(app)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    # The release's modification time is kept, for the web server's Last-Modified.
    original = source(app, 'v1') / 'css' / 'app.aaaa1111.css'
    assert (shared(app) / 'css' / 'app.aaaa1111.css').stat().st_mtime_ns == original.stat().st_mtime_ns


@AS_ROOT
def test_what_the_merge_writes_is_roots(app):
    os.chown(str(source(app)), 65534, 65534)
    os.chown(str(source(app) / 'robots.txt'), 65534, 65534)
    os.chmod(str(source(app) / 'robots.txt'), 0o600)
    run(app)
    for top, dirs, files in os.walk(str(app / 'shared')):
        for name in dirs + files:
            status = os.lstat(os.path.join(top, name))
            assert (status.st_uid, status.st_gid) == (0, 0)
            assert stat.S_IMODE(status.st_mode) == (0o755 if name in dirs else 0o644)


def test_a_second_merge_changes_nothing(app):
    run(app, 'v1')
    before = tree(app / 'shared')
    result, _warnings = run(app, 'v1')
    assert not result['changed'] and result['copied'] == [] and result['removed'] == []
    assert result['unchanged_count'] == 3
    assert tree(app / 'shared') == before
    assert _static.plan_merge(str(app), _static.validate(STATIC), 'v1').actions == []


def test_the_next_release_adds_its_files_and_keeps_the_previous_ones(app):
    run(app, 'v1')
    result, _warnings = run(app, 'v2')
    # core.js is the same in both releases: not rewritten. robots.txt is unhashed: the merged release's wins.
    assert result['copied'] == ['static/css/app.bbbb2222.css', 'static/robots.txt']
    assert result['unchanged_count'] == 1 and result['removed'] == []
    files = tree(shared(app))
    assert files['css/app.aaaa1111.css'][1] == 'body { color: v1 }\n'
    assert files['css/app.bbbb2222.css'][1] == 'body { color: v2 }\n'
    assert files['robots.txt'][1] == '# robots of v2\n'


def test_check_mode_reports_the_merge_and_changes_nothing(app):
    before = tree(app)
    result, _warnings = run(app, 'v1', check_mode=True)
    assert result['changed'] and result['copied_count'] == 3
    assert result['msg'].startswith('would copy 3 files of release v1 (0 unchanged), would remove 0 entries')
    assert tree(app) == before and not (app / 'shared').exists()
    run(app, 'v1')
    before = tree(app)
    result, _warnings = run(app, 'v2', check_mode=True)
    assert result['copied'] == ['static/css/app.bbbb2222.css', 'static/robots.txt'] and result['changed']
    assert tree(app) == before


def test_a_symlink_in_the_release_is_skipped_and_its_target_never_copied(app, tmp_path):
    secret = tmp_path / 'secret'
    os.symlink(str(secret), str(source(app) / 'leak.css'))
    os.symlink(str(tmp_path), str(source(app) / 'css' / 'everything'))
    os.symlink('app.bbbb2222.css', str(source(app) / 'css' / 'alias.css'))
    result, _warnings = run(app)
    assert result['skipped'] == [{'path': 'staticfiles/css/alias.css', 'type': 'symlink'},
                                 {'path': 'staticfiles/css/everything', 'type': 'symlink'},
                                 {'path': 'staticfiles/leak.css', 'type': 'symlink'}]
    assert result['skipped_count'] == 3
    assert 'skipped 3 symlinks, special files or unsafe names of the release' in result['msg']
    assert SECRET not in json.dumps(result) and str(secret) not in json.dumps(result)
    files = tree(app / 'shared')
    assert not [path for path in files if 'leak' in path or 'everything' in path or 'alias' in path]
    assert not [path for path, (kind, content, _mode) in files.items() if content and SECRET in content]
    # Skipped entries provide nothing: the next run changes nothing either.
    assert not run(app)[0]['changed']


@pytest.mark.timeout(10)
def test_a_fifo_in_the_release_is_skipped_without_blocking(app):
    os.mkfifo(str(source(app) / 'css' / 'pipe.css'))
    os.mkfifo(str(source(app) / 'pipe.txt'))
    result, _warnings = run(app)
    assert result['skipped'] == [{'path': 'staticfiles/css/pipe.css', 'type': 'FIFO'},
                                 {'path': 'staticfiles/pipe.txt', 'type': 'FIFO'}]
    assert 'css/pipe.css' not in tree(shared(app))


@pytest.mark.timeout(10)
def test_a_file_swapped_for_a_fifo_or_a_symlink_after_the_plan_is_skipped_without_blocking(app, tmp_path):
    mappings = _static.validate(STATIC, 'v2')
    plan = _static.plan_merge(str(app), mappings, 'v2')
    (source(app) / 'robots.txt').unlink()
    os.mkfifo(str(source(app) / 'robots.txt'))
    (source(app) / 'css' / 'app.bbbb2222.css').unlink()
    os.symlink(str(tmp_path / 'secret'), str(source(app) / 'css' / 'app.bbbb2222.css'))
    os.rename(str(source(app) / 'admin'), str(tmp_path / 'admin'))
    os.symlink(str(tmp_path / 'admin'), str(source(app) / 'admin'))
    done = _static.apply(str(app), plan)
    assert done['copied'] == []
    assert done['skipped'] == [{'path': 'staticfiles/admin/js/core.js', 'type': 'changed while read'},
                               {'path': 'staticfiles/css/app.bbbb2222.css', 'type': 'symlink'},
                               {'path': 'staticfiles/robots.txt', 'type': 'FIFO'}]
    assert SECRET not in str(done)
    assert sorted(tree(shared(app))) == ['admin', 'admin/js', 'css']


@pytest.mark.timeout(10)
def test_digest_at_a_fifo_or_a_symlink_is_none_without_blocking(tmp_path):
    os.mkfifo(str(tmp_path / 'fifo'))
    os.symlink(str(tmp_path / 'file'), str(tmp_path / 'link'))
    (tmp_path / 'file').write_bytes(b'abc')
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _static.digest_at(fd, 'fifo') is None
        assert _static.digest_at(fd, 'link') is None
        assert _static.digest_at(fd, 'missing') is None
        assert _static.digest_at(fd, 'file') == (3, 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
    finally:
        os.close(fd)


@AS_ROOT
def test_a_hard_link_to_another_users_file_is_skipped(app, tmp_path):
    os.chown(str(source(app)), 65534, 65534)
    os.link(str(tmp_path / 'secret'), str(source(app) / 'stolen.txt'))  # the secret is root's
    own = source(app) / 'own.txt'
    own.write_text('the app user links its own file')
    os.chown(str(own), 65534, 65534)
    os.link(str(own), str(source(app) / 'own-too.txt'))
    result, _warnings = run(app)
    assert result['skipped'] == [{'path': 'staticfiles/stolen.txt', 'type': 'hard link to a file of uid 0'}]
    assert 'own.txt' in tree(shared(app)) and 'own-too.txt' in tree(shared(app))
    assert 'stolen.txt' not in tree(shared(app))


def test_a_name_with_a_control_character_is_skipped_and_shown_escaped(app):
    (source(app) / 'bad\nname.css').write_text('x')
    (source(app).joinpath(os.fsdecode(b'latin1-\xe9.css'))).write_text('x')
    result, _warnings = run(app)
    assert result['skipped'] == [
        {'path': 'staticfiles/bad\\x0aname.css', 'type': 'name with a control character or bytes that are not UTF-8'},
        {'path': 'staticfiles/latin1-\\xe9.css', 'type': 'name with a control character or bytes that are not UTF-8'}]
    assert sorted(tree(shared(app))) == ['admin', 'admin/js', 'admin/js/core.js', 'css', 'css/app.bbbb2222.css',
                                         'robots.txt']


def test_a_symlink_in_the_shared_directory_is_replaced_not_followed(app, tmp_path):
    run(app, 'v1')
    victim = tmp_path / 'victim'
    victim.write_text('must stay')
    (shared(app) / 'robots.txt').unlink()
    os.symlink(str(victim), str(shared(app) / 'robots.txt'))
    os.symlink(str(victim), str(shared(app) / 'css' / 'app.bbbb2222.css'))
    result, _warnings = run(app, 'v2')
    assert result['copied'] == ['static/css/app.bbbb2222.css', 'static/robots.txt']
    assert victim.read_text() == 'must stay'
    assert tree(shared(app))['robots.txt'] == ('file', '# robots of v2\n', 0o644)
    assert tree(shared(app))['css/app.bbbb2222.css'] == ('file', 'body { color: v2 }\n', 0o644)


def test_a_symlinked_directory_in_the_shared_directory_is_replaced_not_followed(app, tmp_path):
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (app / 'shared' / 'static' / 'static').mkdir(parents=True)
    os.symlink(str(elsewhere), str(shared(app) / 'css'))
    result, _warnings = run(app, 'v2')
    assert 'static/css' in result['removed']
    assert list(elsewhere.iterdir()) == []
    assert tree(shared(app))['css'] == ('directory', None, 0o755)


@pytest.mark.timeout(10)
def test_a_fifo_a_hard_link_or_a_directory_in_the_way_is_replaced(app, tmp_path):
    run(app, 'v1')
    victim = tmp_path / 'victim'
    victim.write_text('# robots of v1\n')
    (shared(app) / 'robots.txt').unlink()
    os.link(str(victim), str(shared(app) / 'robots.txt'))  # same content, but a second name of another file
    os.mkfifo(str(shared(app) / 'css' / 'app.bbbb2222.css'))
    (shared(app) / 'admin' / 'js' / 'core.js').unlink()
    (shared(app) / 'admin' / 'js' / 'core.js').mkdir()
    (shared(app) / 'admin' / 'js' / 'core.js' / 'inside').write_text('x')
    result, _warnings = run(app, 'v1')
    assert result['copied'] == ['static/admin/js/core.js', 'static/robots.txt']
    # The FIFO is where release v2, still present, has a file: kept until v2 is merged.
    assert result['removed'] == ['static/admin/js/core.js/inside', 'static/admin/js/core.js/']
    assert victim.read_text() == '# robots of v1\n' and victim.stat().st_nlink == 1
    assert tree(shared(app))['admin/js/core.js'] == ('file', '// the same in every release\n', 0o644)
    result, _warnings = run(app, 'v2')
    assert tree(shared(app))['css/app.bbbb2222.css'] == ('file', 'body { color: v2 }\n', 0o644)


def test_a_file_where_the_release_has_a_directory_is_replaced(app):
    run(app, 'v1')
    (shared(app) / 'admin' / 'js').rename(shared(app) / 'gone')
    (shared(app) / 'admin' / 'js').write_text('in the way')
    result, _warnings = run(app, 'v1', prune=False)
    assert result['removed'] == ['static/admin/js'] and result['copied'] == ['static/admin/js/core.js']
    assert tree(shared(app))['admin/js'] == ('directory', None, 0o755)


def test_wrong_modes_are_fixed(app):
    run(app, 'v1')
    os.chmod(str(shared(app) / 'css'), 0o777)
    os.chmod(str(shared(app) / 'robots.txt'), 0o666)
    result, _warnings = run(app, 'v1')
    assert result['changed'] and result['copied'] == ['static/robots.txt']
    assert tree(shared(app))['css'][2] == 0o755 and tree(shared(app))['robots.txt'][2] == 0o644
    assert not run(app, 'v1')[0]['changed']


@AS_ROOT
def test_a_shared_directory_of_another_owner_is_taken_back(app):
    run(app, 'v1')
    os.chown(str(shared(app) / 'css'), 65534, 65534)
    os.chown(str(app / 'shared' / 'static'), 65534, 65534)
    assert run(app, 'v1')[0]['changed']
    for path in (shared(app) / 'css', app / 'shared' / 'static'):
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)


def test_no_directory_is_made_that_no_file_needs(app, tmp_path):
    (source(app) / 'only-links').mkdir()
    os.symlink(str(tmp_path / 'secret'), str(source(app) / 'only-links' / 'x'))
    (source(app) / 'empty').mkdir()
    run(app)
    assert not (shared(app) / 'only-links').exists() and not (shared(app) / 'empty').exists()
    assert not run(app)[0]['changed']


def test_lists_are_capped_and_counted(app):
    for index in range(60):
        (source(app) / ('f%02d.js' % index)).write_text(str(index))
    result, _warnings = run(app)
    assert len(result['copied']) == _static.SHOWN == 50 and result['copied_count'] == 63


def test_a_missing_static_directory_names_the_path_and_the_hook(app):
    with pytest.raises(_static.StaticError) as caught:
        run(app, static={'/static/': 'staticfiles', '/media/': 'media'})
    assert str(caught.value) == (
        'static (graceful_static) maps /static/ to staticfiles, but ... does not exist in release v2: does an '
        'after_stage hook (collectstatic) create it?'.replace('/static/ to staticfiles', '/media/ to media').replace(
            '...', str(app / 'releases' / 'v2' / 'media')))


@pytest.mark.parametrize('make, message', [
    (lambda app: None, 'release=v9: {app}/releases/v9 does not exist'),
    (lambda app: os.symlink(str(app / 'releases' / 'v1'), str(app / 'releases' / 'v9')),
     'release=v9: {app}/releases/v9 is a symlink; it is never followed'),
    (lambda app: (app / 'releases' / 'v9').mkdir() or os.symlink(
        str(source(app, 'v1')), str(app / 'releases' / 'v9' / 'staticfiles')),
     "static['/static/']: {app}/releases/v9/staticfiles is a symlink; it is never followed"),
    (lambda app: (app / 'releases' / 'v9').mkdir() or (app / 'releases' / 'v9' / 'staticfiles').write_text('x'),
     "static['/static/']: {app}/releases/v9/staticfiles is a regular file, not a directory"),
])
def test_a_release_that_cannot_be_read_fails_naming_the_path(app, make, message):
    make(app)
    with pytest.raises(_static.StaticError) as caught:
        run(app, 'v9')
    assert str(caught.value) == message.format(app=app)
    assert not (app / 'shared' / 'static' / 'static' / 'css').exists()


def test_a_missing_app_root_or_a_shared_file_fails_naming_the_path(app, tmp_path):
    with pytest.raises(_static.StaticError, match=r'^app_root=.*/nowhere: does not exist$'):
        run(tmp_path / 'nowhere')
    (app / 'shared').write_text('x')
    with pytest.raises(_static.StaticError) as caught:
        run(app)
    assert str(caught.value) == 'app_root=%s: %s is a regular file, not a directory' % (app, app / 'shared')


# ---------------------------------------------------------------- prune

def test_prune_removes_what_no_release_present_provides_and_empty_directories(app):
    (source(app, 'v1') / 'v1only' / 'deep').mkdir(parents=True)
    (source(app, 'v1') / 'v1only' / 'deep' / 'x.js').write_text('x')
    run(app, 'v1')
    run(app, 'v2')
    (shared(app) / 'css' / '.graceful-static-0123.tmp').write_text('left by a run that died')
    os.mkdir(str(shared(app) / 'stray-empty'))
    # Another prefix's directory and a file next to the prefixes' directories are not managed.
    os.makedirs(str(app / 'shared' / 'static' / 'media'))
    (app / 'shared' / 'static' / 'media' / 'upload.png').write_text('x')
    (app / 'shared' / 'static' / 'README').write_text('x')
    # What release v1 provides stays while v1 is present.
    assert run(app, 'v2')[0]['removed'] == ['static/css/.graceful-static-0123.tmp', 'static/stray-empty/']
    (app / 'releases' / 'v1' / 'staticfiles' / 'css' / 'app.aaaa1111.css').unlink()
    result, _warnings = run(app, None)
    assert result['removed'] == ['static/css/app.aaaa1111.css'] and result['copied'] == []
    assert result['msg'].startswith('removed 1 entry;')
    # keep_releases removed v1: its assets go with it.
    os.rename(str(app / 'releases' / 'v1'), str(app / 'v1-gone'))
    result, _warnings = run(app, 'v2')
    assert result['removed'] == ['static/v1only/deep/x.js', 'static/v1only/deep/', 'static/v1only/']
    assert sorted(tree(shared(app))) == ['admin', 'admin/js', 'admin/js/core.js', 'css', 'css/app.bbbb2222.css',
                                         'robots.txt']
    assert (app / 'shared' / 'static' / 'media' / 'upload.png').exists()
    assert (app / 'shared' / 'static' / 'README').exists()
    assert not run(app, 'v2')[0]['changed']


def test_prune_only_counts_directories_named_as_releases_and_not_symlinks(app, tmp_path):
    run(app, 'v1')
    run(app, 'v2')
    os.rename(str(app / 'releases' / 'v1'), str(tmp_path / 'v1'))
    os.symlink(str(tmp_path / 'v1'), str(app / 'releases' / 'v1'))
    os.rename(str(tmp_path / 'v1'), str(app / 'releases' / '.v1'))
    result, _warnings = run(app, None)
    assert result['removed'] == ['static/css/app.aaaa1111.css']


def test_prune_keeps_a_file_the_release_provides_even_where_the_shared_one_is_wrong(app, tmp_path):
    run(app, 'v2')
    (shared(app) / 'robots.txt').unlink()
    os.symlink(str(tmp_path / 'secret'), str(shared(app) / 'robots.txt'))
    plan = _static.plan_prune(str(app), _static.validate(STATIC))
    assert plan.actions == []


def test_prune_in_check_mode_reports_and_changes_nothing(app):
    run(app, 'v1')
    os.rename(str(app / 'releases' / 'v1'), str(app / 'v1-gone'))
    before = tree(app)
    result, _warnings = run(app, 'v2', check_mode=True)
    assert result['changed']
    assert result['copied'] == ['static/css/app.bbbb2222.css', 'static/robots.txt']
    assert result['removed'] == ['static/css/app.aaaa1111.css']
    assert tree(app) == before
    assert run(app, 'v2')[0]['removed'] == ['static/css/app.aaaa1111.css']


def test_no_prune_removes_nothing(app):
    run(app, 'v1')
    os.rename(str(app / 'releases' / 'v1'), str(app / 'v1-gone'))
    result, _warnings = run(app, 'v2', prune=False)
    assert result['removed'] == [] and (shared(app) / 'css' / 'app.aaaa1111.css').exists()


def test_a_prefix_no_release_has_is_not_pruned_but_warned_about(app):
    run(app, 'v1')
    result, warnings = run(app, None, static={'/static/': 'collected'})
    assert result['removed'] == [] and (shared(app) / 'css' / 'app.aaaa1111.css').exists()
    assert warnings == ["static['/static/']: no release in %s has the directory collected; nothing pruned from %s" % (
        app / 'releases', shared(app))]
    result, warnings = run(app, None, check_mode=True, static={'/static/': 'collected'})
    assert result['removed'] == [] and len(warnings) == 1


def test_plan_prune_alone(app):
    run(app, 'v1')
    (shared(app) / 'old.js').write_text('x')
    plan = _static.plan_prune(str(app), _static.validate(STATIC))
    assert plan.actions == [('remove', ('shared', 'static', 'static', 'old.js'), None)]
    assert plan.removed() == ['static/old.js']
    done = _static.apply(str(app), plan)
    assert done == dict(copied=[], removed=['static/old.js'], skipped=[], changed=True)


def test_shown_escapes_what_a_terminal_would_interpret():
    assert _static.shown(('static', 'a\x1b[31mb', 'c\x7f')) == 'static/a\\x1b[31mb/c\\x7f'
    assert _static.shown(('é', os.fsdecode(b'\xff'))) == 'é/\\xff'


@pytest.mark.parametrize('name, safe', [('app.css', True), ('font awesome.woff2', True), ('é.css', True),
                                        ('a\tb', False), ('a\nb', False), ('\x9b', False), ('.', False),
                                        ('..', False), (os.fsdecode(b'\xff'), False), ('', False)])
def test_safe_name(name, safe):
    assert _static.safe_name(name) is safe

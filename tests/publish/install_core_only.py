"""Install the collection as an AWX execution environment or a new user gets it, for the fleet tests to run.

* A venv with ansible-core and ansible-runner only (requirements/runner.txt) plus the execution environment's Python
  requirements (requirements.txt), keyed by both files' sha256: no ``ansible`` package, no other collection.
* The collection's tarball, built by ``ansible-galaxy collection build`` from the tracked files, installed with that
  venv's ``ansible-galaxy collection install --offline`` into a fresh collections directory, where the collections
  galaxy.yml declares were copied first from the project venv's pinned ``ansible`` package (Galaxy is unreachable).
  A dependency that is declared but not copied, or copied at a version the declaration refuses, fails the install.

The rollout scenario runs deploys with that venv and that directory alone (ANSIBLE_COLLECTIONS_PATH): a module, a
filter or a role the collection uses without declaring it fails there. Prints ``name=path`` lines for make.

Usage: install_core_only.py BUILD_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
# The copy of the tracked files that publish-check builds from (this directory is on sys.path when run as a script).
from check_collection import CheckFailed, copy_tree, tracked_files
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCKS = [REPO / 'requirements' / 'runner.txt', REPO / 'requirements.txt']
STEP_SECONDS = 600


def run(argv, **kwargs):
    """Run one step, bounded; a failure names the step and shows its output."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_SECONDS, stdin=subprocess.DEVNULL,
                              check=False, **kwargs)
    except subprocess.TimeoutExpired:
        sys.exit('install_core_only: %s did not finish within %d s' % (' '.join(map(str, argv)), STEP_SECONDS))
    if done.returncode != 0:
        sys.exit('install_core_only: %s failed (exit %d):\n%s%s' % (
            ' '.join(map(str, argv)), done.returncode, done.stdout[-3000:], done.stderr[-3000:]))
    return done.stdout


def runner_venv(build: Path) -> Path:
    key = hashlib.sha256(b''.join(lock.read_bytes() for lock in LOCKS)).hexdigest()[:8]
    venv = build / ('runner-' + key)
    if not (venv / 'bin' / 'ansible-runner').exists():
        for old in build.glob('runner-*'):
            if old.name != 'runner-collections':
                shutil.rmtree(old)
        run([sys.executable, '-m', 'venv', str(venv)])
        run([str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check']
            + [arg for lock in LOCKS for arg in ('-r', str(lock))])
    return venv


def declared_dependencies() -> dict:
    return yaml.safe_load((REPO / 'galaxy.yml').read_text()).get('dependencies') or {}


def pinned_collection(fqcn: str) -> Path:
    """Where the project venv's ``ansible`` package keeps the collection ``fqcn``."""
    import ansible_collections  # the project venv's, from the pinned ansible package

    for top in ansible_collections.__path__:
        path = Path(top, *fqcn.split('.'))
        if (path / 'MANIFEST.json').is_file():
            return path
    sys.exit('install_core_only: galaxy.yml declares %s, which the pinned ansible package does not have' % fqcn)


def copy_dependencies(collections: Path) -> list:
    copied = []
    for fqcn, spec in declared_dependencies().items():
        source = pinned_collection(fqcn)
        version = json.loads((source / 'MANIFEST.json').read_text())['collection_info']['version']
        if spec not in ('*', '') and Version(version) not in SpecifierSet(spec):
            sys.exit('install_core_only: galaxy.yml declares %s %s; the pinned ansible package has %s' % (fqcn, spec, version))
        shutil.copytree(source, collections / 'ansible_collections' / Path(*fqcn.split('.')), symlinks=True)
        copied.append('%s %s' % (fqcn, version))
    return copied


def build_tarball(venv: Path, output: Path) -> Path:
    """The tarball of the tracked files, as a release would be built from a clean checkout."""
    with tempfile.TemporaryDirectory(prefix='graceful-wsgi-build-') as scratch:
        tree = Path(scratch) / 'wsgi'
        tree.mkdir()
        try:
            copy_tree(tracked_files(), tree)
        except CheckFailed as exc:
            sys.exit('install_core_only: %s' % exc)
        output.mkdir(parents=True, exist_ok=True)
        for old in output.glob('graceful-wsgi-*.tar.gz'):
            old.unlink()
        run([str(venv / 'bin' / 'ansible-galaxy'), 'collection', 'build', '--output-path', str(output), str(tree)])
    (tarball,) = output.glob('graceful-wsgi-*.tar.gz')
    return tarball


def main() -> None:
    build = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / '.build').resolve()
    build.mkdir(parents=True, exist_ok=True)
    venv = runner_venv(build)
    tarball = build_tarball(venv, build / 'dist')
    collections = build / 'runner-collections'
    shutil.rmtree(collections, ignore_errors=True)
    (collections / 'ansible_collections').mkdir(parents=True)
    copied = copy_dependencies(collections)
    # Only this directory: not ~/.ansible/collections (an older copy may sit there), not the project venv's.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false')
    run([str(venv / 'bin' / 'ansible-galaxy'), 'collection', 'install', '--offline', '-p', str(collections), str(tarball)],
        env=env)
    listed = run([str(venv / 'bin' / 'ansible-galaxy'), 'collection', 'list', '--format', 'json', '-p', str(collections)],
                 env=env)
    installed = sorted(name for where, found in json.loads(listed).items()
                       if where.startswith(str(collections)) for name in found)
    expected = sorted(['graceful.wsgi'] + list(declared_dependencies()))
    if installed != expected:
        sys.exit('install_core_only: %s holds %s; expected %s' % (collections, installed, expected))
    print('install_core_only: %s (%d KB) installed with ansible-core alone, with %s' % (
        tarball.name, tarball.stat().st_size // 1024, ', '.join(copied) or 'no dependency'), file=sys.stderr)
    print('GRACEFUL_RUNNER=%s' % (venv / 'bin' / 'ansible-runner'))
    print('GRACEFUL_RUNNER_COLLECTIONS=%s' % collections)


if __name__ == '__main__':
    main()

"""make ee-check: the execution environment definition gives the build context it should, without building an image.

    .venv/bin/python tests/publish/check_execution_environment.py

1. ansible-builder comes from its own venv, .build/ansible-builder-<sha256[:8] of requirements/ansible-builder.txt>,
   made here when missing, so that its pins never meet the project's.
2. execution-environment.yml pins the ansible-core of requirements/dev.txt and an ansible-runner 2.4.x;
   requirements.yml installs the collection's tarball (galaxy.yml's version) and galaxy.yml's dependencies;
   meta/execution-environment.yml names requirements.txt and bindep.txt.
3. The collection's tarball is built into .build/ee (where execution-environment.yml takes it from).
4. `ansible-builder create` writes a context to a temporary directory: its Containerfile, and the galaxy, Python
   and system requirements and the tarball under _build/, are checked.
5. As the image's galaxy stage would, the context's requirements.yml is installed, offline (galaxy.yml's
   dependencies are taken from the project's venv, as Galaxy is out of reach), and ansible-builder's own
   introspection reads the installed collection: it must find every line of requirements.txt and bindep.txt
   as the collection's.

Every step is bounded in time; a failure names the step and what was wrong. No registry, no image.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / 'requirements' / 'ansible-builder.txt'
BUILD = ROOT / '.build'
TARBALL_DIR = BUILD / 'ee'
EE_FILE = ROOT / 'execution-environment.yml'
COLLECTION = 'graceful.wsgi'
# Debian 12's python3: the EE builds the wheelhouse the hosts install, with its own interpreter.
TARGET_PYTHON = '3.11'
RUNNER_SERIES = re.compile(r'\Aansible-runner==2\.4\.[0-9]+\Z')
PROJECT_BIN = Path(sys.executable).parent


class CheckFailed(Exception):
    pass


def run(step, argv, timeout, cwd=ROOT, env=None):
    """Run argv bounded by timeout seconds (its whole process group is killed past it); its output, or
    CheckFailed naming the step, the exit code and the last lines of output."""
    try:
        process = subprocess.Popen([str(arg) for arg in argv], cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    except OSError as error:
        raise CheckFailed('%s: cannot run %s: %s' % (step, argv[0], error))
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
        raise CheckFailed('%s: no end after %d s (%s); last output: %s'
                          % (step, timeout, ' '.join(str(arg) for arg in argv[:4]), tail(output)))
    if process.returncode != 0:
        raise CheckFailed('%s: exit code %d: %s' % (step, process.returncode, tail(output)))
    return output


def tail(output, lines=8):
    kept = [line.strip() for line in (output or '').splitlines() if line.strip()][-lines:]
    return ' | '.join(kept)[-1500:] if kept else '(no output)'


def builder_venv():
    """The venv of requirements/ansible-builder.txt, made when missing or left incomplete."""
    lock_id = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:8]
    venv = BUILD / ('ansible-builder-' + lock_id)
    complete = venv / '.complete'
    if not complete.exists():
        for old in BUILD.glob('ansible-builder-*'):
            shutil.rmtree(str(old))
        BUILD.mkdir(exist_ok=True)
        run('create the ansible-builder venv %s' % venv.relative_to(ROOT), [sys.executable, '-m', 'venv', venv], 120)
        run('install %s into %s' % (LOCK.relative_to(ROOT), venv.relative_to(ROOT)),
            [venv / 'bin' / 'python', '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
             '-r', LOCK], 600)
        complete.write_text(LOCK.read_text())
    return venv


def load_yaml(venv, *paths):
    """YAML files as Python data, read by the builder venv's PyYAML (this script needs nothing but the stdlib)."""
    code = 'import json, sys, yaml; print(json.dumps([yaml.safe_load(open(p)) for p in sys.argv[1:]]))'
    return json.loads(run('read %s' % ', '.join(str(Path(p).name) for p in paths),
                          [venv / 'bin' / 'python', '-c', code] + list(paths), 60))


def dev_pin(package):
    for line in (ROOT / 'requirements' / 'dev.txt').read_text().splitlines():
        name, equals, version = line.partition('==')
        if equals and name.strip().lower() == package:
            return version.strip()
    raise CheckFailed('requirements/dev.txt pins no %s' % package)


def requirement_lines(path):
    """The lines of a pip or bindep requirements file that name something (comments and blanks out)."""
    lines = (line.split('#', 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def check_definitions(venv):
    ee, galaxy, requirements, meta = load_yaml(venv, EE_FILE, ROOT / 'galaxy.yml', ROOT / 'requirements.yml',
                                               ROOT / 'meta' / 'execution-environment.yml')
    deps = ee.get('dependencies') or {}
    core = 'ansible-core==' + dev_pin('ansible-core')
    expect(ee.get('version') == 3, 'execution-environment.yml: version is %r, not 3' % ee.get('version'))
    expect((deps.get('ansible_core') or {}).get('package_pip') == core,
           'execution-environment.yml: dependencies.ansible_core.package_pip is %r; requirements/dev.txt has %s'
           % ((deps.get('ansible_core') or {}).get('package_pip'), core))
    runner = (deps.get('ansible_runner') or {}).get('package_pip') or ''
    expect(RUNNER_SERIES.match(runner), 'execution-environment.yml: dependencies.ansible_runner.package_pip is %r, '
           'not ansible-runner==2.4.x' % runner)
    for key, name in (('galaxy', 'requirements.yml'), ('python', 'requirements.txt'), ('system', 'bindep.txt')):
        expect(deps.get(key) == name, 'execution-environment.yml: dependencies.%s is %r, not %s'
               % (key, deps.get(key), name))
    python_path = (deps.get('python_interpreter') or {}).get('python_path', '')
    expect(python_path.endswith('python' + TARGET_PYTHON), 'execution-environment.yml: '
           'dependencies.python_interpreter.python_path is %r, not a Python %s (the targets\' Python, which the '
           'wheelhouse is built for)' % (python_path, TARGET_PYTHON))

    tarball = 'graceful-wsgi-%s.tar.gz' % galaxy['version']
    wanted = [{'name': 'collections/' + tarball, 'type': 'file'}] + [
        {'name': name, 'version': version} for name, version in sorted((galaxy.get('dependencies') or {}).items())]
    got = (requirements or {}).get('collections')
    expect(got == wanted, 'requirements.yml: collections are %s; galaxy.yml (version %s, dependencies %s) wants %s'
           % (json.dumps(got), galaxy['version'], json.dumps(galaxy.get('dependencies')), json.dumps(wanted)))
    expect(meta == {'version': 1, 'dependencies': {'python': 'requirements.txt', 'system': 'bindep.txt'}},
           'meta/execution-environment.yml is %s, not version 1 naming requirements.txt and bindep.txt'
           % json.dumps(meta))
    return dict(ee=ee, galaxy=galaxy, tarball=tarball, core=core, runner=runner)


def build_tarball(facts):
    """The collection's tarball in .build/ee, alone there (an older version would be copied into the context too)."""
    TARBALL_DIR.mkdir(parents=True, exist_ok=True)
    for old in TARBALL_DIR.glob('graceful-wsgi-*.tar.gz'):
        old.unlink()
    run('ansible-galaxy collection build', [PROJECT_BIN / 'ansible-galaxy', 'collection', 'build', '--force',
                                            '--output-path', TARBALL_DIR, ROOT], 180)
    tarball = TARBALL_DIR / facts['tarball']
    expect(tarball.is_file(), 'ansible-galaxy collection build made no %s' % tarball.relative_to(ROOT))
    with tarfile.open(str(tarball)) as archive:
        members = set(archive.getnames())
    missing = sorted({'meta/execution-environment.yml', 'requirements.txt', 'bindep.txt'} - members)
    expect(not missing, '%s lacks %s (galaxy.yml build_ignore?): an EE would not see its dependencies'
           % (tarball.relative_to(ROOT), ', '.join(missing)))


def check_context(venv, context, facts):
    run('ansible-builder create', [venv / 'bin' / 'ansible-builder', 'create', '--file', EE_FILE, '--context',
                                   context, '--output-filename', 'Containerfile', '-v1'], 120)
    containerfile = context / 'Containerfile'
    expect(containerfile.is_file(), 'ansible-builder create wrote no %s' % containerfile)
    build = context / '_build'
    for name in ('requirements.yml', 'requirements.txt', 'bindep.txt'):
        copied = build / name
        expect(copied.is_file() and copied.read_bytes() == (ROOT / name).read_bytes(),
               'the context has no copy of %s as _build/%s' % (name, name))
    expect((build / 'collections' / facts['tarball']).is_file(),
           'the context has no _build/collections/%s (execution-environment.yml additional_build_files)'
           % facts['tarball'])
    text = containerfile.read_text()
    base = facts['ee']['images']['base_image']['name']
    for line in ('ARG EE_BASE_IMAGE="%s"' % base,
                 'ARG PYCMD="%s"' % facts['ee']['dependencies']['python_interpreter']['python_path'],
                 'ARG ANSIBLE_INSTALL_REFS="%s %s"' % (facts['core'], facts['runner']),
                 'COPY _build /build',
                 'COPY _build/requirements.txt requirements.txt',
                 'COPY _build/bindep.txt bindep.txt'):
        expect(line in text.splitlines(), 'the Containerfile has no line %r' % line)
    expect(re.search(r'^RUN .*ansible-galaxy collection install .*-r requirements\.yml', text, re.M),
           'the Containerfile installs no collection from requirements.yml')
    expect(re.search(r'^RUN .*introspect\.py introspect --user-pip=requirements\.txt --user-bindep=bindep\.txt',
                     text, re.M), 'the Containerfile does not introspect with requirements.txt and bindep.txt')
    return sorted(str(path.relative_to(context)) for path in context.rglob('*') if path.is_file())


def installed_collection(namespace, name):
    """Where the project's venv has a collection (the ansible package ships community.general)."""
    for entry in sys.path:
        candidate = Path(entry or '.') / 'ansible_collections' / namespace / name
        if (candidate / 'MANIFEST.json').is_file():
            return candidate
    raise CheckFailed('the project venv has no %s.%s to stand in for Galaxy (make venv)' % (namespace, name))


def check_introspection(venv, context, work, facts):
    collections = work / 'collections'
    for full_name in sorted(facts['galaxy'].get('dependencies') or {}):
        namespace, name = full_name.split('.')
        link = collections / 'ansible_collections' / namespace / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(installed_collection(namespace, name))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false',
               ANSIBLE_NOCOLOR='true')
    # The galaxy stage's working directory is the context's _build: requirements.yml's tarball path is read from it.
    run('ansible-galaxy collection install -r requirements.yml, offline, in the context\'s _build',
        [PROJECT_BIN / 'ansible-galaxy', 'collection', 'install', '--offline', '-r', 'requirements.yml',
         '-p', collections], 180, cwd=context / '_build', env=env)
    manifest = collections / 'ansible_collections' / 'graceful' / 'wsgi' / 'MANIFEST.json'
    expect(manifest.is_file(), 'the context\'s requirements.yml installed no %s' % COLLECTION)
    version = json.loads(manifest.read_text())['collection_info']['version']
    expect(version == facts['galaxy']['version'], 'the context installed %s %s, not galaxy.yml\'s %s'
           % (COLLECTION, version, facts['galaxy']['version']))

    out = work / 'introspect'
    run('ansible-builder introspect', [venv / 'bin' / 'python', context / '_build' / 'scripts' / 'introspect.py',
                                       'introspect', collections,
                                       '--user-pip=%s' % (context / '_build' / 'requirements.txt'),
                                       '--user-bindep=%s' % (context / '_build' / 'bindep.txt'),
                                       '--write-pip=%s' % (out / 'requirements.txt'),
                                       '--write-bindep=%s' % (out / 'bindep.txt')], 120)
    found = {}
    for kind, name in (('python', 'requirements.txt'), ('system', 'bindep.txt')):
        from_collection = set()
        for line in (out / name).read_text().splitlines():
            requirement, source = (line.split('  # from collection ', 1) + [''])[:2]
            if COLLECTION in [part.strip() for part in source.split(',')]:
                from_collection.add(requirement.strip())
        missing = [line for line in requirement_lines(ROOT / name) if line not in from_collection]
        expect(not missing, 'ansible-builder\'s introspection of the installed %s found no %s of %s (through '
               'meta/execution-environment.yml): %s' % (COLLECTION, kind, name, ', '.join(missing)))
        found[kind] = len(from_collection)
    return found


def main():
    started = time.monotonic()
    try:
        expect(LOCK.is_file(), '%s is missing' % LOCK.relative_to(ROOT))
        venv = builder_venv()
        builder_version = run('ansible-builder --version', [venv / 'bin' / 'ansible-builder', '--version'], 60).strip()
        facts = check_definitions(venv)
        build_tarball(facts)
        work = Path(tempfile.mkdtemp(prefix='graceful-ee-check-'))
        try:
            context = work / 'context'
            files = check_context(venv, context, facts)
            found = check_introspection(venv, context, work, facts)
        finally:
            shutil.rmtree(str(work), ignore_errors=True)
    except CheckFailed as error:
        print('ee-check FAILED: %s' % error, file=sys.stderr)
        return 1
    print('ee-check: ansible-builder %s wrote a build context in %.0f s: %s. The Containerfile builds on %s with '
          'Python %s, %s and %s; _build/ holds requirements.yml (%s from %s, and galaxy.yml\'s dependencies), '
          'requirements.txt and bindep.txt as in the repository. Installed offline from the context, %s brings '
          'through meta/execution-environment.yml %d Python and %d system requirement(s) to ansible-builder\'s '
          'introspection. No image was built.'
          % (builder_version, time.monotonic() - started, ', '.join(files),
             facts['ee']['images']['base_image']['name'], TARGET_PYTHON, facts['core'], facts['runner'], COLLECTION,
             facts['tarball'], COLLECTION, found['python'], found['system']))
    return 0


if __name__ == '__main__':
    sys.exit(main())

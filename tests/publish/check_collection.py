"""Build the collection's tarball as a publisher would and prove that Galaxy / Automation Hub import it cleanly.

Run with the project venv, from anywhere:  .venv/bin/python tests/publish/check_collection.py [--keep] [--verbose]

1. Copies the files git knows (`git ls-files -co --exclude-standard`, as `make sanity` does) into a temporary
   directory, plants what a work tree collects there (ansible-lint's .ansible/, .pytest_cache/, __pycache__ and a
   stray .pyc in plugins/, a .venv/, a .build/, a .github/, a tarball) so that galaxy.yml's build_ignore is
   exercised, and builds the tarball with `ansible-galaxy collection build`.
2. Checks the tarball's members: nothing a user of the collection does not need (tests, molecule, the lock files,
   caches, hidden files, tarballs), and everything they do need (MANIFEST.json and FILES.json from galaxy.yml,
   README.md, COPYING, the changelog, meta/runtime.yml, every role's README.md and meta/argument_specs.yml, every
   module, every tracked file of plugins/, roles/, playbooks/, meta/ and changelogs/). Fails above SIZE_BOUND_KB.
3. Runs galaxy-importer (the code behind Galaxy's and Automation Hub's imports) on the tarball, from its own venv
   .build/galaxy-importer-<sha8 of requirements/galaxy-importer.txt>, created here when missing. Its config keeps
   what needs no network and no container: ansible-doc of every plugin, ansible-lint (offline, production
   profile), the role READMEs, the changelog and the required tags. ansible-test is off: `make sanity` runs it.
   Any ERROR or WARNING line in the import log fails the check.

Every step is bounded by a timeout; a failure names the step and what was wrong. Exit status 0 when all passes.
"""

import argparse
import fcntl
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

REPO = Path(__file__).resolve().parents[2]
IMPORTER_LOCK = REPO / "requirements" / "galaxy-importer.txt"
BUILD_DIR = REPO / ".build"

# The tarball of 0.1.0 is about 280 KB; a bound well above it still catches a venv, a cache or test data shipped.
SIZE_BOUND_KB = 512

GIT_TIMEOUT = 60
BUILD_TIMEOUT = 180
VENV_TIMEOUT = 900
# galaxy-importer runs ansible-doc for each plugin type and ansible-lint on the whole collection (about a minute
# here); it bounds ansible-lint alone (180 s), so this bounds the rest.
IMPORT_TIMEOUT = 900

# Top-level entries of the work tree that are the project's own tooling, never the collection's content.
KEEP_OUT_TOP = {
    "benchmarks": "benchmarks",
    "demo": "the demo app",
    "molecule": "molecule scenarios",
    "tests": "tests",
    "requirements": "the lock files (requirements/)",
    "Makefile": "the Makefile",
}
# Directory names that are caches or tool state wherever they are.
KEEP_OUT_DIRS = {
    ".ansible": "ansible-lint's .ansible",
    ".pytest_cache": "pytest's cache",
    ".venv": "a venv",
    ".build": "the build directory",
    ".ci": "the CI scripts",
    "__pycache__": "a __pycache__",
}

# Root files a user needs when they are in the tree: the generated changelog and what an execution environment
# (ansible-builder) reads.
ROOT_FILES_WHEN_PRESENT = ["CHANGELOG.rst", "execution-environment.yml", "requirements.yml", "requirements.txt", "bindep.txt"]
ALWAYS_REQUIRED = ["MANIFEST.json", "FILES.json", "README.md", "COPYING", "meta/runtime.yml",
                   "changelogs/changelog.yaml", "changelogs/config.yaml"]
# Every tracked file under these ships.
SHIPPED_TREES = ("plugins/", "roles/", "playbooks/", "meta/", "changelogs/", "docs/")

# What the build must leave out, planted into the copy (none of them is tracked).
PLANTED = [
    ".ansible/collections/ansible_collections/planted/wsgi/galaxy.yml",
    ".pytest_cache/v/cache/lastfailed",
    "plugins/modules/__pycache__/deploy_lock.cpython-311.pyc",
    "plugins/module_utils/_planted.cpython-311.pyc",
    ".venv/pyvenv.cfg",
    ".build/planted.txt",
    ".github/workflows/planted.yml",
    "planted-0.0.1.tar.gz",
]

IMPORTER_CONFIG = """\
[galaxy-importer]
# What Galaxy checks without network or containers: ansible-doc of every plugin, ansible-lint (offline), the
# readmes, the changelog and the required tags.
run_ansible_doc = True
run_ansible_lint = True
offline_ansible_lint = True
check_changelog = True
check_required_tags = True
# ansible-test sanity runs in a container (local image, docker or OpenShift): off, make sanity runs it.
run_ansible_test = False
ansible_test_local_image = False
local_image_docker = False
infra_osd = False
# Off, the importer's default: 0.4.44 hands the filters' YAML documentation files to flake8 as Python (E999 on
# each); make sanity runs pep8 and pylint on the Python.
run_flake8 = False
# A hub that turns this on refuses versions below 1.0.0.
require_v1_or_greater = False
log_level_main = INFO
tmp_root_dir = {tmp_root}
ansible_local_tmp = {ansible_tmp}
"""

PROBLEM_LINE = re.compile(r"^\s*\[?(ERROR|WARNING|CRITICAL|DEPRECATION WARNING)\]?[: ]")


class CheckFailed(Exception):
    """A step failed; the message names it and what was wrong."""


def say(text=""):
    print(text, flush=True)


def run(argv, *, what, timeout, cwd=None, env=None):
    """Run argv bounded by timeout, killing its whole process group when it runs over. Returns (rc, output)."""
    try:
        proc = subprocess.Popen(
            [str(a) for a in argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
        )
    except OSError as exc:
        raise CheckFailed(f"{what}: cannot run {argv[0]}: {exc}") from exc
    try:
        output = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
        tail = "\n".join(output.splitlines()[-20:])
        raise CheckFailed(f"{what}: not finished within {timeout} s, killed. Last output:\n{tail}") from None
    return proc.returncode, output


def galaxy_yml_field(text, field):
    match = re.search(rf"^{field}:\s*['\"]?([^'\"\s#]+)", text, re.MULTILINE)
    if not match:
        raise CheckFailed(f"galaxy.yml: no top-level '{field}:'")
    return match.group(1)


def tracked_files():
    rc, output = run(["git", "-C", REPO, "ls-files", "-z", "-co", "--exclude-standard"],
                     what="git ls-files", timeout=GIT_TIMEOUT)
    if rc != 0:
        raise CheckFailed(f"git ls-files in {REPO} failed ({rc}): {output.strip()}")
    # A file deleted in the work tree but still in the index is not part of what would be built.
    return sorted(p for p in output.split("\0") if p and os.path.lexists(REPO / p))


def copy_tree(files, dest):
    for rel in files:
        source, target = REPO / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)


def plant(dest):
    for rel in PLANTED:
        path = dest / rel
        if os.path.lexists(path):
            raise CheckFailed(f"cannot plant {rel}: the copy of the tracked files already has it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"planted by tests/publish/check_collection.py: must not ship\n")


def build(src, out, expected_name):
    ansible_galaxy = Path(sys.executable).parent / "ansible-galaxy"
    if not ansible_galaxy.exists():
        raise CheckFailed(f"no ansible-galaxy beside {sys.executable}: run this with the project venv, .venv/bin/python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(out.parent / "ansible-tmp"))
    rc, output = run([ansible_galaxy, "collection", "build", "--output-path", out],
                     what="ansible-galaxy collection build", timeout=BUILD_TIMEOUT, cwd=src, env=env)
    if rc != 0:
        raise CheckFailed(f"ansible-galaxy collection build failed ({rc}):\n{output.strip()}")
    warnings = [line for line in output.splitlines() if PROBLEM_LINE.match(line)]
    if warnings:
        raise CheckFailed("ansible-galaxy collection build warned:\n  " + "\n  ".join(warnings))
    built = sorted(out.iterdir())
    if [p.name for p in built] != [expected_name]:
        raise CheckFailed(f"expected {expected_name} from the build, found {[p.name for p in built]}")
    return built[0]


def keep_out_reason(name):
    """Why a member of the tarball must not ship, or None."""
    parts = name.split("/")
    if parts[0] in KEEP_OUT_TOP:
        return KEEP_OUT_TOP[parts[0]]
    for part in parts:
        if part in KEEP_OUT_DIRS:
            return KEEP_OUT_DIRS[part]
        if part.startswith(".git"):
            return "git's files"
        if part.startswith("."):
            return "a hidden file or directory"
    if name.endswith((".pyc", ".pyo")):
        return "compiled Python"
    if name.endswith((".tar.gz", ".tgz")):
        return "a tarball"
    return None


def check_members(tarball, src, files, meta):
    """The members' problems (a list of lines) and the member count."""
    problems = []
    with tarfile.open(tarball, "r:gz") as archive:
        members = archive.getmembers()
        contents = {m.name: m for m in members}
        manifest = json.load(archive.extractfile("MANIFEST.json")) if "MANIFEST.json" in contents else None
        file_list = json.load(archive.extractfile("FILES.json")) if "FILES.json" in contents else None

    # One line per kept-out directory or file, not one per member under it.
    kept_out = {}
    for name in sorted(contents):
        reason = keep_out_reason(name)
        if reason:
            parts = name.split("/")
            top = next(("/".join(parts[:k]) for k in range(1, len(parts)) if "/".join(parts[:k]) in kept_out), name)
            kept_out.setdefault(top, [reason, 0])[1] += 1
    for name, (reason, count) in kept_out.items():
        problems.append(f"ships {name} ({count} members): {reason}, which is not for a user of the collection")
    for rel in PLANTED:
        if rel in contents:
            problems.append(f"ships the planted {rel}: build_ignore in galaxy.yml does not keep it out")

    required = list(ALWAYS_REQUIRED)
    required += [f for f in ROOT_FILES_WHEN_PRESENT if (src / f).is_file()]
    for role in sorted(p.name for p in (src / "roles").iterdir() if p.is_dir()):
        required += [f"roles/{role}/README.md", f"roles/{role}/meta/argument_specs.yml", f"roles/{role}/meta/main.yml"]
    required += [f"plugins/modules/{p.name}" for p in sorted((src / "plugins" / "modules").glob("*.py"))]
    required += [f for f in files if f.startswith(SHIPPED_TREES) and not keep_out_reason(f)]
    for name in dict.fromkeys(required):
        if name not in contents:
            problems.append(f"does not ship {name}")

    if manifest is not None:
        info = manifest.get("collection_info", {})
        for field in ("namespace", "name", "version"):
            if info.get(field) != meta[field]:
                problems.append(f"MANIFEST.json: {field} is {info.get(field)!r}, galaxy.yml says {meta[field]!r}")
        if info.get("readme") != "README.md":
            problems.append(f"MANIFEST.json: readme is {info.get('readme')!r}, not README.md")
    if file_list is not None:
        listed = {f["name"] for f in file_list.get("files", []) if f.get("ftype") == "file"}
        shipped = {n for n, m in contents.items() if not m.isdir()} - {"MANIFEST.json", "FILES.json"}
        for name in sorted(shipped ^ listed):
            problems.append(f"FILES.json and the tarball disagree on {name}")
    return problems, len(members)


def importer_venv():
    """The venv of the locked galaxy-importer, created when missing; its bin directory."""
    digest = hashlib.sha256(IMPORTER_LOCK.read_bytes()).hexdigest()[:8]
    venv = BUILD_DIR / f"galaxy-importer-{digest}"
    stamp = venv / ".installed"
    if stamp.exists():
        return venv / "bin"
    BUILD_DIR.mkdir(exist_ok=True)
    with open(BUILD_DIR / "galaxy-importer.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return venv / "bin"
        say(f"== creating {venv.relative_to(REPO)} from {IMPORTER_LOCK.relative_to(REPO)}")
        for old in BUILD_DIR.glob("galaxy-importer-*"):
            if old.is_dir():
                shutil.rmtree(old)
        rc, output = run([sys.executable, "-m", "venv", venv], what="creating the galaxy-importer venv",
                         timeout=VENV_TIMEOUT)
        if rc == 0:
            rc, output = run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-input", "-r", IMPORTER_LOCK],
                             what="installing galaxy-importer", timeout=VENV_TIMEOUT)
        if rc != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise CheckFailed(f"could not create {venv} from {IMPORTER_LOCK}:\n{output.strip()}")
        stamp.touch()
    return venv / "bin"


def run_importer(bin_dir, tarball, work):
    """Runs galaxy-importer on tarball; returns (log lines, result dict)."""
    for name in ("importer-tmp", "ansible-tmp", "home", "run"):
        (work / name).mkdir(exist_ok=True)
    config = work / "galaxy-importer.cfg"
    config.write_text(IMPORTER_CONFIG.format(tmp_root=work / "importer-tmp", ansible_tmp=work / "ansible-tmp"))
    # Nothing of the caller's Ansible or importer settings, PYTHONPATH or venv leaks in; HOME is empty so that no
    # ~/.ansible.cfg and no copy of the collection in ~/.ansible/collections is seen.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "GALAXY_IMPORTER_")) and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", HOME=str(work / "home"),
               GALAXY_IMPORTER_CONFIG=str(config), ANSIBLE_NOCOLOR="1", NO_COLOR="1", LANG=env.get("LANG", "C.UTF-8"))
    rc, output = run([bin_dir / "python", "-m", "galaxy_importer.main", tarball], what="galaxy-importer",
                     timeout=IMPORT_TIMEOUT, cwd=work / "run", env=env)
    lines = output.splitlines()
    problems = [line for line in lines if PROBLEM_LINE.match(line) or "Traceback" in line]
    result_file = work / "run" / "importer_result.json"
    if rc != 0 or problems or "Importer processing completed successfully" not in lines or not result_file.exists():
        shown = "\n  ".join(problems or lines[-30:])
        raise CheckFailed(f"galaxy-importer rejected or warned about {tarball.name} (exit {rc}):\n  {shown}")
    return lines, json.loads(result_file.read_text())


def check_import_result(result, src, meta):
    """What galaxy-importer made of the collection: the pages Galaxy would show. Returns (problems, counts)."""
    problems = []
    info = result.get("metadata", {})
    if (info.get("namespace"), info.get("name"), info.get("version")) != (meta["namespace"], meta["name"], meta["version"]):
        problems.append(f"the importer read {info.get('namespace')}.{info.get('name')} {info.get('version')}")
    items = result.get("docs_blob", {}).get("contents", [])
    by_type = {}
    for item in items:
        by_type.setdefault(item["content_type"], {})[item["content_name"]] = item
    for role in sorted(p.name for p in (src / "roles").iterdir() if p.is_dir()):
        item = by_type.get("role", {}).get(role)
        if not item or item.get("readme_file") != "README.md" or not item.get("readme_html"):
            problems.append(f"role {role}: the importer found no README.md page for it")
    for module in sorted(p.stem for p in (src / "plugins" / "modules").glob("*.py")):
        if not by_type.get("module", {}).get(module, {}).get("doc_strings"):
            problems.append(f"module {module}: ansible-doc gave the importer no documentation")
    for kind in ("filter", "test"):
        for sidecar in sorted((src / "plugins" / kind).glob("*.yml")):
            if not by_type.get(kind, {}).get(sidecar.stem, {}).get("doc_strings"):
                problems.append(f"{kind} {sidecar.stem}: ansible-doc gave the importer no documentation")
    counts = {kind: len(names) for kind, names in sorted(by_type.items())}
    return problems, counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (copy, tarball, importer log)")
    parser.add_argument("--verbose", action="store_true", help="print every line of the import log")
    args = parser.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="graceful-wsgi-publish-"))
    try:
        galaxy_yml = (REPO / "galaxy.yml").read_text()
        meta = {field: galaxy_yml_field(galaxy_yml, field) for field in ("namespace", "name", "version")}
        expected = f"{meta['namespace']}-{meta['name']}-{meta['version']}.tar.gz"

        src = work / "ansible_collections" / meta["namespace"] / meta["name"]
        files = tracked_files()
        copy_tree(files, src)
        plant(src)
        out = work / "out"
        out.mkdir()
        tarball = build(src, out, expected)
        size_kb = tarball.stat().st_size / 1024
        say(f"== built {tarball.name} from {len(files)} tracked files and {len(PLANTED)} planted ones")

        problems, member_count = check_members(tarball, src, files, meta)
        say(f"== {tarball.name}: {size_kb:.0f} KB (bound {SIZE_BOUND_KB} KB), {member_count} members")
        if size_kb > SIZE_BOUND_KB:
            problems.append(f"is {size_kb:.0f} KB, above the bound of {SIZE_BOUND_KB} KB")
        absent = [f for f in ROOT_FILES_WHEN_PRESENT if not (src / f).is_file()]
        if absent:
            say(f"   not in the tree, so not required: {', '.join(absent)}")
        if problems:
            raise CheckFailed(f"{tarball.name}:\n  " + "\n  ".join(problems))

        bin_dir = importer_venv()
        say(f"== galaxy-importer ({bin_dir.parent.relative_to(REPO)}) on {tarball.name}")
        lines, result = run_importer(bin_dir, tarball, work)
        for line in lines:
            if args.verbose or not line.startswith("Loading "):
                say(f"   {line}")
        problems, counts = check_import_result(result, src, meta)
        if problems:
            raise CheckFailed("galaxy-importer's result:\n  " + "\n  ".join(problems))

        version = lines[0].rsplit(" ", 1)[-1] if lines and lines[0].startswith("Importing with") else "?"
        found = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        say(f"== check_collection: OK in {time.monotonic() - started:.0f} s")
        say(f"   tarball   {tarball.name}")
        say(f"   size      {size_kb:.0f} KB (bound {SIZE_BOUND_KB} KB)")
        say(f"   members   {member_count}")
        say(f"   importer  galaxy-importer {version}: imported, no ERROR or WARNING line ({found})")
        return 0
    except CheckFailed as exc:
        say(f"== check_collection: FAILED after {time.monotonic() - started:.0f} s: {exc}")
        return 1
    finally:
        if args.keep:
            say(f"   kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

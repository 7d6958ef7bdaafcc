"""Bad deploy inputs are refused on the controller before the lock, each naming the variable (and the link or line).

The real ``ansible-playbook graceful.wsgi.deploy`` (and ``rollback``) of the collection runs against an inventory
whose app and load balancer hosts cannot be reached (127.0.0.2, port 1, over SSH): contacting one fails with
UNREACHABLE and puts it in the play recap. The lock is a file on the lock host, so a run whose recap holds
localhost alone, with no UNREACHABLE, took no lock and touched no host. The control case, a good input, shows that
the same run reaches for the lock host once the checks pass.

What is protected: every host's filesystem (``current`` pointed at ``../../etc``, a release directory outside
``releases/``, a unit or config named with a space or newline), the hosts' secrets (``/etc/shadow`` shipped through a
link), and the hosts' package installs (a requirement fetched from a URL). State left: no lock, nothing unpacked,
packed or built in the controller's caches.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support.ansible_runner import PlaybookRunner

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".build" / "collections"
BIN = Path(sys.executable).parent
PLAYBOOK_SECONDS = 60

INVENTORY = """\
[app]
app1 ansible_host=127.0.0.2 ansible_port=1 ansible_connection=ssh ansible_user=nobody

[lb]
lb1 ansible_host=127.0.0.2 ansible_port=1 ansible_connection=ssh ansible_user=nobody
"""


def write_source(top: Path, requirements: str = "idna==3.7\n") -> Path:
    top.mkdir(parents=True)
    (top / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    (top / "requirements.txt").write_text(requirements)
    (top / "static").mkdir()
    (top / "static" / "app.css").write_text("body{}\n")
    # A link inside the source is fine: shipped as a link.
    os.symlink("app.css", top / "static" / "current.css")
    return top


def linked_out(top: Path) -> Path:
    write_source(top)
    os.symlink("/etc/shadow", top / "link")
    return top


def archive_linked_out(top: Path) -> Path:
    source = linked_out(top / "tree")
    archive = top / "app.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(source, arcname="app-1")
    return archive


def url_requirement(top: Path) -> Path:
    return write_source(top, "idna==3.7\nhttps://example.com/evil-1.0-py3-none-any.whl  # pinned elsewhere\n")


CASES = {
    "release-with-newline": ("deploy", {"graceful_release": "v1\n"}, write_source,
                             ['graceful_release must be 1 to 64 letters', '(got "v1\\n")']),
    "rollback-to-parent": ("rollback", {"graceful_rollback_to": "../../etc"}, write_source,
                           ['graceful_rollback_to must be 1 to 64 letters', '(got "../../etc")']),
    "app-with-space": ("deploy", {"graceful_app": "a b"}, write_source,
                       ['graceful_app must be 1 to 64 letters', '(got "a b")']),
    "source-link-to-shadow": ("deploy", {}, linked_out,
                              ["has links that point outside it, which are not shipped: link -> /etc/shadow"]),
    "archive-link-to-shadow": ("deploy", {}, archive_linked_out,
                               ["has links or members that point outside the source, which are not shipped: "
                                "app-1/link -> /etc/shadow"]),
    "requirements-url-line": ("deploy", {}, url_requirement,
                              ["the wheelhouse is built from package names and versions only; refused: "
                               "requirements.txt line 2: 'https://example.com/evil-1.0-py3-none-any.whl' is a direct URL"]),
}


def community_sites() -> list[str]:
    """Where community.general (the archive module) is: in this interpreter's site-packages, which come with the
    ansible package, or, for a compat venv that holds ansible-core alone, in the project's venv."""
    candidates = [Path(entry) for entry in sys.path if entry] + sorted((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    return [str(site) for site in candidates if (site / "ansible_collections" / "community" / "general").is_dir()][:1]


def run(action: str, extra: dict, workdir: Path) -> subprocess.CompletedProcess[str]:
    inventory = workdir / "inventory.ini"
    inventory.write_text(INVENTORY)
    # The support runner's environment (collections, interpreter, local temp), with the deploy's differences.
    env = PlaybookRunner(COLLECTIONS, workdir).env()
    env.update(
        ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([str(COLLECTIONS)] + community_sites()),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="True",
        ANSIBLE_FORCE_COLOR="False",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_TIMEOUT="3",
        # The controller's caches (sources, wheelhouses, git) land here, where the test can see what was left.
        XDG_CACHE_HOME=str(workdir / "cache"),
    )
    variables = {"graceful_app": "shop", **extra}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), f"graceful.wsgi.{action}", "-i", str(inventory),
         "--extra-vars", json.dumps(variables)],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=PLAYBOOK_SECONDS, check=False)


def recap_hosts(output: str) -> list[str]:
    recap = output.split("PLAY RECAP", 1)[1]
    return re.findall(r"^(\S+)\s+: ok=", recap, re.M)


def cached_files(workdir: Path) -> list[str]:
    cache = workdir / "cache"
    return sorted(str(path.relative_to(cache)) for path in cache.rglob("*")) if cache.exists() else []


@pytest.fixture(scope="module", autouse=True)
def collection_built() -> None:
    if not (COLLECTIONS / "ansible_collections" / "graceful" / "wsgi" / "playbooks" / "deploy.yml").is_file():
        pytest.fail(f"{COLLECTIONS} lacks graceful.wsgi (make venv links the work tree there)")


@pytest.mark.timeout(PLAYBOOK_SECONDS + 10)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_before_the_lock_naming_it(tmp_path: Path, case: str) -> None:
    action, extra, make_source, expected = CASES[case]
    source = make_source(tmp_path / "src")
    completed = run(action, {"graceful_src": str(source), **extra}, tmp_path)
    output = completed.stdout + completed.stderr
    flat = re.sub(r"\s+", " ", output)
    # ansible-core 2.17 and 2.18 print a failed loop item as one line of JSON, its quotes and backslashes escaped.
    unescaped = flat.replace("\\\\", "\\").replace('\\"', '"')

    # A failed task: exit code 2 (an unreachable host would make it 4).
    assert completed.returncode == 2, output
    for text in expected:
        assert text in flat or text in unescaped, output
    # Only the controller's start play ran: no host was contacted, so no lock was taken on the lock host.
    assert recap_hosts(output) == ["localhost"], output
    assert "UNREACHABLE" not in output, output
    assert "Take the app's deploy lock" not in output and "PLAY [Survey the app hosts]" not in output, output
    # Nothing unpacked, packed or built on the controller either.
    assert cached_files(tmp_path) == [], output
    # The source itself is untouched: its link is still there, and nothing was written into it.
    if (tmp_path / "src" / "link").is_symlink():
        assert os.readlink(tmp_path / "src" / "link") == "/etc/shadow"


@pytest.mark.timeout(PLAYBOOK_SECONDS + 10)
def test_a_good_input_passes_the_checks_and_reaches_for_the_lock_host(tmp_path: Path) -> None:
    """The control: the same inventory with good input fails only when the run contacts the lock host."""
    source = write_source(tmp_path / "src")
    completed = run("deploy", {"graceful_src": str(source), "graceful_release": "v1"}, tmp_path)
    output = completed.stdout + completed.stderr

    assert completed.returncode == 4, output
    assert "TASK [graceful.wsgi.rollout : Create the lock directory on the lock host]" in output, output
    assert "fatal: [localhost -> lb1]: UNREACHABLE!" in output, output
    assert "must be 1 to 64" not in output and "not shipped" not in output and "; refused:" not in output, output

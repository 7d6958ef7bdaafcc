"""Run the collection as users get it: built, installed, and called from ansible-playbook.

Shared by the integration tests and the benchmark. ``install_collection`` builds the
tarball with ``ansible-galaxy collection build`` and installs it into a private path;
``PlaybookRunner`` runs module tasks on localhost and returns each registered result,
failed or not, with the seconds the task took measured inside the play (so ansible's
own start-up is not counted against the module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUILD_TIMEOUT = 120.0
# The bound on a task the module refuses (bad input, a path or process it will not touch), measured by run_tasks around
# it inside the play: ansible's start of the module included, on a host whose two cores also run another load (make
# test runs the integration tests and the compat runs at once). Seconds, where a wait would run into the module's own
# timeouts; the tests assert the message too, which names the immediate cause, never a timeout.
REFUSED_TASK_SECONDS = 6.0


class AnsibleRunError(RuntimeError):
    """ansible-galaxy or ansible-playbook itself failed (not the module under test)."""


def _run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AnsibleRunError(f"{' '.join(command)} still running after {timeout:.0f}s") from exc
    if completed.returncode != 0:
        raise AnsibleRunError(f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


def install_collection(workdir: Path) -> Path:
    """Build the collection tarball and install it under ``workdir``; return the collections path."""
    build_dir = workdir / "build"
    install_dir = workdir / "collections"
    build_dir.mkdir(parents=True, exist_ok=True)
    galaxy = str(BIN / "ansible-galaxy")
    _run([galaxy, "collection", "build", "--force", "--output-path", str(build_dir), str(REPO_ROOT)], BUILD_TIMEOUT)
    tarballs = sorted(build_dir.glob("graceful-wsgi-*.tar.gz"))
    if len(tarballs) != 1:
        raise AnsibleRunError(f"expected one collection tarball, got {tarballs}")
    # --no-deps: the modules need none of galaxy.yml's dependencies (the roles do), a compat venv has ansible-core
    # alone and Galaxy is out of reach. The rollout scenario installs them (tests/publish/install_core_only.py).
    _run([galaxy, "collection", "install", "--force", "--no-deps", "-p", str(install_dir), str(tarballs[0])], BUILD_TIMEOUT)
    if not (install_dir / "ansible_collections" / "graceful" / "wsgi" / "plugins" / "modules" / "uwsgi_reload.py").is_file():
        raise AnsibleRunError(f"the installed collection under {install_dir} lacks its modules")
    return install_dir


class PlaybookRunner:
    """Runs tasks of the installed collection in real playbooks on localhost."""

    def __init__(self, collections: Path, workdir: Path, wrapper: tuple[str, ...] = ()) -> None:
        self.collections = collections
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runs = 0
        # A command ansible-playbook runs under, and with it every module (setpriv dropping a capability).
        self.wrapper = list(wrapper)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(self.collections),
            ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
            ANSIBLE_LOCALHOST_WARNING="False",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
            ANSIBLE_PIPELINING="True",
            ANSIBLE_NOCOLOR="True",
            ANSIBLE_RETRY_FILES_ENABLED="False",
            # Interpreter discovery could pick a shim of another Python; modules run where ansible runs.
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "tmp"),
        )
        return env

    def run_tasks(self, tasks: list[dict[str, Any]], timeout: float = 300) -> list[dict[str, Any]]:
        """Run each task (registered, errors ignored); return every outcome with its ``seconds``."""
        self.runs += 1
        results_path = self.workdir / f"results-{self.runs}.json"
        play_tasks: list[dict[str, Any]] = [{"name": "Start with no outcomes", "ansible.builtin.set_fact": {"outcomes": []}}]
        for index, task in enumerate(tasks):
            task = dict(task, register="outcome", ignore_errors=True)
            task.setdefault("name", f"Case {index}")
            play_tasks += [
                {"name": "Note the time", "ansible.builtin.set_fact": {"task_started": "{{ now().timestamp() }}"}},
                task,
                {"name": "Keep the outcome", "ansible.builtin.set_fact": {
                    "outcomes": "{{ outcomes + [outcome | combine({'seconds': now().timestamp() - (task_started | float)})] }}"}},
            ]
        play_tasks.append({"name": "Write the outcomes", "ansible.builtin.copy": {
            "content": "{{ outcomes | to_json }}", "dest": str(results_path)}, "check_mode": False})
        playbook = self.workdir / f"play-{self.runs}.yml"
        # JSON is valid YAML, so writing the playbook needs no YAML library.
        playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks}], indent=1))
        _run([*self.wrapper, str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)], timeout,
             self.env())
        outcomes: list[dict[str, Any]] = json.loads(results_path.read_text())
        return outcomes

    def run_module(self, module: str, args: dict[str, Any], check: bool = False, timeout: float = 300,
                   **task_extra: Any) -> dict[str, Any]:
        """One ``graceful.wsgi.<module>`` task; its registered result."""
        task: dict[str, Any] = {"name": f"Run {module}", f"graceful.wsgi.{module}": args, **task_extra}
        if check:
            task["check_mode"] = True
        (outcome,) = self.run_tasks([task], timeout=timeout)
        return outcome

"""Fixtures for integration tests: the collection installed as users install it, and playbook runs.

The collection is built with ``ansible-galaxy collection build`` and installed with
``ansible-galaxy collection install`` into a private path, so the tests exercise the
artifact a user gets, not the working tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.uwsgi_instance import UwsgiInstance

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def installed_collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_dir = tmp_path_factory.mktemp("build")
    install_dir = tmp_path_factory.mktemp("collections")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(build_dir), str(REPO_ROOT)],
                   check=True, capture_output=True, text=True)
    (tarball,) = build_dir.glob("graceful-wsgi-*.tar.gz")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(install_dir), str(tarball)],
                   check=True, capture_output=True, text=True)
    assert (install_dir / "ansible_collections" / "graceful" / "wsgi" / "plugins" / "modules" / "uwsgi_reload.py").is_file()
    return install_dir


@dataclass
class TaskRun:
    """One module invocation through ansible-playbook, with its registered result."""

    result: dict[str, Any]
    started: float  # time.time() just before ansible-playbook started
    finished: float
    stdout: str

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))

    @property
    def msg(self) -> str:
        return str(self.result.get("msg", ""))


class Ansible:
    """Runs modules of the installed collection in real playbooks on localhost."""

    def __init__(self, collections: Path, workdir: Path) -> None:
        self.collections = collections
        self.workdir = workdir
        self.runs = 0

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
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        )
        return env

    def run_tasks(self, tasks: list[dict[str, Any]], timeout: float = 300) -> list[dict[str, Any]]:
        """Run tasks that each register ``outcome``; return every outcome in order."""
        self.runs += 1
        results_path = self.workdir / f"results-{self.runs}.json"
        play_tasks: list[dict[str, Any]] = [{"name": "Start with no results", "ansible.builtin.set_fact": {"outcomes": []}}]
        for index, task in enumerate(tasks):
            task = dict(task)
            task.setdefault("name", f"case {index}")
            task["register"] = "outcome"
            task["ignore_errors"] = True
            play_tasks.append({"name": "Note the time", "ansible.builtin.set_fact": {"task_started": "{{ now().timestamp() }}"}})
            play_tasks.append(task)
            play_tasks.append({
                "name": "Keep the outcome",
                "ansible.builtin.set_fact": {
                    "outcomes": "{{ outcomes + [outcome | combine({'seconds': now().timestamp() - (task_started | float)})] }}"
                },
            })
        play_tasks.append({"name": "Write the outcomes", "ansible.builtin.copy": {"content": "{{ outcomes | to_json }}", "dest": str(results_path)}})
        playbook = self.workdir / f"play-{self.runs}.yml"
        playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks}], sort_keys=False))
        command = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
        completed = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)
        if completed.returncode != 0 or not results_path.exists():
            raise AssertionError(f"ansible-playbook failed to run:\n{completed.stdout}\n{completed.stderr}")
        return json.loads(results_path.read_text())

    def run_module(self, module: str, args: dict[str, Any], check: bool = False, **task_extra: Any) -> TaskRun:
        started = time.time()
        task = {"name": f"Run {module}", f"graceful.wsgi.{module}": args}
        task.update(task_extra)
        if check:
            task["check_mode"] = True
        (result,) = self.run_tasks([task])
        return TaskRun(result=result, started=started, finished=time.time(), stdout="")


@pytest.fixture
def ansible(installed_collections: Path, tmp_path: Path) -> Ansible:
    return Ansible(installed_collections, tmp_path)


@pytest.fixture
def uwsgi(tmp_path: Path):
    instance = UwsgiInstance(tmp_path / "instance", processes=4, threads=2, lazy_apps=True, import_delay=0.3)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()

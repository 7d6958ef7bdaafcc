"""gunicorn_reload and gunicorn_info on real gunicorn when the pidfile lies or an upgrade is half done.

No case may signal anything: each checks afterwards that the processes involved are untouched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.process import poll_until

# The module's budget for refusing bad input, measured around the task inside the play.
BAD_INPUT_SECONDS = 2.0


def assert_refused_quickly(run: dict, *fragments: str) -> None:
    assert run.get("failed"), run
    for fragment in fragments:
        assert fragment in run["msg"], run["msg"]
    assert "nothing was signalled" in run["msg"]
    assert run["seconds"] < BAD_INPUT_SECONDS, run["seconds"]


def assert_untouched(gunicorn, master: int, workers: set[int]) -> None:
    assert gunicorn.process_alive(master)
    assert gunicorn.worker_pids(master) == workers


@pytest.fixture
def bystander():
    """An unrelated live process, as a reused PID would be."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("mode", ["hup", "upgrade"])
def test_pidfile_naming_an_unrelated_process(ansible, gunicorn, bystander, tmp_path, mode):
    pidfile = tmp_path / "lying.pid"
    pidfile.write_text(f"{bystander.pid}\n")
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile), "mode": mode})
    assert_refused_quickly(run, f"pidfile={pidfile} names pid {bystander.pid} (sleep 300), which is not a gunicorn process")
    assert bystander.poll() is None, "the unrelated process must survive"


@pytest.mark.parametrize("content, fragment", [
    ("", "it is empty;"),
    ("not a pid\n", "it does not hold a PID (not a positive decimal number; its content is not shown)"),
])
def test_empty_or_garbage_pidfile(ansible, tmp_path, content, fragment):
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(content)
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile), "mode": "upgrade"})
    assert_refused_quickly(run, f"pidfile={pidfile}: {fragment}")
    assert "not a pid" not in run["msg"]


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_fifo_or_symlink_in_place_of_the_pidfile_is_refused_at_once(ansible, gunicorn, tmp_path, kind):
    master = gunicorn.master_pid()
    workers = gunicorn.worker_pids(master)
    pidfile = tmp_path / "app.pid"
    if kind == "fifo":
        os.mkfifo(pidfile)
        fragment = "it is a FIFO, not a regular file"
    else:
        pidfile.symlink_to(gunicorn.pidfile)
        fragment = "it is a symbolic link (not followed), not a regular file"
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile), "mode": "upgrade"})
    assert_refused_quickly(run, f"pidfile={pidfile}: {fragment}")
    assert_untouched(gunicorn, master, workers)


def test_pidfile_naming_a_dead_pid(ansible, tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{finished.pid}\n")
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile)})
    assert_refused_quickly(run, f"pidfile={pidfile} names pid {finished.pid}, which is not running (stale pidfile)")


def test_missing_pidfile(ansible, tmp_path):
    pidfile = tmp_path / "absent.pid"
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile)})
    assert_refused_quickly(run, f"pidfile={pidfile} does not exist")


def test_pidfile_naming_a_worker(ansible, gunicorn, tmp_path):
    master = gunicorn.master_pid()
    workers = gunicorn.worker_pids(master)
    worker = min(workers)
    pidfile = tmp_path / "worker.pid"
    pidfile.write_text(f"{worker}\n")
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile), "mode": "upgrade"})
    assert_refused_quickly(run, f"a gunicorn worker of master {master}, not a master")
    assert_untouched(gunicorn, master, workers)


def test_second_upgrade_while_one_is_pending(ansible, gunicorn):
    master = gunicorn.master_pid()
    workers = gunicorn.worker_pids(master)
    os.kill(master, signal.SIGUSR2)  # by hand, and never finished
    new_master = poll_until(lambda: next(iter(gunicorn.upgrade_children(master)), None), 20, "the new master")
    gunicorn.wait_all_workers_serving("v1", master=new_master)
    new_workers = gunicorn.worker_pids(new_master)

    run = ansible.run_module("gunicorn_reload", {"pidfile": str(gunicorn.pidfile), "mode": "upgrade"})
    assert_refused_quickly(run, f"an upgrade is already pending: new master {new_master}")

    # Asking for the new master by its own pidfile is refused too.
    second = ansible.run_module("gunicorn_reload", {"pidfile": f"{gunicorn.pidfile}.2", "mode": "hup"})
    assert_refused_quickly(second, f"names pid {new_master}, a new master started by USR2 that is not promoted yet")

    info = ansible.run_module("gunicorn_info", {"pidfile": str(gunicorn.pidfile)})
    assert info["upgrade"]["pending"] and info["upgrade"]["new_master_pid"] == new_master
    assert info["upgrade"]["pidfile_pid"] == new_master and not info["upgrade"]["pidfile_stale"]
    assert sorted(w["pid"] for w in info["upgrade"]["new_workers"]) == sorted(new_workers)

    assert_untouched(gunicorn, master, workers)
    assert_untouched(gunicorn, new_master, new_workers)
    assert gunicorn.master_pid() == master


@pytest.mark.parametrize("mode", ["hup", "upgrade"])
def test_check_mode_sends_nothing(ansible, gunicorn, mode):
    master = gunicorn.master_pid()
    workers = gunicorn.worker_pids(master)
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(gunicorn.pidfile), "mode": mode}, check=True)
    assert not run.get("failed"), run
    assert run["changed"] is True and run["signals"] == []
    assert run["msg"].startswith(f"would send {'USR2' if mode == 'upgrade' else 'HUP'} to gunicorn master {master}")
    assert sorted(run["workers_before"]) == sorted(workers)
    assert_untouched(gunicorn, master, workers)
    assert not gunicorn.upgrade_children(master)


def test_info_reports_the_master_its_workers_and_version(ansible, gunicorn):
    master = gunicorn.master_pid()
    info = ansible.run_module("gunicorn_info", {"pidfile": str(gunicorn.pidfile)})
    assert not info.get("failed"), info
    assert info["changed"] is False
    assert info["master_pid"] == master
    assert info["version"] == ".".join(str(part) for part in gunicorn.version)
    assert sorted(w["pid"] for w in info["workers"]) == sorted(gunicorn.worker_pids(master))
    assert info["workers_booted"] == 4 and all(w["age"] >= 0 for w in info["workers"])
    assert str(gunicorn.log_path) in info["log_files"]
    assert info["upgrade"] == {
        "pending": False, "pidfile": f"{gunicorn.pidfile}.2", "pidfile_present": False, "pidfile_pid": None,
        "pidfile_stale": False, "new_master_pid": None, "new_workers": [], "upgrading_from": None,
    }


def test_as_another_user_the_master_cannot_be_proven(ansible, gunicorn):
    """/proc hides another user's descriptors: the module says so instead of guessing."""
    master = gunicorn.master_pid()
    workers = gunicorn.worker_pids(master)
    as_nobody = {"become": True, "become_method": "ansible.builtin.su", "become_user": "nobody",
                 "become_flags": "-s /bin/sh", "vars": {"ansible_python_interpreter": "/usr/bin/python3"}}
    readable = Path(tempfile.mkdtemp(prefix="gunicorn-pid-"))
    try:
        readable.chmod(0o755)
        copy = readable / "app.pid"
        copy.write_text(gunicorn.pidfile.read_text())
        copy.chmod(0o644)
        outcomes = ansible.run_tasks([
            dict({"graceful.wsgi.gunicorn_reload": {"pidfile": str(copy), "mode": "upgrade"}}, **as_nobody),
            dict({"graceful.wsgi.gunicorn_reload": {"pidfile": str(gunicorn.pidfile)}}, **as_nobody),
        ])
    finally:
        shutil.rmtree(readable)
    assert_refused_quickly(outcomes[0], f"cannot read /proc/{master}/fd: permission denied")
    assert_refused_quickly(outcomes[1], f"pidfile={gunicorn.pidfile} cannot be read: permission denied")
    assert_untouched(gunicorn, master, workers)

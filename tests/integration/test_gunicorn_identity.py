"""gunicorn_reload and gunicorn_info on real gunicorn when the pidfile lies or an upgrade is half done.

No case may signal anything: each checks afterwards that the processes involved are untouched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.ansible_runner import REFUSED_TASK_SECONDS
from tests.support.gunicorn_instance import GunicornInstance
from tests.support.process import poll_until
from tests.support.server_venvs import GUNICORN_LOCKS

# The other app's user: owns its run directory and its pidfile, as an app's user owns /run/<app>.
OTHER_USER = 65534


def assert_refused_quickly(run: dict, *fragments: str) -> None:
    assert run.get("failed"), run
    for fragment in fragments:
        assert fragment in run["msg"], run["msg"]
    assert "nothing was signalled" in run["msg"]
    assert run["seconds"] < REFUSED_TASK_SECONDS, run["seconds"]


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


class ConfiguredGunicorn(GunicornInstance):
    """A gunicorn started as the gunicorn role starts it, ``-c`` a configuration file that sets its pidfile: its
    command line names no pidfile, so no ``--pid`` tells its pidfile from another app's."""

    def command(self) -> list[str]:
        settings = {
            "bind": [f"127.0.0.1:{self.port}"], "workers": self.workers, "worker_class": "gthread",
            "threads": self.threads, "pidfile": str(self.pidfile), "chdir": str(self.workdir),
            "graceful_timeout": self.graceful_timeout, "timeout": 60, "errorlog": str(self.log_path),
            "loglevel": "info",
        }
        if self.control_socket is not None:
            settings["control_socket"] = str(self.control_socket)
        config = self.workdir / "gunicorn.conf.py"
        config.write_text("".join(f"{name} = {value!r}\n" for name, value in settings.items()))
        return [str(self.gunicorn_bin), "-c", str(config), "app:application"]


@pytest.fixture(params=tuple(GUNICORN_LOCKS), ids=lambda version: f"gunicorn-{version}")
def other_app(request, gunicorn_bins, tmp_path):
    """Another app's gunicorn master (root's, started from a configuration file), the one a lying pidfile names."""
    instance = ConfiguredGunicorn(tmp_path / "other-app", gunicorn_bins[request.param], workers=2, threads=1,
                                  import_delay=0.0)
    instance.start()
    try:
        assert "--pid" not in Path(f"/proc/{instance.master_pid()}/cmdline").read_bytes().decode().split("\0")
        yield instance
    finally:
        instance.stop()


def app_pidfile(directory: Path, pid: int, owner: int) -> Path:
    """This app's pidfile, in its run directory, both ``owner``'s, naming ``pid``: what the app's user can write."""
    directory.mkdir()
    os.chown(directory, owner, owner)
    pidfile = directory / "gunicorn.pid"
    pidfile.write_text(f"{pid}\n")
    os.chown(pidfile, owner, owner)
    return pidfile


def test_a_pidfile_naming_another_apps_master_is_refused_naming_both(ansible, other_app, tmp_path):
    """This app's user wrote the PID of another app's master into this app's pidfile.

    Protected: the other master, its workers and its pidfile; nothing is signalled, whichever mode, and gunicorn_info
    reports nothing of the other app. State left: all as before.
    """
    victim = other_app.master_pid()
    victim_workers = other_app.worker_pids(victim)
    user = pwd.getpwuid(OTHER_USER).pw_name
    pidfile = app_pidfile(tmp_path / "this-app-run", victim, OTHER_USER)
    # A root-owned pidfile naming it, as a stale one of a root master whose PID was reused: expected_user decides.
    root_pidfile = tmp_path / "root.pid"
    root_pidfile.write_text(f"{victim}\n")
    outcomes = ansible.run_tasks([
        {"graceful.wsgi.gunicorn_reload": {"pidfile": str(pidfile), "mode": "hup"}},
        {"graceful.wsgi.gunicorn_reload": {"pidfile": str(pidfile), "mode": "upgrade", "pending_upgrade": "settle"}},
        {"graceful.wsgi.gunicorn_info": {"pidfile": str(pidfile)}},
        {"graceful.wsgi.gunicorn_reload": {"pidfile": str(root_pidfile), "mode": "hup", "expected_user": user}},
    ])
    named = f"pidfile={pidfile} names pid {victim} ("
    by_owner = f"a gunicorn master running as root, not as the owner of the pidfile, {user} (uid {OTHER_USER})"
    for outcome in outcomes[:2]:
        assert_refused_quickly(outcome, named, f"{other_app.gunicorn_bin} -c ", by_owner, "another app's master")
        assert outcome["signals"] == [] and not outcome["changed"]
    info = outcomes[2]
    assert info.get("failed") and named in info["msg"] and by_owner in info["msg"], info
    assert "master_pid" not in info and "workers" not in info
    assert_refused_quickly(outcomes[3], f"pidfile={root_pidfile} names pid {victim} (",
                           f"a gunicorn master running as root, not as expected_user={user} (uid {OTHER_USER})")
    assert other_app.master_pid() == victim and other_app.process_alive(victim)
    assert other_app.worker_pids(victim) == victim_workers, "the other app's workers were replaced"
    assert not other_app.upgrade_children(victim)
    assert pidfile.read_text() == f"{victim}\n" and not Path(f"{pidfile}.2").exists()


def test_a_pidfile_of_neither_the_masters_user_nor_root_is_not_read(ansible, other_app, tmp_path):
    """The master runs as root (expected_user); a pidfile that another user wrote, naming it, is refused unread.

    Protected: the master and its workers, not signalled. State left: as before.
    """
    master = other_app.master_pid()
    workers = other_app.worker_pids(master)
    user = pwd.getpwuid(OTHER_USER).pw_name
    pidfile = app_pidfile(tmp_path / "run", master, OTHER_USER)
    run = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile), "mode": "hup", "expected_user": "root"})
    assert_refused_quickly(run, f"pidfile={pidfile}: it is owned by {user} (uid {OTHER_USER}), not by "
                                f"expected_user=root (uid 0); it was not read")
    assert f"pid {master}" not in run["msg"]
    assert_untouched(other_app, master, workers)
    # The same pidfile given to root names the master it is proven to be.
    os.chown(pidfile, 0, 0)
    check = ansible.run_module("gunicorn_reload", {"pidfile": str(pidfile), "mode": "hup", "expected_user": "root"},
                               check=True)
    assert not check.get("failed"), check["msg"]
    assert check["msg"].startswith(f"would send HUP to gunicorn master {master}")
    assert_untouched(other_app, master, workers)

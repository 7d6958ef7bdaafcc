"""gunicorn_reload on a real gunicorn master that preloaded the application: HUP is refused, USR2 ships the code.

With ``preload_app`` the master imports the application before forking its workers and never imports it again,
so a HUP replaces every worker with a copy of the old code. The module used to report that HUP as proven while
v1 kept serving. Now it refuses it before any signal and names where the setting was read. Preloading is set
two ways gunicorn reads it: ``--preload`` on the command line (gunicorn 20.1), and ``preload_app = True`` in the
``gunicorn.conf.py`` of its working directory, which gunicorn reads without ``-c`` (gunicorn 27). Each case runs
real HTTP load through both the refused HUP and the upgrade that follows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import ship_under_load
from tests.integration.test_gunicorn_reload_under_load import assert_no_failed_requests, assert_serves_only
from tests.support.ansible_runner import REFUSED_TASK_SECONDS, PlaybookRunner
from tests.support.gunicorn_instance import GunicornInstance
from tests.support.server_venvs import GUNICORN_LOCKS

OLDEST, NEWEST = min(GUNICORN_LOCKS, key=lambda v: tuple(map(int, v.split(".")))), \
    max(GUNICORN_LOCKS, key=lambda v: tuple(map(int, v.split("."))))
WAYS = {"command line": OLDEST, "default config file": NEWEST}


@pytest.fixture(params=sorted(WAYS), ids=lambda way: way.replace(" ", "-"))
def preloaded(request, gunicorn_bins: dict[str, Path], tmp_path: Path):
    way = request.param
    workdir = tmp_path / "gunicorn"
    extra_args = ["--preload"] if way == "command line" else []
    instance = GunicornInstance(workdir, gunicorn_bins[WAYS[way]], workers=4, threads=2, import_delay=0.3,
                                extra_args=extra_args)
    if way == "default config file":
        # The working directory's gunicorn.conf.py, which gunicorn reads when no -c names another config.
        (workdir / "gunicorn.conf.py").write_text("workers = 4\npreload_app = True\n")
    instance.start()
    try:
        yield way, instance
    finally:
        instance.stop()


@pytest.mark.timeout(300)
def test_hup_on_a_preloading_master_is_refused_and_an_upgrade_ships_the_code(ansible: PlaybookRunner, preloaded):
    way, gunicorn = preloaded
    master = gunicorn.master_pid()
    workers = gunicorn.worker_pids(master)
    args = {"pidfile": str(gunicorn.pidfile), "timeout": 60}

    info = ansible.run_module("gunicorn_info", {"pidfile": str(gunicorn.pidfile)})
    source = ("the command line (--preload)" if way == "command line"
              else f"{gunicorn.workdir / 'gunicorn.conf.py'} line 2")
    assert not info.get("failed"), info["msg"]
    assert info["preload_app"] is True and info["preload_app_source"] == source

    refused, load = ship_under_load(ansible, gunicorn, "gunicorn_reload", {**args, "mode": "hup"}, "v2", False)
    print(f"preload ({way}), gunicorn {gunicorn.version}: HUP refused in {refused['seconds']:.2f}s, {load.summary()}")
    assert refused.get("failed") and refused["seconds"] < REFUSED_TASK_SECONDS, refused
    assert f"gunicorn master {master} (pidfile={gunicorn.pidfile}) preloads the application (preload_app, from " \
           f"{source})" in refused["msg"]
    assert refused["msg"].endswith("use mode=upgrade; nothing was signalled")
    assert refused["signals"] == [] and not refused["changed"]
    # Lost: nothing. Left: the same master and workers, still on v1 although v2 is on disk: what a HUP would
    # have left too, while reporting success.
    assert_no_failed_requests(load)
    assert gunicorn.master_pid() == master
    assert_serves_only(gunicorn, master, workers, "v1")

    upgraded, load = ship_under_load(ansible, gunicorn, "gunicorn_reload", {**args, "mode": "upgrade"}, "v2", False)
    print(f"preload ({way}), gunicorn {gunicorn.version}: upgrade {upgraded.get('elapsed')}s, {load.summary()}")
    assert not upgraded.get("failed"), upgraded["msg"]
    new_master = upgraded["master_pid"]
    assert new_master != master and gunicorn.master_pid() == new_master and not gunicorn.process_alive(master)
    assert_no_failed_requests(load)
    assert_serves_only(gunicorn, new_master, set(upgraded["workers_after"]), "v2")

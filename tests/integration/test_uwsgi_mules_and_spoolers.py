"""uwsgi_reload on real uWSGI with two mules and a spooler, under load: no part of the instance keeps the old code.

uWSGI's chain reload, its workers reload and a SIGHUP to each worker replace the workers only (uWSGI issue 915):
its mules and spoolers go on with the code they loaded. The module replaces them once the workers are proven
(a mule by SIGHUP, a spooler by SIGTERM once it runs no task) and proves each replacement. Each mule writes the
release it imported to a file named after its pid, which shows the code it runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import ship_under_load
from tests.integration.test_uwsgi_reload_under_load import assert_no_failed_requests
from tests.support.ansible_runner import PlaybookRunner
from tests.support.loadgen import sample_serving_pids
from tests.support.process import is_alive
from tests.support.uwsgi_instance import UwsgiInstance

# A mule that imports the release and says which one, then waits (as a mule waiting for messages does).
MULE = '''\
import importlib.util, os, time
spec = importlib.util.spec_from_file_location("app", os.path.join(os.path.dirname(__file__), "app.py"))
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
with open(os.path.join(os.path.dirname(__file__), "mule-%d.release" % os.getpid()), "w") as handle:
    handle.write(app.RELEASE)
while True:
    time.sleep(60)
'''


@pytest.fixture
def with_helpers(tmp_path: Path):
    workdir = tmp_path / "instance"
    workdir.mkdir()
    (workdir / "mule.py").write_text(MULE)
    (workdir / "spool").mkdir()
    instance = UwsgiInstance(workdir, processes=4, threads=2, lazy_apps=True, import_delay=0.3, extra_options={
        "mule": [str(workdir / "mule.py")] * 2, "spooler": str(workdir / "spool"), "spooler-frequency": 1})
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def mule_release(workdir: Path, pid: int) -> str | None:
    path = workdir / f"mule-{pid}.release"
    return path.read_text() if path.exists() else None


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["chain", "rolling"])
def test_a_reload_of_the_workers_replaces_the_mules_and_the_spooler_under_load(
        ansible: PlaybookRunner, with_helpers: UwsgiInstance, mode: str) -> None:
    uwsgi = with_helpers
    args = {"master_fifo": str(uwsgi.fifo_path), "stats": str(uwsgi.stats_path), "mode": mode, "timeout": 60}
    run, result = ship_under_load(ansible, uwsgi, "uwsgi_reload", args, "v2", False)
    print(f"{mode} with 2 mules and a spooler: module {run.get('elapsed')}s, {result.summary()}")

    assert not run.get("failed"), run["msg"]
    assert ", then its 2 mules and 1 spooler in " in run["msg"]
    assert_no_failed_requests(result)
    mules_before, mules_after = run["mules_before"], run["mules_after"]
    assert len(mules_before) == 2 and len(mules_after) == 2 and not set(mules_before) & set(mules_after)
    assert all(mule_release(uwsgi.workdir, pid) == "v1" for pid in mules_before)
    assert all(mule_release(uwsgi.workdir, pid) == "v2" for pid in mules_after), "each new mule imported v2"
    assert not any(is_alive(pid) for pid in mules_before)
    (spool, old_spooler), = run["spoolers_before"].items()
    spoolers = {s["dir"]: s["pid"] for s in uwsgi.stats()["spoolers"]}
    assert spoolers[spool] == run["spoolers_after"][spool] != old_spooler and not is_alive(old_spooler)
    workers = {w["pid"] for w in uwsgi.workers()}
    assert set(w["pid"] for w in run["workers_after"]) == workers
    sampled = sample_serving_pids(uwsgi.base_url, workers, "v2")
    assert not sampled["missing"] and not sampled["wrong"] and not sampled["errors"], sampled

"""Fixtures for integration tests: the collection installed as users install it, and real uWSGI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ansible_runner import PlaybookRunner, install_collection
from tests.support.loadgen import LoadGenerator, LoadResult
from tests.support.uwsgi_instance import UwsgiInstance, poll_until

# Requests of this length are always in flight during a reload under load.
SLOW_SECONDS = 1.5


@pytest.fixture(scope="session")
def installed_collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_collection(tmp_path_factory.mktemp("galaxy"))


@pytest.fixture
def ansible(installed_collections: Path, tmp_path: Path) -> PlaybookRunner:
    return PlaybookRunner(installed_collections, tmp_path / "ansible")


@pytest.fixture
def uwsgi(tmp_path: Path):
    instance = UwsgiInstance(tmp_path / "instance", processes=4, threads=2, lazy_apps=True, import_delay=0.3)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def reload_under_load(ansible: PlaybookRunner, uwsgi: UwsgiInstance):
    """Ship a release and run uwsgi_reload while >= 5,000 requests (concurrency 10, slow ones in flight) go through.

    Returns a function (args, release, broken) -> (module outcome, load result).
    """

    def run(args: dict, release: str = "v2", broken: bool = False) -> tuple[dict, LoadResult]:
        load = LoadGenerator(uwsgi.base_url, concurrency=10, slow_clients=2, slow_seconds=SLOW_SECONDS,
                             min_requests=5000, max_requests=150000, max_seconds=120)
        load.start()
        try:
            # Let traffic and the slow requests get going before the release ships.
            poll_until(lambda: sum(w["requests"] for w in uwsgi.workers()) >= 300, 20, "warm-up traffic")
            uwsgi.set_release(release, broken=broken)
            outcome = ansible.run_module("uwsgi_reload", args)
        finally:
            result = load.stop()
        return outcome, result

    return run

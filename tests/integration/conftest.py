"""Fixtures for integration tests: the collection installed as users install it, real uWSGI and gunicorn."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ansible_runner import PlaybookRunner, install_collection
from tests.support.gunicorn_instance import GunicornInstance, gunicorn_version
from tests.support.server_venvs import GUNICORN_LOCKS, gunicorn_bin
from tests.support.loadgen import LoadGenerator, LoadResult
from tests.support.process import poll_until
from tests.support.uwsgi_instance import UwsgiInstance

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


def ship_under_load(ansible: PlaybookRunner, instance, module: str, args: dict, release: str,
                    broken: bool) -> tuple[dict, LoadResult]:
    """Ship ``release`` to ``instance`` and run ``module`` while >= 5,000 requests (concurrency 10, slow ones
    in flight) go through; returns the module outcome and the load result."""
    load = LoadGenerator(instance.base_url, concurrency=10, slow_clients=2, slow_seconds=SLOW_SECONDS,
                         min_requests=5000, max_requests=150000, max_seconds=120)
    load.start()
    try:
        # Let traffic and the slow requests get going before the release ships.
        poll_until(lambda: load.fast_completed >= 300, 20, "warm-up traffic")
        instance.set_release(release, broken=broken)
        outcome = ansible.run_module(module, args)
    finally:
        result = load.stop()
    return outcome, result


@pytest.fixture
def reload_under_load(ansible: PlaybookRunner, uwsgi: UwsgiInstance):
    """Ship a release and run uwsgi_reload under load (see ship_under_load).

    Returns a function (args, release, broken) -> (module outcome, load result).
    """

    def run(args: dict, release: str = "v2", broken: bool = False) -> tuple[dict, LoadResult]:
        return ship_under_load(ansible, uwsgi, "uwsgi_reload", args, release, broken)

    return run


# -- gunicorn -----------------------------------------------------------------

GUNICORN_VERSIONS = tuple(GUNICORN_LOCKS)


@pytest.fixture(scope="session")
def gunicorn_bins() -> dict[str, Path]:
    bins = {version: gunicorn_bin(version) for version in GUNICORN_VERSIONS}
    for version, path in bins.items():
        found = ".".join(str(part) for part in gunicorn_version(path))
        assert found == version, f"{path} is gunicorn {found}, expected {version}: delete it to rebuild it"
    return bins


@pytest.fixture(params=GUNICORN_VERSIONS, ids=lambda version: f"gunicorn-{version}")
def gunicorn(request, gunicorn_bins: dict[str, Path], tmp_path: Path):
    instance = GunicornInstance(tmp_path / "gunicorn", gunicorn_bins[request.param], workers=4, threads=2,
                                import_delay=0.3)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def gunicorn_reload_under_load(ansible: PlaybookRunner, gunicorn: GunicornInstance):
    """Ship a release and run gunicorn_reload on the instance's pidfile under load (see ship_under_load)."""

    def run(args: dict, release: str = "v2", broken: bool = False) -> tuple[dict, LoadResult]:
        return ship_under_load(ansible, gunicorn, "gunicorn_reload", {"pidfile": str(gunicorn.pidfile), **args},
                               release, broken)

    return run

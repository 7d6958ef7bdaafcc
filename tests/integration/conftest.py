"""Fixtures for integration tests: the collection installed as users install it, and real uWSGI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ansible_runner import PlaybookRunner, install_collection
from tests.support.uwsgi_instance import UwsgiInstance


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

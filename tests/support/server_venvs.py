"""gunicorn installations for tests and benchmarks, each in its own venv built from a pinned requirements file.

An app server under test lives apart from the Python that runs Ansible and pytest, as it does on a real
host, so every controller environment (the dev venv and the older ansible-core ones) tests the same servers.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / ".build"

# version -> the requirements file that pins it (with what that version needs to import).
GUNICORN_LOCKS = {
    "20.1.0": REPO / "requirements" / "gunicorn-20.1.txt",  # Debian 12's: the oldest supported
    "27.0.1": REPO / "requirements" / "gunicorn-27.0.txt",  # the newest
}


def gunicorn_bin(version: str) -> Path:
    """Path of the ``gunicorn`` script of ``version``; builds its venv on first use (keyed by the lock's hash).

    make test runs the integration tests and the compat runs at once: the first to get here builds the venv while
    the other waits on the build lock, then finds it."""
    lock = GUNICORN_LOCKS[version]
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:8]
    venv = BUILD / f"gunicorn-{version}-{digest}"
    script = venv / "bin" / "gunicorn"
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / f"gunicorn-{version}.build-lock", "w", encoding="ascii") as build_lock:
        fcntl.flock(build_lock, fcntl.LOCK_EX)
        if not script.exists():
            for stale in BUILD.glob(f"gunicorn-{version}-*"):
                shutil.rmtree(stale)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "-r", str(lock)], check=True, timeout=600)
    return script


__all__ = ["GUNICORN_LOCKS", "gunicorn_bin"]

"""Write one release of the demo app (demo/app) to a directory: its code, its requirements and its static files.

    python3 demo/make_release.py OUT --release v2 --idna 3.10 [--broken | --unhealthy]

A release is a plain source directory, as a user's app would be: app.py, requirements.txt and static/ with one
stylesheet, demo.<12 hex digits of its sha256>.css, whose content names the release. Its URL (/static/<name>, for
graceful_static {"/static/": "static"}) is app.py's ASSET, which every page names: a page and the asset it names
come from the same release, so a load through the load balancer can tell whether the assets of every release that
serves pages are served too (tests/fleet/probe.py lb --check-assets).
"""

import argparse
import hashlib
import re
import shutil
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "app"
# The URL prefix the scenarios map to the release's static/ directory (graceful_static).
STATIC_URL = "/static/"


def stylesheet(release: str) -> tuple[str, bytes]:
    """The release's stylesheet: its content-hashed file name and its content, which names the release."""
    content = f"/* demo release {release} */ body{{}}\n".encode()
    return f"demo.{hashlib.sha256(content).hexdigest()[:12]}.css", content


def render(source: str, release: str, broken: bool, unhealthy: bool, asset: str = "") -> str:
    """Return app.py's source with the release's constants set."""
    replacements = {"RELEASE": repr(release), "ASSET": repr(asset), "BROKEN": repr(broken), "UNHEALTHY": repr(unhealthy)}
    for name, value in replacements.items():
        source, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", source, count=1, flags=re.M)
        if count != 1:
            raise ValueError(f"{APP_DIR / 'app.py'} has no line '{name} = ...'")
    return source


def write_release(out: Path, release: str, idna_version: str, broken: bool = False, unhealthy: bool = False) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", release):
        raise ValueError(f"--release {release!r}: use letters, digits, '.', '_' and '-'")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    name, content = stylesheet(release)
    (out / "static").mkdir()
    (out / "static" / name).write_bytes(content)
    source = (APP_DIR / "app.py").read_text(encoding="utf-8")
    (out / "app.py").write_text(render(source, release, broken, unhealthy, STATIC_URL + name), encoding="utf-8")
    (out / "requirements.txt").write_text(f"idna=={idna_version}\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="directory to (re)create")
    parser.add_argument("--release", required=True)
    parser.add_argument("--idna", default="3.7", help="version of the dependency (default 3.7)")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--broken", action="store_true", help="fails at import")
    variant.add_argument("--unhealthy", action="store_true", help="imports, but /healthz answers 503")
    args = parser.parse_args(argv)
    try:
        write_release(args.out, args.release, args.idna, args.broken, args.unhealthy)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

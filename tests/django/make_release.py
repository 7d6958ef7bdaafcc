"""Write one release of the Django shop (tests/django/project) to a directory, as a user's source tree would be.

    python3 tests/django/make_release.py DEST --release v1
    python3 tests/django/make_release.py DEST --release v2
    python3 tests/django/make_release.py DEST --release v3-broken-migration --migration fail

The schema follows the number after the leading "v" of the release id:
    v1     the project as it is: model Item(name, created), migration 0001_initial
    v2...  overlays/v2 on top: a nullable column Item.note (expand-only migration 0002_item_note) that the code
           reads (the page shows the latest note) and writes (POST /items/ sets it)
--migration fail adds overlays/broken-migration: a migration 0003 whose RunPython raises.

Every release gets its id in shop/release.py and in its stylesheet (items/static/items/app.css): the
stylesheet's bytes, and so its hashed name after collectstatic, differ from release to release.
"""

import argparse
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "project"
OVERLAYS = HERE / "overlays"
RELEASE_FILE = Path("shop/release.py")
STYLESHEET = Path("items/static/items/app.css")
# What a source tree must not carry into a release: build output of a local run.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "staticfiles", "db.sqlite3")


def schema_of(release: str) -> int:
    """1 for v1, 2 for any later vN: the schema a release id asks for."""
    match = re.match(r"v([0-9]+)(?![0-9])", release)
    if not match:
        raise ValueError(f"--release {release!r}: the id must start with v<number> (v1, v2, v3-broken-migration)")
    return 1 if int(match.group(1)) <= 1 else 2


def rewrite(path: Path, pattern: str, replacement: str) -> None:
    """Replace the one match of pattern in path; a file without it is a broken template."""
    text, count = re.subn(pattern, lambda _match: replacement, path.read_text(encoding="utf-8"), count=1, flags=re.M)
    if count != 1:
        raise ValueError(f"{path} has no match for {pattern!r}")
    path.write_text(text, encoding="utf-8")


def write_release(dest: Path, release: str, migration: str = "ok") -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", release):
        raise ValueError(f"--release {release!r}: use letters, digits, '.', '_' and '-'")
    schema = schema_of(release)
    if migration == "fail" and schema < 2:
        raise ValueError("--migration fail needs a release with migration 0002 (v2 or later): 0003 depends on it")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(PROJECT, dest, ignore=IGNORED)
    overlays = (["v2"] if schema >= 2 else []) + (["broken-migration"] if migration == "fail" else [])
    for overlay in overlays:
        shutil.copytree(OVERLAYS / overlay, dest, ignore=IGNORED, dirs_exist_ok=True)
    rewrite(dest / RELEASE_FILE, r'^RELEASE = ".*"$', f'RELEASE = "{release}"')
    rewrite(dest / STYLESHEET, r'--shop-release: "[^"]*";', f'--shop-release: "{release}";')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="directory to (re)create")
    parser.add_argument("--release", required=True, help="release id: v1, v2, v3-broken-migration, ...")
    parser.add_argument("--migration", choices=["ok", "fail"], default="ok",
                        help="fail: add a migration 0003 that raises (default ok)")
    args = parser.parse_args(argv)
    try:
        write_release(args.dest, args.release, args.migration)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

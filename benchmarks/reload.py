"""The reload benchmarks' single entry point: uWSGI, gunicorn, or both in turn.

  uwsgi     benchmarks/uwsgi_reload.py: uWSGI's touch-chain-reload against
            the module's chain and rolling modes
  gunicorn  benchmarks/gunicorn_reload.py: ``kill -HUP`` against the
            module's hup and upgrade modes
  emperor   benchmarks/emperor_reload.py: touching every vassal config at
            once against uwsgi_vassals_reload with min_active 1 and N - 1

Each benchmark runs in full (its own server, load and table) through its
``main()``, one after the other; see their docstrings for what is measured.

Usage (from the repository root, with the venv's python; ``make benchmark``):

    python benchmarks/reload.py [--server uwsgi|gunicorn|emperor|all] [--rounds N]
                                [--gunicorn-version V]

Like the benchmarks themselves it reports and does not judge: it exits 0
whatever the figures, and non-zero when a benchmark could not complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import emperor_reload, gunicorn_reload, uwsgi_reload  # noqa: E402
from tests.support.server_venvs import GUNICORN_LOCKS  # noqa: E402

SERVERS = ("uwsgi", "gunicorn", "emperor")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "--server",
        choices=[*SERVERS, "all"],
        default="all",
        help="which server's benchmark to run (default all: uwsgi, gunicorn, then emperor)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the three reloads, per benchmark (default 3)",
    )
    parser.add_argument(
        "--gunicorn-version",
        choices=sorted(GUNICORN_LOCKS),
        default=gunicorn_reload.DEFAULT_GUNICORN,
        help=f"pinned gunicorn to run (default {gunicorn_reload.DEFAULT_GUNICORN})",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    runs: dict[str, tuple[Callable[[Sequence[str]], int], list[str]]] = {
        "uwsgi": (uwsgi_reload.main, ["--rounds", str(args.rounds)]),
        "gunicorn": (
            gunicorn_reload.main,
            [
                "--rounds",
                str(args.rounds),
                "--gunicorn-version",
                args.gunicorn_version,
            ],
        ),
        "emperor": (emperor_reload.main, ["--rounds", str(args.rounds)]),
    }
    selected = SERVERS if args.server == "all" else (args.server,)
    outcomes: dict[str, int] = {}
    for server in selected:
        benchmark, benchmark_argv = runs[server]
        print(f"\n=== {server}: {' '.join(benchmark_argv)} ===", flush=True)
        # A failed benchmark does not keep the next one from reporting.
        outcomes[server] = benchmark(benchmark_argv)
        sys.stdout.flush()
    print(
        f"\n=== done in {time.monotonic() - started:.1f}s: "
        + ", ".join(
            f"{server} {'ok' if code == 0 else f'FAILED (exit {code})'}"
            for server, code in outcomes.items()
        )
    )
    return 0 if all(code == 0 for code in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""make demo: the main job on a local fleet, as an operator sees it.

    python3 demo/run.py            (make demo)
    python3 demo/run.py --clean    (make demo-clean)

Three Debian 12 app hosts under uWSGI and an nginx load balancer (127.0.0.1:18400), systemd containers of the test
bed reached over SSH. graceful.wsgi.deploy ships the demo app v1, then v2 while a real HTTP load runs through nginx.
The output is the deploy's own: each play as it starts, each batch's line as it ends, the report; then the load's
line and the path of the timeline picture (.build/demo/deploy-timeline.png). The fleet stays up afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import _timeline  # noqa: E402  (path set just above)
from benchmarks.deploy import Fleet, deploy_under_load, testbed_image  # noqa: E402

WORKDIR = REPO / ".build" / "demo"
PORT = 18400
RELEASES = (("v1", "3.7"), ("v2", "3.10"))


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--clean", action="store_true", help="remove the demo's fleet")
    args = parser.parse_args()
    fleet = Fleet(WORKDIR, 3, "uwsgi", name="demo", prefix="demo", lb_port=PORT)
    if args.clean:
        fleet.destroy()
        say("demo: fleet removed")
        return 0

    started = time.time()
    image = testbed_image("demo")
    say(f"== a fleet of 3 app hosts and nginx on 127.0.0.1:{PORT} (image {image}), reached over SSH")
    fleet.destroy()
    fleet.create(image)
    fleet.write_inventory()
    fleet.make_releases(RELEASES)

    say("\n== deploy v1: the first deploy provisions uWSGI, the app's units and nginx")
    fleet.deploy("v1", {}, stream=True)

    say(f"\n== deploy v2 while clients keep coming through nginx (http://127.0.0.1:{PORT}/)")
    report, seconds, verdict, load, dummy = deploy_under_load(fleet, "demo-v2", "v2", "v2", {}, stream=True)
    say(f"\nload through nginx during the deploy: {verdict['requests']} requests ({verdict['slow_requests']} slow), "
        f"{verdict['failed']} failed, p50 {verdict['p50_ms']} ms, p99 {verdict['p99_ms']} ms over "
        f"{verdict['seconds']} s; releases served {verdict['releases_seen']}")
    for problem in verdict.get("problems", []):
        say(f"load problem: {problem}")
    picture = _timeline.draw(WORKDIR / "deploy-timeline.png", _timeline.load_timeline(load.timeline), report,
                             f"make demo: graceful.wsgi.deploy v1 -> v2, 3 hosts (uWSGI) behind nginx, under load "
                             f"({seconds:.0f} s)")
    say(f"timeline picture: {picture}")
    say(f"\nmake demo took {time.time() - started:.0f} s. The fleet is still up: curl http://127.0.0.1:{PORT}/ ; "
        "make demo-clean removes it.")
    return 1 if verdict["rc"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""The FastRouter's subscription server against the other local users, with real uWSGI and real users.

A FastRouter, an Emperor and its vassals run as the app user, as the uwsgi_emperor role's units run them: the
subscription server is a unix socket in the app user's runtime directory (0750), with the units' umask 0027. A
rogue process runs as another unprivileged user, not in the app's group. The subscription server takes every
packet it reads: a subscribe routes the app's key to the node it names, an unsubscribe takes a vassal out.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.support.ansible_runner import PlaybookRunner
from tests.support.emperor_fleet import EmperorFleet
from tests.support.process import free_loopback_port, poll_until

APP_USER = "www-data"  # stands for the app's user
ROGUE_USER = "nobody"  # another local user, not in the app's group

# One datagram from a process of its own (argv: family, target, packet in hex); prints "sent" or the errno's name.
SENDER = """
import errno, socket, sys
family, target, packet = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
if family == "udp":
    host, port = target.rsplit(":", 1)
    sock, target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), (host, int(port))
else:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    sock.sendto(packet, target)
    print("sent")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno))
"""


def subscription_packet(key: str, address: str, command: int) -> bytes:
    """What a vassal sends (uWSGI's core/subscription.c): a uwsgi packet, modifier1 224, modifier2 the command
    (0 subscribe, 1 unsubscribe). Written here, not taken from the collection: it is the rogue's."""
    body = b"".join(struct.pack("<H", len(part)) + part for name, value in
                    (("key", key), ("address", address), ("modifier1", "0"), ("modifier2", "0"))
                    for part in (name.encode(), value.encode()))
    return struct.pack("<BHB", 224, len(body), command) + body


def runnable_by_others(path: str) -> bool:
    real = Path(os.path.realpath(path))
    return all(os.stat(directory).st_mode & 0o001 for directory in (real, *real.parents))


# The Python the sender runs on: this one may be under root's home, which other users cannot enter.
OTHERS_PYTHON = sys.executable if runnable_by_others(sys.executable) else "/usr/bin/python3"


def send_as(user: str, server: str, packet: bytes) -> str:
    """Send ``packet`` to the subscription server ``server`` from a process running as ``user`` alone (its
    group only); returns "sent" or the errno's name."""
    account = pwd.getpwnam(user)
    family = "unix" if server.startswith("/") else "udp"
    done = subprocess.run([OTHERS_PYTHON, "-I", "-c", SENDER, family, server, packet.hex()], check=False,
                          capture_output=True, text=True, timeout=30, user=account.pw_uid, group=account.pw_gid,
                          extra_groups=[])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def as_user(user: str, *argv: str) -> None:
    account = pwd.getpwnam(user)
    subprocess.run(argv, check=True, timeout=30, user=account.pw_uid, group=account.pw_gid, extra_groups=[])


@pytest.fixture
def reachable_dir():
    """A directory the app user can reach (pytest's tmp_path sits under root's 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="subscription-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def app_fleet(reachable_dir: Path):
    with EmperorFleet(reachable_dir / "unix", vassals=2, threads=1, user=APP_USER, emperor_freq=1) as running:
        yield running


def sync_with_router(fleet: EmperorFleet, marker_key: str) -> None:
    """Wait until the FastRouter has read everything sent to it before now: root subscribes a marker node under
    a key of its own, which the router reads after any datagram queued before it."""
    sent = send_as("root", fleet.subscription_server, subscription_packet(marker_key, "127.0.0.1:1", 0))
    assert sent == "sent"
    poll_until(lambda: fleet.router_nodes(marker_key), 10, f"the FastRouter reading the marker {marker_key}",
               on_timeout=fleet.log_tail)


def test_a_rogue_subscribe_or_unsubscribe_from_another_user_is_refused(app_fleet: EmperorFleet) -> None:
    """Protected: the app's traffic (no node of the rogue's for its key) and its vassals (none unsubscribed).
    Left: the FastRouter's nodes for the key are exactly the two vassals, both live and serving."""
    run_dir, server = app_fleet.run_dir, Path(app_fleet.subscription_server)
    app, rogue = pwd.getpwnam(APP_USER), pwd.getpwnam(ROGUE_USER)
    assert rogue.pw_uid != app.pw_uid and rogue.pw_name not in grp.getgrgid(app.pw_gid).gr_mem
    directory, sock = run_dir.stat(), server.lstat()
    assert (directory.st_uid, directory.st_gid, stat.S_IMODE(directory.st_mode)) == (app.pw_uid, app.pw_gid, 0o750)
    assert stat.S_ISSOCK(sock.st_mode) and sock.st_uid == app.pw_uid
    assert stat.S_IMODE(sock.st_mode) & 0o027 == 0, oct(sock.st_mode)

    rogue_node = f"127.0.0.1:{free_loopback_port()}"
    legit = {app_fleet.vassal_address(index) for index in range(2)}
    assert send_as(ROGUE_USER, str(server), subscription_packet(EmperorFleet.KEY, rogue_node, 0)) == "EACCES"
    for address in sorted(legit):
        assert send_as(ROGUE_USER, str(server), subscription_packet(EmperorFleet.KEY, address, 1)) == "EACCES"

    sync_with_router(app_fleet, "marker-after-rogue")
    nodes = app_fleet.router_nodes(EmperorFleet.KEY)
    assert set(nodes) == legit, nodes
    assert not any(node["death_mark"] for node in nodes.values()), nodes
    assert rogue_node not in app_fleet.router_nodes()
    assert app_fleet.serving() == 2


def test_over_udp_the_same_rogue_packets_are_taken(reachable_dir: Path) -> None:
    """The attack the socket stops, with the subscription server on UDP loopback (the role's old default): the
    rogue's node is routed the app's key and a vassal's node is marked dead. Left: the fleet stopped."""
    with EmperorFleet(reachable_dir / "udp", vassals=1, threads=1, subscription="udp", user=APP_USER) as fleet:
        rogue_node = f"127.0.0.1:{free_loopback_port()}"
        vassal = fleet.vassal_address(0)
        assert send_as(ROGUE_USER, fleet.subscription_server,
                       subscription_packet(EmperorFleet.KEY, rogue_node, 0)) == "sent"
        poll_until(lambda: rogue_node in fleet.router_nodes(EmperorFleet.KEY), 10,
                   "the rogue's node among the FastRouter's nodes for the app's key", on_timeout=fleet.log_tail)
        assert send_as(ROGUE_USER, fleet.subscription_server,
                       subscription_packet(EmperorFleet.KEY, vassal, 1)) == "sent"
        # Marked dead (or dropped) until the vassal's next announce, at most 2 s later, subscribes it again.
        poll_until(lambda: fleet.router_nodes(EmperorFleet.KEY).get(vassal, {}).get("death_mark", 1), 10,
                   "the vassal's node marked dead by the rogue's unsubscribe", interval=0.02)


def test_the_reload_drains_through_the_app_users_socket_and_never_follows_a_symlink_put_in_its_place(
        ansible: PlaybookRunner, app_fleet: EmperorFleet, reachable_dir: Path) -> None:
    """Root's module drains a vassal by sending its unsubscribe to the subscription socket, in a directory the app
    user owns. The app user swaps the socket for a symlink to another socket (standing for /dev/log or systemd's,
    which only root may write to). Protected: that socket gets nothing from root. Left: the vassal reloaded without
    its drain, the error naming the symlink in its result, the socket restored and both vassals serving."""
    server = Path(app_fleet.subscription_server)
    first = ansible.run_module("uwsgi_vassals_reload", app_fleet.module_args(vassals=["demo-1"], timeout=30))
    assert not first.get("failed"), first.get("msg")
    (drained,) = first["vassals"]
    assert drained["name"] == "demo-1" and drained["state"] == "reloaded" and "drain_errors" not in drained, drained
    # Drained: root's unsubscribe passed the socket's checks and the FastRouter dropped the node.
    assert drained["drain_seconds"] is not None, drained

    bait_dir = reachable_dir / "root-only"
    bait_dir.mkdir(mode=0o700)
    bait = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bait.bind(str(bait_dir / "bait.sock"))
    bait.setblocking(False)
    config = app_fleet.emperor_dir / "demo-2.ini"
    touched_before = config.stat().st_mtime
    outcome: dict = {}
    try:
        as_user(APP_USER, "mv", str(server), f"{server}.real")
        as_user(APP_USER, "ln", "-s", str(bait_dir / "bait.sock"), str(server))
        runner = threading.Thread(target=lambda: outcome.update(ansible.run_module(
            "uwsgi_vassals_reload", app_fleet.module_args(vassals=["demo-2"], timeout=30))))
        runner.start()
        try:
            # Touched: the drain was tried (and refused) before. The vassal announces to the path again once
            # reloaded; with the socket back it comes back.
            poll_until(lambda: config.stat().st_mtime != touched_before, 40, "the module touching demo-2")
        finally:
            as_user(APP_USER, "mv", "-T", f"{server}.real", str(server))
            runner.join(120)
        with pytest.raises(BlockingIOError):
            bait.recv(4096)
    finally:
        bait.close()
    assert not outcome.get("failed"), outcome.get("msg")
    (reloaded,) = outcome["vassals"]
    assert reloaded["name"] == "demo-2" and reloaded["state"] == "reloaded", reloaded
    assert reloaded["drain_errors"] == [f"{server}: not a socket (a symbolic link, not followed); nothing sent"]
    poll_until(lambda: app_fleet.serving() == 2, 20, "both vassals serving", on_timeout=app_fleet.log_tail)

"""lb_state against a real HAProxy and on server files written by the role lb_nginx's own template.

HAProxy (the Debian package, 2.6 on Debian 12) runs in the foreground with a configuration and an admin socket in
a temporary directory; its backend has two servers on loopback ports, each a small HTTP server that passes
HAProxy's health check. Servers are drained and enabled the way the role lb_haproxy does it
(community.general.haproxy, state=disabled drain=true and state=enabled) and with the admin socket's own
commands, and lb_state, installed as users install it, runs through ansible-playbook after each step.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from tests.support.ansible_runner import REPO_ROOT, PlaybookRunner

BACKEND = "shop"
SERVERS = ("app1", "app2")
NGINX_TEMPLATE = REPO_ROOT / "roles" / "lb_nginx" / "templates" / "server.conf.j2"


def haproxy_binary() -> str:
    # /usr/sbin, where Debian puts it, is not on every user's PATH.
    path = shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        pytest.fail("haproxy is not installed: this test needs the Debian package haproxy "
                    "(make debian-deps installs it; or apt-get install haproxy)")
    if os.geteuid() != 0:
        pytest.fail("this test must run as root: lb_state trusts only an admin socket owned by root, and HAProxy "
                    "creates its socket as the user it runs as")
    return path


class Healthy:
    """An HTTP server on a loopback port that answers 200 to everything (HAProxy's health check)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # HAProxy's health check may close before the answer is written

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def admin(path: str, command: str, timeout: float = 5) -> str:
    """HAProxy's answer to one command line on its admin socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(path)
        client.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def statuses(path: str) -> dict[str, str]:
    """{server: status} of the backend, from show stat."""
    lines = admin(path, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    return {row["svname"]: row["status"] for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")}


class Haproxy:
    """A real HAProxy in the foreground, its configuration and admin socket in a short temporary directory."""

    def __init__(self, binary: str, ports: dict[str, int]) -> None:
        # A unix socket path has at most 107 bytes: pytest's tmp_path can be longer.
        self.directory = Path(tempfile.mkdtemp(prefix="lbs-"))
        self.socket = str(self.directory / "admin.sock")
        servers = "".join(f"    server {name} 127.0.0.1:{port} check\n" for name, port in ports.items())
        self.config = self.directory / "haproxy.cfg"
        self.config.write_text(
            "global\n"
            f"    stats socket {self.socket} mode 600 level admin\n"
            "    stats timeout 30s\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 2s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            f"backend {BACKEND}\n"
            "    balance roundrobin\n"
            "    option httpchk\n"
            "    http-check send meth GET uri /healthz\n"
            "    http-check expect status 200\n"
            "    default-server inter 200ms rise 1 fall 1\n"
            f"{servers}")
        checked = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True, timeout=30,
                                 check=False)
        assert checked.returncode == 0, f"haproxy -c refused {self.config}:\n{checked.stdout}{checked.stderr}"
        self.log = open(self.directory / "haproxy.log", "w")
        self.process = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until(self, expected: dict[str, str], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        seen: dict[str, str] | str = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"haproxy exited with {self.process.returncode}: {self.output()}")
            try:
                seen = statuses(self.socket)
            except OSError as exc:
                seen = str(exc)
            if seen == expected:
                return
            time.sleep(0.1)
        pytest.fail(f"HAProxy's servers did not reach {expected} within {timeout}s: {seen}; {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.directory / "haproxy.log").read_text()[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        shutil.rmtree(self.directory)


class WithCommunityGeneral(PlaybookRunner):
    """ansible-playbook that also finds community.general (bundled with the ansible package), for its haproxy
    module: the one the role lb_haproxy drains and enables with."""

    def env(self) -> dict[str, str]:
        general = importlib.import_module("ansible_collections.community.general")
        env = super().env()
        site = Path(list(general.__path__)[0]).parents[2]
        env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join([env["ANSIBLE_COLLECTIONS_PATH"], str(site)])
        return env


@pytest.fixture
def haproxy():
    binary = haproxy_binary()
    healthy = {name: Healthy() for name in SERVERS}
    instance = Haproxy(binary, {name: server.port for name, server in healthy.items()})
    try:
        instance.wait_until({name: "UP" for name in SERVERS})
        yield instance
    finally:
        instance.stop()
        for server in healthy.values():
            server.close()


@pytest.fixture
def runner(installed_collections: Path, tmp_path: Path) -> PlaybookRunner:
    return WithCommunityGeneral(installed_collections, tmp_path / "ansible")


def states(outcome: dict) -> dict[str, tuple]:
    assert not outcome.get("failed"), outcome
    assert outcome["changed"] is False
    return {name: (report["state"], report.get("admin"), report.get("status"))
            for name, report in outcome["servers"].items()}


@pytest.mark.timeout(180)
def test_haproxy_drain_and_enable_as_the_role_does_them(haproxy, runner):
    lb = {"lb": "haproxy", "app": BACKEND, "socket": haproxy.socket, "timeout": 3}
    role = {"backend": BACKEND, "socket": haproxy.socket, "fail_on_not_found": True, "wait": True,
            "wait_interval": 1, "wait_retries": 15}
    outcomes = runner.run_tasks([
        {"graceful.wsgi.lb_state": lb},
        # roles/lb_haproxy/tasks/drain.yml
        {"community.general.haproxy": {"state": "disabled", "drain": True, "host": "app2", **role}},
        {"graceful.wsgi.lb_state": lb},
        {"graceful.wsgi.lb_state": lb, "check_mode": True},
        # roles/lb_haproxy/tasks/enable.yml
        {"community.general.haproxy": {"state": "enabled", "host": "app2", **role}},
        {"graceful.wsgi.lb_state": {**lb, "servers": ["app2", "app1", "ghost"]}},
    ])
    before, drain, drained, drained_check, enable, named = outcomes

    assert states(before) == {"app1": ("enabled", "READY", "UP"), "app2": ("enabled", "READY", "UP")}
    assert before["enabled"] == ["app1", "app2"] and before["drained"] == [] and before["missing"] == []
    assert before["servers"]["app1"]["detail"] == "ready (status UP, 0 open sessions)"
    assert before["msg"] == "haproxy backend shop: 2 enabled (app1, app2)"

    assert not drain.get("failed"), drain
    assert states(drained) == {"app1": ("enabled", "READY", "UP"), "app2": ("drained", "MAINT", "MAINT")}
    assert drained["servers"]["app2"]["detail"] == ("in maintenance: disabled through the admin socket "
                                                    "(status MAINT, 0 open sessions)")
    assert (drained["enabled"], drained["drained"]) == (["app1"], ["app2"])
    assert drained["msg"] == "haproxy backend shop: 1 enabled (app1), 1 drained (app2)"
    assert drained_check["servers"] == drained["servers"]

    assert not enable.get("failed"), enable
    assert states(named) == {"app1": ("enabled", "READY", "UP"), "app2": ("enabled", "READY", "UP"),
                             "ghost": ("missing", None, None)}
    assert named["missing"] == ["ghost"] and named["enabled"] == ["app1", "app2"]
    for outcome in (before, drained, drained_check, named):
        assert outcome["seconds"] < 10, outcome


@pytest.mark.timeout(180)
def test_haproxy_drain_state_weight_zero_and_failures(haproxy, runner, tmp_path):
    assert admin(haproxy.socket, f"set server {BACKEND}/app1 state drain") == "\n"
    assert admin(haproxy.socket, f"set weight {BACKEND}/app2 0") == "\n"
    haproxy.wait_until({"app1": "DRAIN", "app2": "UP"})
    not_a_socket = tmp_path / "admin.sock"
    not_a_socket.write_text("a regular file\n")
    lb = {"lb": "haproxy", "app": BACKEND, "socket": haproxy.socket, "timeout": 3}
    draining, unknown, missing, regular = runner.run_tasks([
        {"graceful.wsgi.lb_state": lb},
        {"graceful.wsgi.lb_state": {**lb, "backend": "blog"}},
        {"graceful.wsgi.lb_state": {**lb, "socket": str(haproxy.directory / "nope.sock")}},
        {"graceful.wsgi.lb_state": {**lb, "socket": str(not_a_socket)}},
    ])

    assert states(draining) == {"app1": ("drained", "DRAIN", "DRAIN"), "app2": ("drained", "READY", "UP")}
    assert draining["servers"]["app1"]["detail"] == ("draining: set to drain through the admin socket "
                                                     "(status DRAIN, 0 open sessions)")
    assert draining["servers"]["app2"]["weight"] == 0
    assert draining["servers"]["app2"]["detail"] == "weight 0: no new sessions (status UP, 0 open sessions)"

    assert unknown.get("failed") and unknown["msg"] == "backend=blog: HAProxy has no such backend", unknown
    assert missing.get("failed") and missing["msg"] == (
        f"socket={haproxy.directory}/nope.sock: no such socket (is HAProxy running, with this \"stats socket\" in "
        "its global section?)"), missing
    assert regular.get("failed") and regular["msg"] == f"socket={not_a_socket}: is a regular file, not a socket"
    for outcome in (unknown, missing, regular):
        assert outcome["seconds"] < 5, outcome


@pytest.mark.timeout(120)
def test_nginx_server_files_written_by_the_role_template(runner, tmp_path):
    config_dir = tmp_path / "nginx" / "shop"
    (config_dir / "servers").mkdir(parents=True)

    def server_file(name: str, address: str, down: bool) -> dict:
        # roles/lb_nginx/tasks/set_server.yml, with the role's defaults.
        return {"ansible.builtin.template": {"src": str(NGINX_TEMPLATE), "dest": f"{config_dir}/servers/{name}.conf",
                                             "owner": "root", "group": "root", "mode": "0644"},
                "vars": {"lb_nginx_server": name, "lb_nginx_server_address": address, "lb_nginx_max_fails": 1,
                         "lb_nginx_fail_timeout": 10, "lb_nginx_server_down": down}}

    lb = {"lb": "nginx", "app": "shop", "config_dir": str(config_dir)}
    outcomes = runner.run_tasks([
        server_file("app1", "127.0.0.1:18001", False),
        server_file("app2", "127.0.0.1:18002", True),
        {"graceful.wsgi.lb_state": lb},
        {"graceful.wsgi.lb_state": {**lb, "servers": ["app1", "app3"]}, "check_mode": True},
        # enable.yml rewrites the file without "down".
        server_file("app2", "127.0.0.1:18002", False),
        {"graceful.wsgi.lb_state": lb},
        {"graceful.wsgi.lb_state": {**lb, "config_dir": str(tmp_path / "nginx" / "blog")}},
    ])
    written, _drain, both, named, _enable, enabled, absent = outcomes

    assert not written.get("failed"), written
    assert "down;" not in (config_dir / "servers" / "app2.conf").read_text()  # enabled again at the end
    assert states(both) == {"app1": ("enabled", None, None), "app2": ("drained", None, None)}
    assert both["servers"]["app2"] == {"state": "drained", "detail": f"marked down in {config_dir}/servers/app2.conf",
                                       "address": "127.0.0.1:18002", "path": f"{config_dir}/servers/app2.conf"}
    assert states(named) == {"app1": ("enabled", None, None), "app3": ("missing", None, None)}
    assert states(enabled) == {"app1": ("enabled", None, None), "app2": ("enabled", None, None)}
    assert absent.get("failed") and absent["msg"] == (
        f"config_dir={tmp_path}/nginx/blog: {tmp_path}/nginx/blog does not exist (is the role lb_nginx set up for "
        "this app on this host?)")

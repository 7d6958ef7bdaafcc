"""A real uWSGI Emperor with N single-process vassals subscribed to a FastRouter, on loopback.

HTTP enters through a uWSGI HTTP router that forwards to the FastRouter (the integration host has no nginx;
the molecule scenario puts nginx there). Vassals are set up as the subscription system needs: need-app,
no lazy-apps, unsubscribe-on-graceful-reload. Like uwsgi_instance.py this does not import the collection.

The subscription server is a unix socket in a runtime directory, as the uwsgi_emperor role sets it (or UDP on
loopback, its old form). With ``user`` every uWSGI process runs as that user, with its group only and umask 0027,
and the runtime directory is that user's, mode 0750: what the role's systemd units make of /run/<app>-fastrouter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .demo_app import write_release
from .process import StartStop, free_loopback_port, poll_until, stop_process_group
from .uwsgi_instance import read_stats_socket


class EmperorFleet(StartStop):
    KEY = "demo"

    def __init__(self, workdir: Path, vassals: int = 4, threads: int = 4, import_delay: float = 0.2,
                 uwsgi_bin: str | Path | None = None, release: str = "v1", subscription: str = "unix",
                 user: str | None = None, emperor_freq: int = 3, symlinks: bool = False,
                 nofollow: bool = False) -> None:
        self.workdir = Path(workdir)
        # symlinks: the layout of the Emperor docs' reload script, one ini (self.shared_ini) and a symlink to it
        # per vassal, whose socket and log are named after the link (%n). nofollow: --emperor-nofollow.
        self.symlinks = symlinks
        self.nofollow = nofollow
        self.shared_ini = self.workdir / "vassal.ini"
        # Seconds between the Emperor's scans of its directory (uWSGI's default 3; the role sets 1).
        self.emperor_freq = emperor_freq
        self.user = pwd.getpwnam(user) if user else None
        self.emperor_dir = self.workdir / "vassals"
        self.emperor_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths must stay under 108 bytes (uWSGI cuts a subscription server's at 102): pytest's
        # tmp_path can be longer.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="emperor-"))
        self.run_dir = self.socket_dir / "run"
        self.run_dir.mkdir(mode=0o750)
        if self.user:
            # The app user reaches its own files only: the workdir for the vassals' logs, the runtime directory.
            self.socket_dir.chmod(0o755)
            os.chown(self.run_dir, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.workdir, self.user.pw_uid, self.user.pw_gid)
        self.emperor_stats = self.run_dir / "emperor-stats.sock"
        self.router_stats = self.run_dir / "fastrouter-stats.sock"
        self.app_path = self.workdir / "app.py"
        self.uwsgi_bin = Path(uwsgi_bin) if uwsgi_bin else Path(sys.executable).with_name("uwsgi")
        self.count = vassals
        self.threads = threads
        self.import_delay = import_delay
        self.http_port = free_loopback_port()
        self.router_port = free_loopback_port()
        if subscription == "unix":
            self.subscription_server = str(self.run_dir / "subscription.sock")
        elif subscription == "udp":
            self.subscription_server = f"127.0.0.1:{free_loopback_port()}"
        else:
            raise ValueError(f"subscription={subscription!r}: 'unix' or 'udp'")
        self.vassal_ports = [free_loopback_port() for _index in range(vassals)]
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self.set_release(release)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def vassal_name(self, index: int) -> str:
        return f"demo-{index + 1}"

    def set_release(self, release: str, broken: bool = False) -> None:
        write_release(self.app_path, release, broken=broken, import_delay=self.import_delay)
        self.release = release

    def _write_vassals(self) -> None:
        if self.symlinks:
            self.shared_ini.write_text("\n".join(self._vassal_lines(f"{self.run_dir}/%n.sock", "%n")) + "\n")
            for index in range(self.count):
                (self.emperor_dir / f"{self.vassal_name(index)}.ini").symlink_to(self.shared_ini)
            return
        for index, port in enumerate(self.vassal_ports):
            lines = self._vassal_lines(f"127.0.0.1:{port}", self.vassal_name(index))
            (self.emperor_dir / f"{self.vassal_name(index)}.ini").write_text("\n".join(lines) + "\n")

    def _vassal_lines(self, socket: str, log_name: str) -> list[str]:
        return [
            "[uwsgi]",
            "master = true",
            "processes = 1",
            f"threads = {self.threads}",
            f"socket = {socket}",
            f"wsgi-file = {self.app_path}",
            "need-app = true",
            f"subscribe-to = {self.subscription_server}:{self.KEY}",
            "unsubscribe-on-graceful-reload = true",
            "subscribe-freq = 2",
            "listen = 1024",
            "worker-reload-mercy = 60",
            "disable-logging = true",
            f"logto = {self.workdir / (log_name + '.log')}",
        ]

    def vassal_address(self, index: int) -> str:
        """The address vassal ``index`` subscribes with: its FastRouter node's name."""
        if self.symlinks:
            return f"{self.run_dir}/{self.vassal_name(index)}.sock"
        return f"127.0.0.1:{self.vassal_ports[index]}"

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self._logs.append(log)
        identity: dict[str, Any] = {}
        if self.user:
            identity = dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[], umask=0o027)
        self._processes.append(subprocess.Popen(
            [str(self.uwsgi_bin), *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True, **identity))

    def start(self, timeout: float = 30.0) -> None:
        self._write_vassals()
        self._spawn("fastrouter", [
            "--master", "--fastrouter", f"127.0.0.1:{self.router_port}",
            "--fastrouter-subscription-server", self.subscription_server,
            "--fastrouter-stats", str(self.router_stats)])
        # In front, as nginx would be: its own instance, with the key the vassals subscribe under.
        self._spawn("http", [
            "--master", "--http", f"127.0.0.1:{self.http_port}", "--http-to", f"127.0.0.1:{self.router_port}",
            "--http-var", f"UWSGI_FASTROUTER_KEY={self.KEY}", "--disable-logging"])
        self._spawn("emperor", ["--emperor", str(self.emperor_dir), "--emperor-stats", str(self.emperor_stats),
                                "--emperor-freq", str(self.emperor_freq),
                                *(["--emperor-nofollow"] if self.nofollow else [])])
        try:
            poll_until(lambda: self.serving() == self.count, timeout, f"{self.count} vassals serving",
                       on_timeout=self.log_tail)
        except BaseException:
            self.stop()
            raise

    def serving(self) -> int:
        """Vassals that run, accept and have a live FastRouter subscription."""
        try:
            emperor = read_stats_socket(self.emperor_stats)
            live = {name for name, node in self.router_nodes().items() if not node.get("death_mark")}
        except (OSError, ValueError):
            return 0
        accepting = {v["id"] for v in emperor.get("vassals", []) if v.get("accepting")}
        return sum(1 for index in range(self.count)
                   if f"{self.vassal_name(index)}.ini" in accepting and self.vassal_address(index) in live)

    def router_nodes(self, key: str | None = None) -> dict[str, dict[str, Any]]:
        """The FastRouter's nodes (of ``key``, else of every key) by name, as its stats server lists them."""
        router = read_stats_socket(self.router_stats)
        return {node["name"]: dict(node, key=sub.get("key")) for sub in router.get("subscriptions", [])
                if key is None or sub.get("key") == key for node in sub.get("nodes", [])}

    @property
    def running(self) -> bool:
        """True while the Emperor and both routers run."""
        return bool(self._processes) and all(process.poll() is None for process in self._processes)

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of every log: the routers', the Emperor's and each vassal's."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def module_args(self, **extra: Any) -> dict[str, Any]:
        return {"emperor_dir": str(self.emperor_dir), "emperor_stats": str(self.emperor_stats),
                "fastrouter_stats": str(self.router_stats), **extra}

    def stop(self) -> None:
        # The Emperor (and its vassals) first, then the routers.
        for process in reversed(self._processes):
            stop_process_group(process)
        self._processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

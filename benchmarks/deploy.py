"""Deploy benchmark: graceful.wsgi.deploy on a fleet of the test bed, under load, against the physical limit.

    python3 benchmarks/deploy.py [--hosts 6] [--serial 3] [--server uwsgi|gunicorn] [--keep] [--workdir DIR]
    make benchmark-deploy [BENCH_ARGS="--hosts 12"]

Builds --hosts Debian 12 app hosts and an nginx load balancer as systemd containers of the test bed, reached over
SSH as a user's fleet is (molecule/shared/ssh_create.yml), deploys the demo app v1, then runs three deploys, each
under a real HTTP load through the load balancer (tests/fleet/probe.py lb: fresh connections, slow requests in
flight, 0 failed required):

  one     v2 to one host (graceful_app_group one), a batch of 1 host;
  three   v2 to four more hosts in batches of 3: a batch of 3 hosts, then one of 1 (skipped with fewer than 5
          hosts);
  all     v3 to every host, --serial hosts per batch.

It prints, side by side in one run:
  - per host and step of the "all" deploy, the time and the physical limit of the host's turn: the load balancer's
    longest in-flight request at the drain (nginx_server's wait for its old workers), the reload module's own
    elapsed and the health gate's time;
  - per batch, its time; the staging's time; the total;
  - the ratios against the targets: critical path / limit <= 2 per host, a batch of 3 <= 1.3 x a batch of 1,
    the whole deploy <= staging + batches x (a batch of 3) x 1.1, staging every host <= 2 x staging one host.
It writes WORKDIR/deploy-timeline.png (the "all" deploy) and WORKDIR/deploy-benchmark.json, and removes the fleet
unless --keep. Exit status 1 when a deploy failed or a request failed; the targets are figures, not a verdict.
"""

from __future__ import annotations

import argparse
import json
import re
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import _timeline  # noqa: E402  (path set just above)

SCENARIO = "bench-deploy"
LB_PORT = 18600
RELEASES = (("v1", "3.7"), ("v2", "3.10"), ("v3", "3.11"))
SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o LogLevel=ERROR"
# A deploy of a dozen hosts under load on two cores takes minutes; this bounds a hung one.
DEPLOY_TIMEOUT = 1800
# The load alone, before each measured deploy: what it costs the machine is not counted as the staging's.
BASELINE_SECONDS = 3.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(argv: list[str], timeout: float, env: dict[str, str] | None = None, capture: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, cwd=REPO, env=env, timeout=timeout, text=True, check=False,
                              stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    except subprocess.TimeoutExpired:
        sys.exit(f"benchmark: {' '.join(argv[:3])} ... did not finish within {timeout:.0f} s")


class Fleet:
    """The containers, the inventory and the environment the playbooks run with (make demo's fleet too)."""

    def __init__(self, workdir: Path, hosts: int, server: str, name: str = SCENARIO, prefix: str = "bench",
                 lb_port: int = LB_PORT):
        self.workdir = workdir
        self.name = name
        self.hosts = [f"{prefix}-app{i}" for i in range(1, hosts + 1)]
        self.lb = f"{prefix}-lb"
        self.lb_port = lb_port
        self.server = server
        self.inventory = workdir / "inventory.json"
        self.releases = workdir / "releases"
        bin_dir = REPO / ".venv" / "bin"
        self.env = dict(os.environ,
                        PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
                        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"),
                        ANSIBLE_PIPELINING="true", ANSIBLE_HOST_KEY_CHECKING="false",
                        ANSIBLE_FORKS=str(max(50, hosts + 5)), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_SSH_CONTROL_PATH_DIR=str(workdir / "cp"))
        self.playbook = str(bin_dir / "ansible-playbook")

    def platforms(self) -> list[dict]:
        return ([{"name": name, "groups": ["app"]} for name in self.hosts]
                + [{"name": self.lb, "groups": ["lb"], "published_ports": [f"127.0.0.1:{self.lb_port}:80"]}])

    def molecule_vars(self) -> dict:
        # An inventory naming localhost would make it an explicit host, whose Python is discovered: the implicit
        # localhost of the deploys runs the controller's own, as this one does.
        return {"ansible_python_interpreter": str(REPO / ".venv" / "bin" / "python"),
                "molecule_yml": {"platforms": self.platforms()}, "molecule_scenario_name": self.name,
                "molecule_ephemeral_directory": str(self.workdir),
                "molecule_instance_config": str(self.workdir / "instance_config.yml")}

    def create(self, image: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cp").mkdir(exist_ok=True)
        env = dict(self.env, GRACEFUL_FLEET_IMAGE=image, ANSIBLE_STDOUT_CALLBACK="graceful.wsgi.progress")
        result = run([self.playbook, str(REPO / "molecule/shared/ssh_create.yml"),
                      "-e", json.dumps(self.molecule_vars())], 600, env, capture=True)
        if result.returncode:
            sys.exit(f"{self.name}: the fleet could not be created (molecule/shared/ssh_create.yml failed):\n"
                     f"{result.stdout[-2000:]}{result.stderr[-1000:]}")

    def write_inventory(self) -> None:
        import yaml  # the venv's (ansible-core's dependency)

        instances = {item["instance"]: item for item in yaml.safe_load((self.workdir / "instance_config.yml").read_text())}

        def host(name: str) -> dict:
            item = instances[name]
            return {"ansible_host": item["address"], "ansible_user": item["user"],
                    "ansible_private_key_file": item["identity_file"], "ansible_ssh_common_args": SSH_ARGS}

        # Four hosts, so that a batch of 3 leaves one of them serving (the rollout refuses a batch of the whole group).
        three = self.hosts[1:5] if len(self.hosts) >= 5 else []
        inventory = {"all": {
            "vars": {"graceful_app": "demo", "graceful_server": self.server, "graceful_lb": "nginx",
                     "graceful_health_timeout": 15,
                     "release_wheelhouse_cache": str(REPO / ".build" / "wheelhouses")},
            "children": {
                "app": {"hosts": {name: host(name) for name in self.hosts}},
                "lb": {"hosts": {self.lb: host(self.lb)}},
                # The batches of one and of three: deploys whose graceful_app_group is a part of the fleet.
                "one": {"hosts": {self.hosts[0]: {}}},
                "three": {"hosts": {name: {} for name in three}},
            }}}
        self.inventory.write_text(json.dumps(inventory, indent=1))

    def destroy(self) -> None:
        run([self.playbook, str(REPO / "molecule/shared/ssh_destroy.yml"),
             "-e", json.dumps(self.molecule_vars())], 300, self.env, capture=True)

    def make_releases(self, releases=RELEASES) -> None:
        for release, idna in releases:
            target = self.releases / release
            if not (target / "static").exists():
                result = run([sys.executable, str(REPO / "demo/make_release.py"), str(target), "--release", release,
                              "--idna", idna], 300, self.env, capture=True)
                if result.returncode:
                    sys.exit(f"benchmark: demo/make_release.py {release} failed: {result.stderr.strip()[-500:]}")

    def deploy(self, release: str, extra: dict, stream: bool = False, cpu: CpuSampler | None = None) -> tuple[dict, float]:
        """(the run's graceful_rollout report, its wall time) of a deploy of ``release``, its output in the
        collection's progress callback: on the terminal with ``stream``, else in WORKDIR/deploy-RELEASE.log.
        ``cpu`` samples the ansible-playbook's CPU time too."""
        report_path = self.workdir / f"report-{release}.json"
        report_path.unlink(missing_ok=True)
        log_path = self.workdir / f"deploy-{release}.log"
        env = dict(self.env, ANSIBLE_STDOUT_CALLBACK="graceful.wsgi.progress", GRACEFUL_PROGRESS_REPORT=str(report_path))
        extra = dict(extra, graceful_release=release, graceful_src=str(self.releases / release))
        started = time.time()
        argv = [self.playbook, "graceful.wsgi.deploy", "-i", str(self.inventory), "-e", json.dumps(extra)]
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=None if stream else log_file,
                                       stderr=subprocess.STDOUT)
            if cpu is not None:
                cpu.playbook_pid = process.pid
            try:
                process.wait(timeout=DEPLOY_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                sys.exit(f"{self.name}: the deploy of {release} did not finish within {DEPLOY_TIMEOUT} s")
        seconds = time.time() - started
        try:
            report = json.loads(report_path.read_text()).get("graceful_rollout", {})
        except (OSError, ValueError):
            report = {}
        if process.returncode or not report.get("ok"):
            tail = "" if stream else "\n".join(log_path.read_text().splitlines()[-25:])
            sys.exit(f"{self.name}: the deploy of {release} failed (rc={process.returncode}){': ' if tail else ''}\n{tail}")
        return report, seconds


class Load:
    """tests/fleet/probe.py lb through the load balancer while one deploy runs."""

    def __init__(self, fleet: Fleet, name: str, expect: str):
        self.fleet = fleet
        self.marks = fleet.workdir / "marks" / name
        shutil.rmtree(self.marks, ignore_errors=True)
        self.marks.mkdir(parents=True)
        self.timeline = fleet.workdir / f"timeline-{name}.json"
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "tests/fleet/probe.py"), "lb", f"--url=http://127.0.0.1:{fleet.lb_port}",
             f"--marks={self.marks}", f"--expect-release={expect}", "--max-seconds=1800",
             f"--timeline={self.timeline}"], cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while not (self.marks / "warm").exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                sys.exit("benchmark: the load balancer did not answer the load within 60 s")
            time.sleep(0.1)

    def finish(self) -> dict:
        (self.marks / "done").write_text("done\n")
        try:
            out, dummy = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            sys.exit("benchmark: the load did not end within 120 s of the deploy's end")
        verdict = json.loads(out)
        verdict["rc"] = self.process.returncode
        return verdict


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Where a container's CPU time is counted: cgroup v1 (the test bed's, docs/fleet-testbed.md) or v2.
CGROUP_CPU_FILES = ("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage",
                    "/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat", "/sys/fs/cgroup/docker/{id}/cpu.stat")


def container_cpu_files(names: list[str]) -> dict[str, Path]:
    """The cgroup file counting each container's CPU time, for those whose file is found."""
    result = run(["docker", "inspect", "--format", "{{.Id}}", *names], 60, capture=True)
    files = {}
    for name, container_id in zip(names, result.stdout.split() if result.returncode == 0 else []):
        for pattern in CGROUP_CPU_FILES:
            path = Path(pattern.format(id=container_id))
            if path.exists():
                files[name] = path
                break
    return files


def cgroup_cpu_seconds(path: Path) -> float:
    text = path.read_text()
    if path.name == "cpuacct.usage":
        return int(text) / 1e9
    fields = dict(line.split() for line in text.splitlines())
    return int(fields["usage_usec"]) / 1e6


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children it has waited for: ansible-playbook with its task workers and their
    ssh clients, each counted once its task ended."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


class CpuSampler:
    """The machine's CPU use while a deploy runs, sampled every ``interval`` s: the machine's busy time
    (/proc/stat), each test-bed host's (its container's cgroup) and the controller's (ansible-playbook and its task
    workers). On the test bed every host shares the controller's cores: a step that is CPU-bound there says so here."""

    def __init__(self, containers: dict[str, Path] | None = None, interval: float = 0.5):
        self.interval = interval
        self.containers = containers or {}
        self.playbook_pid: int | None = None
        self.baseline_end: float | None = None
        self.samples: list[tuple[float, int, int, dict[str, float], float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields) - idle, sum(fields)

    def _sample(self) -> None:
        busy, total = self._read()
        hosts = {}
        for name, path in self.containers.items():
            try:
                hosts[name] = cgroup_cpu_seconds(path)
            except (OSError, ValueError, KeyError):
                pass
        controller = None
        if self.playbook_pid is not None:
            try:
                controller = process_tree_cpu_seconds(self.playbook_pid)
            except (OSError, ValueError, IndexError):
                pass
        self.samples.append((time.time(), busy, total, hosts, controller))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _inside(self, start: float, end: float) -> list[tuple]:
        return [sample for sample in self.samples if start <= sample[0] <= end]

    def busy(self, start: float, end: float) -> float | None:
        """The share of the machine's CPU time that was busy between ``start`` and ``end`` (epoch seconds)."""
        inside = self._inside(start, end)
        if len(inside) < 2:
            return None
        busy0, total0 = inside[0][1:3]
        busy1, total1 = inside[-1][1:3]
        return (busy1 - busy0) / (total1 - total0) if total1 > total0 else None

    def seconds(self, start: float, end: float, hosts: list[str]) -> dict[str, float] | None:
        """CPU seconds spent between ``start`` and ``end``: by the machine, by ``hosts`` together, by the controller's
        ansible-playbook, and by everything else (the load, the load balancer, the benchmark)."""
        inside = self._inside(start, end)
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        machine = (last[1] - first[1]) / CLOCK_TICKS
        counted = [name for name in hosts if name in first[3] and name in last[3]]
        on_hosts = sum(last[3][name] - first[3][name] for name in counted)
        # ansible-playbook's last sample is before it exited: the span's own samples of it, not the span's ends.
        playbook = [sample[4] for sample in inside if sample[4] is not None]
        controller = playbook[-1] - playbook[0] if playbook else 0.0
        return dict(machine=machine, hosts=on_hosts, hosts_counted=len(counted), controller=controller,
                    other=max(0.0, machine - on_hosts - controller), seconds=last[0] - first[0])

    def net_seconds(self, start: float, end: float, hosts: list[str]) -> dict[str, float] | None:
        """seconds(), less what the load alone cost over as long a time: the rates sampled before the deploy
        started (baseline_end). ``load_cores`` is how many cores the load alone kept busy."""
        spent = self.seconds(start, end, hosts)
        base = self.seconds(self.samples[0][0], self.baseline_end, hosts) if self.baseline_end else None
        if spent is None or not base or base["seconds"] <= 0:
            return spent
        scale = spent["seconds"] / base["seconds"]
        net = {key: max(0.0, spent[key] - base[key] * scale) for key in ("machine", "hosts", "other")}
        return dict(spent, **net, load_cores=base["machine"] / base["seconds"])


def host_rows(report: dict) -> list[dict]:
    rows = []
    for host in report.get("hosts", []):
        timings = host.get("timings", {})
        critical = sum(float(timings.get(step, 0)) for step in ("drain", "switch", "reload", "verify", "enable"))
        limit = float(host.get("drain_waited", 0)) + float(host.get("reload_seconds", 0)) + float(host.get("health_seconds", 0))
        rows.append(dict(host=host["host"], batch=host.get("batch"), timings=timings, critical=critical, limit=limit,
                         drain_waited=float(host.get("drain_waited", 0)), reload=float(host.get("reload_seconds", 0)),
                         health=float(host.get("health_seconds", 0)), ratio=critical / limit if limit else float("inf")))
    return rows


def batch_times(report: dict) -> list[tuple[str, float, int]]:
    """(batch, seconds, hosts in it) of each batch."""
    hosts = report.get("hosts", [])
    return [(batch, end - start, sum(1 for h in hosts if h.get("batch") == batch))
            for batch, start, end in _timeline.batches(hosts)]


def staging_time(report: dict) -> float:
    span = _timeline.staging(report.get("hosts", []))
    return span[1] - span[0] if span else 0.0


def testbed_image(who: str) -> str:
    """The test bed's host image, with its Docker engine started when none answers (tests/fleet/testbed)."""
    testbed = REPO / "tests" / "fleet" / "testbed"
    if run([str(testbed), "engine"], 300).returncode:
        sys.exit(f"{who}: tests/fleet/testbed engine could not start a Docker engine")
    image = run([str(testbed), "image"], 1800, capture=True)
    if image.returncode:
        sys.exit(f"{who}: tests/fleet/testbed image failed: {image.stderr.strip()[-500:]}")
    return image.stdout.strip()


def deploy_under_load(fleet: Fleet, name: str, release: str, expect: str, extra: dict, stream: bool = False,
                      baseline_seconds: float = 0.0):
    """(report, seconds, the load's verdict, the load, the CPU samples) of a deploy of ``release`` while the load
    runs through the load balancer; the load is stopped when the deploy fails. With ``baseline_seconds``, the CPU
    samples start that long before the deploy, the load alone running (CpuSampler.baseline_end)."""
    load = Load(fleet, name, expect)
    cpu = CpuSampler(container_cpu_files(fleet.hosts))
    time.sleep(baseline_seconds)
    cpu.baseline_end = time.time()
    try:
        report, seconds = fleet.deploy(release, extra, stream=stream, cpu=cpu)
    except SystemExit:
        load.process.kill()
        raise
    finally:
        cpu.stop()
    return report, seconds, load.finish(), load, cpu


# The progress callback's line for each play: "[  12.5 s] Stage the release on every app host before any switch".
PLAY_LINE = re.compile(r"^\[\s*([0-9.]+) s\] (.+)$")


def play_times(log_text: str) -> list[tuple[str, float]]:
    """(play, seconds) of a deploy from its progress lines: a play lasts until the next one starts, the last one until
    the line "done"."""
    marks = [(float(found.group(1)), found.group(2)) for found in map(PLAY_LINE.match, log_text.splitlines()) if found]
    return [(name, round(after - at, 1)) for (at, name), (after, dummy) in zip(marks, marks[1:])]


def measure(fleet: Fleet, name: str, release: str, expect: str, extra: dict) -> dict:
    log(f"deploy {name}: {release} under load ({extra.get('graceful_app_group', 'app')}, serial {extra.get('graceful_serial', '34%')})")
    report, seconds, verdict, dummy, cpu = deploy_under_load(fleet, name, release, expect, extra,
                                                             baseline_seconds=BASELINE_SECONDS)
    stage = _timeline.staging(report.get("hosts", []))
    spans = _timeline.batches(report.get("hosts", []))
    result = dict(name=name, release=release, seconds=seconds, report=report, load=verdict,
                  batches=batch_times(report), staging=staging_time(report), hosts=host_rows(report),
                  cpu_staging=cpu.busy(*stage) if stage else None,
                  cpu_seconds_staging=cpu.net_seconds(*stage, fleet.hosts) if stage else None,
                  cpu_batches=cpu.busy(spans[0][1], spans[-1][2]) if spans else None,
                  plays=play_times((fleet.workdir / f"deploy-{release}.log").read_text()))
    log(f"deploy {name}: {seconds:.1f} s, {verdict['requests']} requests, {verdict['failed']} failed"
        + ("" if verdict["rc"] == 0 else f"; load problems: {verdict.get('problems')}"))
    return result


def staging_floor(run_: dict) -> float | None:
    """The shortest the staging could take on this machine's cores: its CPU time, net of the load's, spread over
    the cores the load left free (None without the cgroup figures)."""
    spent = run_.get("cpu_seconds_staging")
    if not spent or not spent.get("hosts_counted") or "load_cores" not in spent:
        return None
    free = max(0.1, (os.cpu_count() or 1) - spent["load_cores"])
    return (spent["hosts"] + spent["controller"] + spent["other"]) / free


def print_staging_cpu(runs: dict[str, dict]) -> None:
    """Per run, the CPU seconds the staging took, net of what the load alone cost over as long (the rates sampled
    before the deploy), and the floor that sets on this machine."""
    print()
    print(f"{'staging':<7} {'hosts':>5} {'wall s':>7} | {'cpu s: hosts':>12} {'controller':>10} {'other':>6} "
          f"{'per host':>9} | {'load cores':>10} {'cpu floor s':>11}")
    for run_ in runs.values():
        spent, floor = run_.get("cpu_seconds_staging"), staging_floor(run_)
        if not floor:
            print(f"{run_['name']:<7} {len(run_['hosts']):>5} {run_['staging']:>7.1f} | (no cgroup CPU figures for the hosts)")
            continue
        staged = len(run_["hosts"])
        print(f"{run_['name']:<7} {staged:>5} {run_['staging']:>7.1f} | {spent['hosts']:>12.1f} {spent['controller']:>10.1f}"
              f" {spent['other']:>6.1f} {(spent['hosts'] + spent['controller']) / staged:>9.1f} | {spent['load_cores']:>10.2f}"
              f" {floor:>11.1f}")
    print("(cpu s: the staging's CPU time on the app hosts (their containers), on the controller (ansible-playbook and its"
          " workers) and elsewhere, each net of the load alone; the floor spreads it over the cores the load left free)")


def print_tables(runs: dict[str, dict], serial: int) -> dict:
    full = runs["all"]
    steps = ("drain", "switch", "reload", "verify", "enable")
    print()
    print(f"Deploy of v3 to {len(full['hosts'])} hosts in batches of {serial}: per host, time (s) and the physical limit")
    print(f"{'host':<12} {'batch':<6} " + " ".join(f"{s:>7}" for s in steps)
          + f" {'critical':>9} | {'in-flight':>9} {'reload':>7} {'health':>7} {'limit':>7} | {'ratio':>6}")
    for row in full["hosts"]:
        print(f"{row['host']:<12} {row['batch']:<6} " + " ".join(f"{float(row['timings'].get(s, 0)):>7.1f}" for s in steps)
              + f" {row['critical']:>9.1f} | {row['drain_waited']:>9.2f} {row['reload']:>7.2f} {row['health']:>7.2f}"
              f" {row['limit']:>7.2f} | {row['ratio']:>5.2f}x")
    print()
    print("batch    time (s)")
    for batch, seconds, size in full["batches"]:
        print(f"{batch:<8} {seconds:>8.1f}  ({size} host{'s' if size > 1 else ''})")
    print()
    print("play of the deploy to every host                                          time (s)")
    for play, seconds in full["plays"]:
        print(f"{play[:72]:<72} {seconds:>8.1f}")
    batch_of_one = statistics.median(s for dummy, s, size in runs["one"]["batches"] if size == 1)
    batch_of_three = (statistics.median(s for dummy, s, size in runs["three"]["batches"] if size == 3)
                      if "three" in runs else None)
    staged_one, staged_all = runs["one"]["staging"], full["staging"]
    batches_alone = sum(seconds for dummy, seconds, dummy2 in full["batches"])
    worst = max(row["ratio"] for row in full["hosts"])
    median_ratio = statistics.median(row["ratio"] for row in full["hosts"])
    print()
    print(f"{'run':<7} {'hosts':>5} {'total s':>8} {'staging s':>10} {'batches':>8} {'requests':>9} {'failed':>7} {'p50 ms':>7}"
          f" {'p99 ms':>7} {'cpu busy: staging':>18} {'batches':>8}")
    for run_ in runs.values():
        load = run_["load"]
        shares = ["-" if share is None else f"{share:.0%}" for share in (run_["cpu_staging"], run_["cpu_batches"])]
        print(f"{run_['name']:<7} {len(run_['hosts']):>5} {run_['seconds']:>8.1f} {run_['staging']:>10.1f} "
              f"{len(run_['batches']):>8} {load['requests']:>9} {load['failed']:>7} {load['p50_ms']:>7.1f} {load['p99_ms']:>7.1f}"
              f" {shares[0]:>18} {shares[1]:>8}")
    print(f"(cpu busy: the share of this machine's {os.cpu_count()} cores in use; every host of the test bed runs on them)")
    print_staging_cpu(runs)
    print()
    targets = []
    targets.append(("critical path / physical limit, worst host (median)", f"{worst:.2f}x ({median_ratio:.2f}x)",
                    "<= 2x", worst <= 2))
    if batch_of_three is not None:
        targets.append(("a batch of 3 / a batch of 1", f"{batch_of_three:.1f} / {batch_of_one:.1f} s = "
                        f"{batch_of_three / batch_of_one:.2f}x", "<= 1.3x", batch_of_three <= 1.3 * batch_of_one))
        bound = staged_all + len(full["batches"]) * batch_of_three * 1.1
        targets.append((f"{len(full['hosts'])} hosts in {len(full['batches'])} batches vs staging + batches x batch of 3 x 1.1",
                        f"{full['seconds']:.1f} s vs {bound:.1f} s (batches alone {batches_alone:.1f} s)",
                        "<=", full["seconds"] <= bound))
    outside = full["seconds"] - staged_all - batches_alone
    targets.append(("the deploy outside staging and the batches (the other plays, and Ansible between batches)",
                    f"{outside:.1f} s", "info", None))
    targets.append((f"staging {len(full['hosts'])} hosts / staging 1 host", f"{staged_all:.1f} / {staged_one:.1f} s = "
                    f"{staged_all / staged_one:.2f}x" if staged_one else "n/a", "<= 2x",
                    bool(staged_one) and staged_all <= 2 * staged_one))
    floor_all = staging_floor(full)
    if floor_all:
        targets.append((f"staging {len(full['hosts'])} hosts / its floor, max(staging 1 host, its CPU on the cores left)",
                        f"{staged_all:.1f} / {max(staged_one, floor_all):.1f} s = {staged_all / max(staged_one, floor_all):.2f}x",
                        "info", None))
    failed = sum(run_["load"]["failed"] for run_ in runs.values())
    targets.append(("failed requests, every deploy", str(failed), "= 0", failed == 0))
    print(f"{'target':<75} {'measured':<45} {'bound':<7} met")
    for name, measured, bound, met in targets:
        print(f"{name:<75} {measured:<45} {bound:<7} {'-' if met is None else 'yes' if met else 'NO'}")
    return dict(targets=[dict(name=n, measured=m, bound=b, met=ok) for n, m, b, ok in targets])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, default=6, help="app hosts (default 6; try 12)")
    parser.add_argument("--serial", type=int, default=3, help="hosts per batch of the deploy to every host")
    parser.add_argument("--server", choices=["uwsgi", "gunicorn"], default="uwsgi")
    parser.add_argument("--workdir", type=Path, default=REPO / ".build" / "bench-deploy")
    parser.add_argument("--keep", action="store_true", help="leave the fleet running")
    parser.add_argument("--reuse", action="store_true", help="use the fleet a --keep run left (same --hosts)")
    args = parser.parse_args()
    if not 1 <= args.hosts <= 40:
        parser.error("--hosts must be 1 to 40")
    if not 1 <= args.serial <= args.hosts:
        parser.error("--serial must be 1 to --hosts")

    image = testbed_image("benchmark")
    fleet = Fleet(args.workdir, args.hosts, args.server)
    started = time.time()
    log(f"fleet: {args.hosts} app hosts ({args.server}) and nginx, image {image}")
    if not (args.reuse and fleet.inventory.exists()):
        fleet.destroy()
        fleet.create(image)
    fleet.write_inventory()
    try:
        fleet.make_releases()
        log("deploy v1 to every host (provisioning, not measured)")
        dummy, seconds = fleet.deploy("v1", {"graceful_serial": max(1, args.hosts // 2)})
        log(f"deploy v1: {seconds:.1f} s")
        # Parts of the fleet keep the servers of the others in nginx: the balancer play prunes none.
        part = {"graceful_serial": 1, "lb_nginx_prune_servers": False}
        runs = {"one": measure(fleet, "one", "v2", "v1,v2", dict(part, graceful_app_group="one"))}
        if args.hosts >= 5:
            runs["three"] = measure(fleet, "three", "v2", "v1,v2", dict(part, graceful_app_group="three", graceful_serial=3))
        runs["all"] = measure(fleet, "all", "v3", "v3", {"graceful_serial": args.serial})
        verdict = print_tables(runs, args.serial)
        picture = _timeline.draw(args.workdir / "deploy-timeline.png", _timeline.load_timeline(fleet.workdir / "timeline-all.json"),
                                 runs["all"]["report"],
                                 f"graceful.wsgi.deploy v2 -> v3, {args.hosts} hosts ({args.server}) in batches of "
                                 f"{args.serial}, under load through nginx")
        (args.workdir / "deploy-benchmark.json").write_text(json.dumps(
            dict(hosts=args.hosts, serial=args.serial, server=args.server, total_seconds=time.time() - started,
                 runs={name: {k: v for k, v in r.items() if k != "report"} | {"report": r["report"]}
                       for name, r in runs.items()}, **verdict), indent=1, default=str))
        print(f"\ntimeline picture: {picture}")
        print(f"figures: {args.workdir / 'deploy-benchmark.json'}")
        failed = any(r["load"]["rc"] for r in runs.values())
        return 1 if failed else 0
    finally:
        if not args.keep:
            fleet.destroy()


if __name__ == "__main__":
    sys.exit(main())

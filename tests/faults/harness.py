"""Separate hosts on one machine, for the fault tests: Linux network namespaces on a private bridge.

``Network`` makes one namespace per host, each joined to a bridge in the root namespace by a veth pair
(10.77.N.0/24; the bridge is .1, hosts .2, .3, ...). ``Postgres`` is a PostgreSQL cluster of its own
(``pg_createcluster``) that listens only on the bridge address, so restarting it leaves the main server on
127.0.0.1:5432 alone. ``RayCluster`` runs a Ray head in one namespace and worker nodes in others
(``ray start``); every process of a host lives in its namespace, so ``Host.kill`` ends exactly that host's
processes, the way a lost machine loses them. Checkpoints go to a directory every namespace sees (the
filesystem is shared; only the network is separate). Everything is undone by ``close`` — no ``ray stop``,
which would stop every Ray on the machine, other tests' included.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
GCS_PORT = 6380  # inside the head's namespace: nothing else listens there


def missing_requirement() -> str | None:
    """Why this machine cannot run the harness, or None."""
    if os.geteuid() != 0:
        return "root (network namespaces and a PostgreSQL cluster of the tests' own)"
    if not os.path.exists(IP):
        return "iproute2 (`ip`)"
    if not shutil.which("pg_createcluster") or not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        return "PostgreSQL server with Debian's pg_createcluster (postgresql-common)"
    return None


def sh(*args, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r


@dataclass
class Host:
    """One namespace: a machine with one address on the bridge."""

    ns: str
    ip: str
    veth: str  # the root side of its veth pair: `ip link set <veth> down` cuts this host off

    def cmd(self, *args) -> list[str]:
        return [IP, "netns", "exec", self.ns, *map(str, args)]

    def pids(self) -> list[int]:
        r = sh(IP, "netns", "pids", self.ns, check=False)
        return [int(p) for p in r.stdout.split()]

    def kill(self) -> int:
        """SIGKILL every process in this host (until none is left); returns how many were killed."""
        killed = 0
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"processes in {self.ns} survive SIGKILL: {self.pids()}")

    def link(self, up: bool) -> None:
        sh(IP, "link", "set", self.veth, "up" if up else "down")


class Network:
    """A bridge and ``n`` hosts on 10.77.``subnet``.0/24; the root namespace is the bridge's .1."""

    def __init__(self, n: int):
        self.tag = secrets.token_hex(2)
        self.subnet = 77 + int(self.tag, 16) % 100  # 10.77..176: parallel test sessions do not collide
        self.prefix = f"10.{self.subnet}.0"
        self.gateway = f"{self.prefix}.1"
        self.bridge = f"mxf{self.tag}br"
        self.hosts: list[Host] = []
        try:
            sh(IP, "link", "add", self.bridge, "type", "bridge")
            sh(IP, "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            sh(IP, "link", "set", self.bridge, "up")
            for i in range(n):
                self._add_host(i)
        except BaseException:
            self.close()
            raise

    def _add_host(self, i: int) -> None:
        host = Host(ns=f"mxf{self.tag}n{i}", ip=f"{self.prefix}.{i + 2}", veth=f"mxf{self.tag}v{i}")
        peer = f"mxf{self.tag}p{i}"
        sh(IP, "netns", "add", host.ns)
        self.hosts.append(host)
        sh(IP, "link", "add", host.veth, "type", "veth", "peer", "name", peer)
        sh(IP, "link", "set", peer, "netns", host.ns)
        sh(IP, "link", "set", host.veth, "master", self.bridge)
        sh(IP, "link", "set", host.veth, "up")
        for args in (("link", "set", "lo", "up"), ("addr", "add", f"{host.ip}/24", "dev", peer),
                     ("link", "set", peer, "up"), ("route", "add", "default", "via", self.gateway)):
            sh(*host.cmd(IP, *args))

    def close(self) -> None:
        for host in self.hosts:
            try:
                host.kill()
            finally:
                sh(IP, "netns", "del", host.ns, check=False)
                sh(IP, "link", "del", host.veth, check=False)  # gone with the namespace, normally
        sh(IP, "link", "del", self.bridge, check=False)
        self.hosts = []


class Postgres:
    """A PostgreSQL cluster of its own, listening on the bridge address only, trust for the subnet."""

    def __init__(self, net: Network):
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        self.version = Path(versions[-1]).parts[-3]
        self.name = f"faults{net.tag}"
        self.host = net.gateway
        self.port = _free_port(net.gateway)
        self.url = f"postgresql+psycopg://postgres@{self.host}:{self.port}/mimax"
        sh("pg_createcluster", self.version, self.name, "-p", self.port, "--start-conf", "manual", timeout=120)
        try:
            conf = Path(f"/etc/postgresql/{self.version}/{self.name}")
            (conf / "conf.d" / "faults.conf").write_text(
                f"listen_addresses = '{self.host}'\nfsync = off\nmax_connections = 60\n")
            (conf / "pg_hba.conf").write_text(f"local all postgres peer\nhost all all {net.prefix}.0/24 trust\n")
            self.start()
            self.psql("CREATE DATABASE mimax")
        except BaseException:
            self.close()
            raise

    def _ctl(self, action: str, *extra) -> None:
        sh("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *extra, timeout=120)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def ensure_running(self) -> None:
        if sh("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, "status", check=False).returncode:
            self.start()

    def restart(self, down_s: float = 0.0) -> None:
        """``pg_ctlcluster restart``, or with ``down_s``, a stop and a start that far apart."""
        if not down_s:
            self._ctl("restart", "-m", "fast")
            return
        self.stop()
        time.sleep(down_s)
        self.start()

    def psql(self, sql: str) -> str:
        return sh("psql", "-h", self.host, "-p", self.port, "-U", "postgres", "-d", "postgres", "-Atc", sql).stdout

    def close(self) -> None:
        sh("pg_dropcluster", "--stop", self.version, self.name, check=False, timeout=120)


def _listening(ip: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((ip, port), timeout=3):
            return True
    except OSError:
        return False


def _free_port(ip: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


@dataclass
class RayCluster:
    """A Ray head on ``head`` and a node on each ``worker``, one CPU each. The tests run two trials at
    once, so that a trial a fault stops always finds a free host to continue on."""

    head: Host
    workers: list[Host]
    temp: Path
    env: dict = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # namespaces of the workers a test killed or cut off

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{GCS_PORT}"

    @classmethod
    def start(cls, head: Host, workers: list[Host], temp: Path, env: dict) -> RayCluster:
        cluster = cls(head, workers, temp, env)
        try:
            cluster._ray(head, "--head", f"--port={GCS_PORT}", "--num-cpus=1", "--include-dashboard=false")
            cluster._join(workers)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def revive(self) -> None:
        """Make the cluster whole again: the worker hosts in ``broken`` (or whose ``raylet`` is gone) come
        back as fresh nodes, link up, whatever is left of them killed (a node the head declared dead never
        rejoins under its old id); without a head, every host starts again."""
        head_up = _listening(self.head.ip, GCS_PORT) and self._has_raylet(self.head)
        lost = [w for w in self.workers if not head_up or w.ns in self.broken or not self._has_raylet(w)]
        if not lost:
            return
        for host in lost:
            host.link(up=True)
            host.kill()
        if not head_up:
            self.head.kill()
            self._ray(self.head, "--head", f"--port={GCS_PORT}", "--num-cpus=1", "--include-dashboard=false")
        self._join(lost)
        self.broken.clear()

    def _join(self, hosts: list[Host]) -> None:
        """Start a worker node on each of ``hosts`` (at once), and wait until the head sees them all."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(hosts)) as pool:
            for done in [pool.submit(self._ray, h, f"--address={self.address}", "--num-cpus=1") for h in hosts]:
                done.result()
        self.wait_nodes(1 + len(self.workers))

    @staticmethod
    def _has_raylet(host: Host) -> bool:
        for pid in host.pids():
            try:
                if b"raylet" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                    return True
            except OSError:
                continue
        return False

    def _ray(self, host: Host, *args) -> None:
        ray = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
        # Each host its own temp dir (sockets, logs), as on separate machines; never /tmp/ray.
        temp = self.temp / host.ns[-2:]
        temp.mkdir(parents=True, exist_ok=True)
        cmd = host.cmd(*ray, "start", f"--node-ip-address={host.ip}", f"--temp-dir={temp}", "--num-gpus=0",
                       "--disable-usage-stats", "--object-store-memory=80000000", *args)
        for attempt in range(3):  # a loaded head can take longer to answer than `ray start` waits
            r = sh(*cmd, env=self.env, timeout=180, check=attempt == 2)
            if r.returncode == 0:
                return
            host.kill()

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        """Wait until the head sees ``n`` live nodes (asked from its namespace, by one polling process)."""
        code = ("import ray, sys, time; ray.init(address=%r, log_to_driver=False, logging_level='ERROR')\n"
                "deadline = time.monotonic() + %r\n"
                "while sum(n['Alive'] for n in ray.nodes()) < %d:\n"
                "    if time.monotonic() > deadline: sys.exit('only %%d Ray nodes came up' %% sum(n['Alive'] for n in ray.nodes()))\n"
                "    time.sleep(0.5)\n") % (self.address, timeout, n)
        sh(*self.head.cmd(sys.executable, "-c", code), env=self.env, timeout=timeout + 60)

    def close(self) -> None:
        for host in [*self.workers, self.head]:
            host.kill()

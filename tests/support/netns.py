"""Hosts as Linux network namespaces on one bridge (root only), for multi-host tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


class NetnsLab:
    """Hosts as network namespaces on one bridge: the test's own namespace (the producer's
    and the services' host) at `gateway`, each worker host at its own address. Needs root."""

    def __init__(self, prefix: str, subnet: str, hosts: list[str]) -> None:
        self.prefix, self.subnet = prefix, subnet  # e.g. "gbi12", "10.212.0"
        self.bridge = f"{prefix}br"
        self.gateway = f"{subnet}.1"
        self.hosts = {name: f"{subnet}.{10 + i}" for i, name in enumerate(hosts, start=1)}

    def namespace(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def up(self) -> "NetnsLab":
        self.down()  # leftovers of an interrupted run
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for host, address in self.hosts.items():
            ns, outside, inside = self.namespace(host), f"{self.prefix}{host}a", f"{self.prefix}{host}b"
            self._ip("netns", "add", ns)
            self._ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._ip("link", "set", inside, "netns", ns)
            self._ip("link", "set", outside, "master", self.bridge, "up")
            self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            self._ip("-n", ns, "link", "set", inside, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
        return self

    def down(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", self.namespace(host)], capture_output=True)
            subprocess.run(["ip", "link", "del", f"{self.prefix}{host}a"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def exec_prefix(self, host: str, hidden: list[Path] = ()) -> list[str]:
        """Run a command on `host`; each `hidden` folder is covered by an empty tmpfs there
        (a file only the producer's host has)."""
        prefix = ["ip", "netns", "exec", self.namespace(host)]
        if not hidden:
            return prefix
        mounts = " && ".join(f"mount -t tmpfs tmpfs {path}" for path in hidden)
        return [*prefix, "unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh"]

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

"""Three RabbitMQ nodes of their own joined in one cluster, for the cluster chaos run.

Each node is a `ChaosNode` (own ports, data and log directories, config, the shared administrator)
started directly under /tmp; the second and third join the first (`rabbitmqctl join_cluster`). Every
country's vhost lives on the cluster, its quorum queues replicated on all three nodes. Faults are
`stop_app`/`start_app` of one node at a time; the shared node on :5672 is never touched.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .node import ChaosNode

NODES = 3
LEADER_TIMEOUT_S = 60


@dataclass(frozen=True)
class ChaosCluster:
    nodes: tuple[ChaosNode, ...]

    @classmethod
    def start(cls, count: int = NODES) -> ChaosCluster:
        admin = (f"chaos-admin-{secrets.token_hex(4)}", secrets.token_urlsafe(18))
        started: list[ChaosNode] = []
        try:
            for _ in range(count):
                base = Path(tempfile.mkdtemp(prefix="chaos-cluster-", dir="/tmp"))
                started.append(ChaosNode.start(base, admin=admin))
            first = started[0]
            for node in started[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.name)
                node.start_app()
        except BaseException:
            for node in started:
                node.stop()
            raise
        cluster = cls(nodes=tuple(started))
        cluster.await_members(count)
        return cluster

    @property
    def first(self) -> ChaosNode:
        return self.nodes[0]

    def node_named(self, name: str) -> ChaosNode:
        [node] = [node for node in self.nodes if node.name == name]
        return node

    def running(self) -> set[str]:
        """Names of the nodes the cluster reports running, as any running node sees it."""
        for node in self.nodes:
            result = node.ctl("cluster_status", "--formatter", "json", check=False)
            if result.returncode == 0:
                return set(json.loads(result.stdout)["running_nodes"])
        return set()

    def await_members(self, count: int) -> None:
        deadline = time.monotonic() + LEADER_TIMEOUT_S
        while len(self.running()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {count} running nodes: {self.running()}")
            time.sleep(1)

    def leader_of(self, vhost: str, queue: str) -> ChaosNode:
        """The node that holds the quorum queue's leader now."""
        deadline = time.monotonic() + LEADER_TIMEOUT_S
        while True:
            for node in self.nodes:
                result = node.ctl(
                    "list_queues",
                    "-p",
                    vhost,
                    "name",
                    "leader",
                    "--formatter",
                    "json",
                    "--quiet",
                    check=False,
                )
                if result.returncode != 0:
                    continue
                for entry in json.loads(result.stdout or "[]"):
                    if entry.get("name") == queue and entry.get("leader") in {n.name for n in self.nodes}:
                        return self.node_named(entry["leader"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no leader of {queue} in {vhost} found")
            time.sleep(1)

    def members_of(self, vhost: str, queue: str) -> list[str]:
        for node in self.nodes:
            result = node.ctl(
                "list_queues", "-p", vhost, "name", "members", "--formatter", "json", "--quiet", check=False
            )
            if result.returncode == 0:
                for entry in json.loads(result.stdout or "[]"):
                    if entry.get("name") == queue:
                        return list(entry.get("members") or [])
        return []

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.ctl("stop", check=False)
        for node in self.nodes:
            shutil.rmtree(node.base, ignore_errors=True)

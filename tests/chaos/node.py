"""A RabbitMQ node of its own for fault injection, so the shared node on :5672 is never disturbed.

Other suites (and other engineers) use `rabbit@localhost`; stopping it would fail their tests. The
chaos suite starts `chaos-<hex>@localhost` on free ports with its own data and log directories, its
own config (an AMQP listener, an AMQPS listener with a locally generated CA, a management API
listener, no guest user) and the shovel and management plugins, then injects faults into that node
alone. It is administered over its management API like any broker; stopping and starting it takes
`rabbitmqctl`: the Debian `rabbitmq-server` and `rabbitmqctl` wrappers run as the `rabbitmq` user,
so the node shares that user's Erlang cookie and `rabbitmqctl -n <node>` can reach it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.exchange.management_api import ManagementEndpoint
from broker.exchange.rabbit_admin import RabbitAdmin

START_TIMEOUT_S = 90
# The node settings every country's broker ships with (max_message_size): the chaos node runs them too.
SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "rabbitmq.conf"


def shipped_settings() -> list[str]:
    """The setting lines of deploy/rabbitmq/rabbitmq.conf, without its comments."""
    lines = SHIPPED_CONFIG.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path, *, common_name: str = "localhost") -> TlsFiles:
    """A throw-away CA and a server certificate for `localhost` / 127.0.0.1 signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chaos test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(common_name), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@dataclass(frozen=True)
class ChaosNode:
    name: str
    amqp_port: int
    tls_port: int
    base: Path
    tls: TlsFiles
    management: ManagementEndpoint

    @cached_property
    def admin(self) -> RabbitAdmin:
        return RabbitAdmin(self.management)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.amqp_port}"

    @classmethod
    def start(cls, base: Path, *, admin: tuple[str, str] | None = None) -> ChaosNode:
        """`admin`: the administrator's name and password (a cluster's nodes share one)."""
        name = f"chaos-{secrets.token_hex(3)}@localhost"
        amqp_port, tls_port, dist_port, management_port = free_port(), free_port(), free_port(), free_port()
        admin_user, admin_password = admin or (
            f"chaos-admin-{secrets.token_hex(4)}",
            secrets.token_urlsafe(18),
        )
        for sub in ("mnesia", "log", "tls"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        tls = make_tls_files(base / "tls")
        (base / "enabled_plugins").write_text(
            "[rabbitmq_shovel,rabbitmq_management,rabbitmq_shovel_management].\n", encoding="utf-8"
        )
        (base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.local = 127.0.0.1:{amqp_port}",
                    f"listeners.ssl.local = 127.0.0.1:{tls_port}",
                    f"ssl_options.cacertfile = {tls.ca_cert}",
                    f"ssl_options.certfile = {tls.server_cert}",
                    f"ssl_options.keyfile = {tls.server_key}",
                    "ssl_options.verify = verify_none",
                    "ssl_options.fail_if_no_peer_cert = false",
                    "management.tcp.ip = 127.0.0.1",
                    f"management.tcp.port = {management_port}",
                    # No guest: the first user (an administrator) is a random one only the suite knows.
                    f"default_user = {admin_user}",
                    f"default_pass = {admin_password}",
                    *shipped_settings(),
                    "",
                ]
            ),
            encoding="utf-8",
        )
        _hand_to_rabbitmq_user(base)
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": name,
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
        }
        # `-detached` returns before the node is up (and with odd exit codes): await_startup decides.
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=env, capture_output=True, timeout=60, check=False
        )
        management = ManagementEndpoint(
            url=f"http://127.0.0.1:{management_port}", user=admin_user, password=admin_password
        )
        node = cls(
            name=name, amqp_port=amqp_port, tls_port=tls_port, base=base, tls=tls, management=management
        )
        node.await_startup()
        return node

    def await_startup(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            result = self.ctl("await_startup", "--timeout", "30", check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                log = self.base / "log" / f"{self.name}.log"
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"chaos node {self.name} did not start: {result.stderr}\n{tail}")
            time.sleep(1)

    def ctl(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.name, *arguments],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.await_startup()

    def queues(self, vhost: str) -> dict[str, dict[str, int]]:
        """messages, unacknowledged and consumers of each queue, as the broker sees them."""
        listing = self.ctl(
            "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "consumers",
            "--formatter", "json", "--quiet",
        )  # fmt: skip
        return {
            entry["name"]: {
                "ready": int(entry["messages_ready"] or 0),
                "unacked": int(entry["messages_unacknowledged"] or 0),
                "consumers": int(entry["consumers"] or 0),
            }
            for entry in json.loads(listing.stdout or "[]")
        }

    def stop(self) -> None:
        self.ctl("stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def _hand_to_rabbitmq_user(base: Path) -> None:
    """As root the Debian wrappers run the node as `rabbitmq`: it must own its directories."""
    if os.geteuid() != 0:
        return
    for path in [base, *base.rglob("*")]:
        shutil.chown(path, user="rabbitmq", group="rabbitmq")
    base.chmod(0o755)

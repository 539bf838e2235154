"""Broker-wide setup through rabbitmqctl and rabbitmq-plugins: vhosts, users, permissions, policies, shovels.

Each step looks before it changes anything, so applying the same plan twice changes nothing and
reports so. Passwords go to rabbitmqctl on standard input, never on its command line; shovel
definitions carry credentials in their URIs, which rabbitmqctl only accepts as an argument.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from broker.core.errors import ConfigError, Reason, TransportError
from broker.exchange.topology import (
    RABBITMQ_DEFAULT_MAX_MESSAGE_SIZE,
    BrokerPlan,
    Permissions,
    Policy,
    ShovelSpec,
)

_log = structlog.get_logger(__name__)

SHOVEL_PLUGIN = "rabbitmq_shovel"


@dataclass(frozen=True)
class ShovelStatus:
    vhost: str
    name: str
    state: str
    reason: str


class RabbitAdmin:
    def __init__(
        self,
        *,
        rabbitmqctl: str = "rabbitmqctl",
        rabbitmq_plugins: str = "rabbitmq-plugins",
        node: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._rabbitmqctl = rabbitmqctl
        self._rabbitmq_plugins = rabbitmq_plugins
        self._node_options = ["-n", node] if node else []
        self._timeout = timeout

    # Plugins.

    def enabled_plugins(self) -> set[str]:
        listing = self._json(self._rabbitmq_plugins, [*self._node_options, "list", "--enabled", "--minimal"])
        return {entry["name"] for entry in listing["plugins"]} if isinstance(listing, dict) else set()

    def enable_plugin(self, name: str) -> bool:
        if name in self.enabled_plugins():
            return False
        self._run(self._rabbitmq_plugins, [*self._node_options, "enable", name])
        _log.info("rabbit_admin.plugin_enabled", plugin=name)
        return True

    # Vhosts.

    def vhosts(self) -> set[str]:
        return {entry["name"] for entry in self._ctl_json(["list_vhosts", "name"])}

    def ensure_vhost(self, name: str) -> bool:
        if name in self.vhosts():
            return False
        self._ctl(["add_vhost", name])
        _log.info("rabbit_admin.vhost_added", vhost=name)
        return True

    def delete_vhost(self, name: str) -> bool:
        if name not in self.vhosts():
            return False
        self._ctl(["delete_vhost", name])
        _log.info("rabbit_admin.vhost_deleted", vhost=name)
        return True

    # Users.

    def users(self) -> dict[str, list[str]]:
        return {entry["user"]: list(entry["tags"]) for entry in self._ctl_json(["list_users"])}

    def ensure_user(
        self, name: str, password: str, *, existing: Mapping[str, list[str]] | None = None
    ) -> bool:
        """Create the user, or bring its password and tags (none) in line. True when anything changed.

        `existing` is a `users()` listing the caller already has (each rabbitmqctl call costs a second).
        """
        if not password:
            raise ConfigError(Reason.CONFIG_INVALID, f"empty password for RabbitMQ user {name}")
        existing = self.users() if existing is None else existing
        changed = False
        if name not in existing:
            self._ctl(["add_user", name], stdin=password)
            changed = True
        elif not self._authenticates(name, password):
            self._ctl(["change_password", name], stdin=password)
            changed = True
        if existing.get(name):
            self._ctl(["set_user_tags", name])
            changed = True
        if changed:
            _log.info("rabbit_admin.user_set", user=name)
        return changed

    def delete_user(self, name: str) -> bool:
        if name not in self.users():
            return False
        self._ctl(["delete_user", name])
        _log.info("rabbit_admin.user_deleted", user=name)
        return True

    # Permissions.

    def permissions(self, vhost: str) -> dict[str, Permissions]:
        return {
            entry["user"]: Permissions(
                user=entry["user"],
                vhost=vhost,
                configure=entry["configure"],
                write=entry["write"],
                read=entry["read"],
            )
            for entry in self._ctl_json(["list_permissions", "-p", vhost])
        }

    def ensure_permissions(
        self, wanted: Permissions, *, current: Mapping[str, Permissions] | None = None
    ) -> bool:
        current = self.permissions(wanted.vhost) if current is None else current
        if current.get(wanted.user) == wanted:
            return False
        self._ctl(
            ["set_permissions", "-p", wanted.vhost, wanted.user, wanted.configure, wanted.write, wanted.read]
        )
        _log.info("rabbit_admin.permissions_set", user=wanted.user, vhost=wanted.vhost)
        return True

    # Policies.

    def policies(self, vhost: str) -> dict[str, Policy]:
        found = {}
        for entry in self._ctl_json(["list_policies", "-p", vhost]):
            definition = _as_definition(entry.get("definition"))
            found[entry["name"]] = Policy(
                name=entry["name"],
                vhost=vhost,
                pattern=entry.get("pattern", ""),
                definition=tuple(sorted(definition.items())),
                priority=int(entry.get("priority") or 0),
                apply_to=entry.get("apply-to", ""),
            )
        return found

    def ensure_policy(self, wanted: Policy, *, current: Mapping[str, Policy] | None = None) -> bool:
        current = self.policies(wanted.vhost) if current is None else current
        normalised = replace(wanted, definition=tuple(sorted(wanted.definition)))
        if current.get(wanted.name) == normalised:
            return False
        self._ctl(
            [
                "set_policy", "-p", wanted.vhost, "--priority", str(wanted.priority),
                "--apply-to", wanted.apply_to, wanted.name, wanted.pattern,
                json.dumps(wanted.definition_map()),
            ]
        )  # fmt: skip
        _log.info("rabbit_admin.policy_set", policy=wanted.name, vhost=wanted.vhost)
        return True

    def queue_policies(self, vhost: str) -> dict[str, str]:
        """The policy that applies to each queue of a vhost ("" for none)."""
        return {
            entry["name"]: str(entry.get("policy") or "")
            for entry in self._ctl_json(["list_queues", "-p", vhost, "name", "policy"])
        }

    # Shovels.

    def shovel_definitions(self, vhost: str) -> dict[str, dict[str, Any]]:
        return {
            entry["name"]: _as_definition(entry["value"])
            for entry in self._ctl_json(["list_parameters", "-p", vhost])
            if entry.get("component") == "shovel"
        }

    def ensure_shovel(self, shovel: ShovelSpec, passwords: Mapping[str, str]) -> bool:
        definition = shovel.definition(passwords)
        if self.shovel_definitions(shovel.vhost).get(shovel.name) == definition:
            return False
        self._ctl(["set_parameter", "-p", shovel.vhost, "shovel", shovel.name, json.dumps(definition)])
        _log.info("rabbit_admin.shovel_set", shovel=shovel.name, vhost=shovel.vhost)
        return True

    def delete_shovel(self, vhost: str, name: str) -> bool:
        if name not in self.shovel_definitions(vhost):
            return False
        self._ctl(["clear_parameter", "-p", vhost, "shovel", name])
        _log.info("rabbit_admin.shovel_deleted", shovel=name, vhost=vhost)
        return True

    def shovel_status(self) -> list[ShovelStatus]:
        return [
            ShovelStatus(
                vhost=entry.get("vhost", ""),
                name=entry.get("name", ""),
                state=entry.get("state", ""),
                reason=str(entry.get("termination_reason", "")),
            )
            for entry in self._ctl_json(["shovel_status"])
        ]

    def wait_for_shovel(self, vhost: str, name: str, *, timeout: float = 30.0) -> ShovelStatus:
        """Wait until the shovel reports `running`; a shovel that cannot connect stays `starting`."""
        deadline = time.monotonic() + timeout
        last: ShovelStatus | None = None
        while True:
            last = next((s for s in self.shovel_status() if s.vhost == vhost and s.name == name), last)
            if last is not None and last.state == "running":
                return last
            if time.monotonic() > deadline:
                state = f"{last.state} {last.reason}".strip() if last else "absent"
                raise TransportError(
                    Reason.TRANSPORT_UNAVAILABLE,
                    f"shovel {name} in vhost {vhost} is not running after {timeout} s: {state}",
                )
            time.sleep(0.5)

    def queue_counts(self, vhost: str) -> dict[str, tuple[int, int]]:
        """Messages and consumers of every queue of a vhost, without an AMQP login."""
        return {
            entry["name"]: (int(entry.get("messages") or 0), int(entry.get("consumers") or 0))
            for entry in self._ctl_json(["list_queues", "-p", vhost, "name", "messages", "consumers"])
        }

    # Node settings.

    def max_message_size(self) -> int:
        """The node's effective max_message_size in bytes (RabbitMQ's default when it sets none).

        Read with `rabbitmqctl eval`: RabbitMQ 3.10 has it only node-wide, and its management API
        does not report it.
        """
        output = self._ctl(["eval", "application:get_env(rabbit, max_message_size)."]).strip()
        if output == "undefined":
            return RABBITMQ_DEFAULT_MAX_MESSAGE_SIZE
        match = re.fullmatch(r"\{ok,\s*(\d+)\}", output)
        if match is None:
            raise TransportError(
                Reason.TRANSPORT_UNAVAILABLE, f"cannot read the node's max_message_size from {output[:200]!r}"
            )
        return int(match.group(1))

    # A whole plan, minus the AMQP declarations (the transport does those).

    def provision(self, plan: BrokerPlan, passwords: Mapping[str, str]) -> list[str]:
        """Plugin, vhost, users and permissions of one broker. Returns what changed, for the operator."""
        changes: list[str] = []
        if self.enable_plugin(SHOVEL_PLUGIN):
            changes.append(f"plugin {SHOVEL_PLUGIN} enabled")
        if self.ensure_vhost(plan.vhost):
            changes.append(f"vhost {plan.vhost} added")
        users = self.users()
        for user in plan.users:
            if self.ensure_user(user, _password(passwords, user), existing=users):
                changes.append(f"user {user} set")
        # Every permission of a plan is in the plan's own vhost.
        current = self.permissions(plan.vhost)
        for permissions in plan.permissions:
            if self.ensure_permissions(permissions, current=current):
                changes.append(f"permissions of {permissions.user} in {permissions.vhost} set")
        policies = self.policies(plan.vhost)
        for policy in plan.policies:
            if self.ensure_policy(policy, current=policies):
                changes.append(f"policy {policy.name} in {policy.vhost} set")
        return changes

    def start_shovels(
        self, plan: BrokerPlan, passwords: Mapping[str, str], *, timeout: float = 30.0
    ) -> list[str]:
        """Set the plan's shovels (after its queues exist, or a shovel would create them) and wait for them."""
        changes: list[str] = []
        for shovel in plan.shovels:
            if self.ensure_shovel(shovel, passwords):
                changes.append(f"shovel {shovel.name} in {shovel.vhost} set")
        for shovel in plan.shovels:
            self.wait_for_shovel(shovel.vhost, shovel.name, timeout=timeout)
        return changes

    # Running the tools.

    def _authenticates(self, name: str, password: str) -> bool:
        result = self._run(
            self._rabbitmqctl, [*self._node_options, "authenticate_user", name], stdin=password, check=False
        )
        return result.returncode == 0

    def _ctl(self, arguments: Sequence[str], *, stdin: str | None = None) -> str:
        return self._run(self._rabbitmqctl, [*self._node_options, "--quiet", *arguments], stdin=stdin).stdout

    def _ctl_json(self, arguments: Sequence[str]) -> list[dict[str, Any]]:
        parsed = self._json(self._rabbitmqctl, [*self._node_options, *arguments])
        return parsed if isinstance(parsed, list) else []

    def _json(self, tool: str, arguments: Sequence[str]) -> Any:
        output = self._run(tool, [*arguments, "--formatter", "json", "--quiet"]).stdout
        try:
            return json.loads(output) if output.strip() else []
        except json.JSONDecodeError as exc:
            raise TransportError(
                Reason.TRANSPORT_UNAVAILABLE,
                f"{tool} {' '.join(arguments)} printed no JSON: {output[:200]!r}",
            ) from exc

    def _run(
        self, tool: str, arguments: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [tool, *arguments]
        # The command line may carry a shovel URI with a password: keep it out of errors and logs.
        shown = " ".join(command[:3])
        try:
            result = subprocess.run(  # noqa: S603 - fixed tool, arguments are a list, no shell
                command, input=stdin, capture_output=True, text=True, timeout=self._timeout, check=False
            )
        except FileNotFoundError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"{tool} is not installed or not on PATH") from exc
        except subprocess.TimeoutExpired as exc:
            raise TransportError(
                Reason.TRANSPORT_UNAVAILABLE, f"{shown} did not finish in {self._timeout} s"
            ) from exc
        if check and result.returncode != 0:
            raise TransportError(
                Reason.TRANSPORT_UNAVAILABLE,
                f"{shown} ... failed with exit code {result.returncode}: {result.stderr.strip()[:500]}",
            )
        return result


def _as_definition(value: Any) -> dict[str, Any]:
    # list_parameters prints the value as a JSON string in some versions and as an object in others.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def _password(passwords: Mapping[str, str], user: str) -> str:
    try:
        return passwords[user]
    except KeyError:
        raise ConfigError(Reason.CONFIG_INVALID, f"no password given for RabbitMQ user {user}") from None

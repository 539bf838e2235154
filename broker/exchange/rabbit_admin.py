"""Broker-wide setup over the management HTTP API: vhosts, users, permissions, policies, shovels.

Each step looks before it changes anything, so applying the same plan twice changes nothing and
reports so. A user's password is checked against the salted hash the API lists, never by logging
in, and sent only when it differs. Plugins cannot be enabled over HTTP: the node must already run
the shovel and management plugins (deploy/rabbitmq/enabled_plugins), and `provision` says so when
it does not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

import httpx
import structlog

from broker.core.errors import ConfigError, Reason, TransportError
from broker.exchange.management_api import ApiErrors, ManagementEndpoint, path_of
from broker.exchange.plan import BrokerPlan
from broker.exchange.topology import Permissions, Policy, ShovelSpec

_log = structlog.get_logger(__name__)

REQUIRED_PLUGINS = ("rabbitmq_shovel", "rabbitmq_shovel_management")
# What the API shows of a vhost it lets its user see at all: an administrator only sees the shovels of
# vhosts it holds a permission in, so it gets one that allows nothing.
OBSERVE_ONLY = "^$"
SHOVEL_POLL_S = 0.2
_HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}


@dataclass(frozen=True)
class ShovelStatus:
    vhost: str
    name: str
    state: str
    reason: str


class RabbitAdmin:
    """One node's (or cluster's) administration through its management API; close() when done."""

    def __init__(self, endpoint: ManagementEndpoint | None = None) -> None:
        self.endpoint = endpoint or ManagementEndpoint.configure()
        self._errors = ApiErrors(where=self.endpoint.where)
        self._errors.remember(self.endpoint.password)
        self._client: httpx.Client | None = None
        self._plugins_checked = False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Plugins.

    def require_plugins(self) -> None:
        """The shovel management plugin (which needs the shovel plugin) answers `/api/shovels`; a node
        without it answers 404. Its node statistics would say the same, but only seconds after start."""
        if self._plugins_checked:
            return
        if self._get(path_of("shovels"), "reading shovel status", missing=None) is None:
            missing = " ".join(REQUIRED_PLUGINS)
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"the node behind {self.endpoint.where} does not run {missing.replace(' ', ' and ')}: "
                f"enable them on it (rabbitmq-plugins enable {missing}, or deploy/rabbitmq/enabled_plugins)",
            )
        self._plugins_checked = True

    # Vhosts.

    def vhosts(self) -> set[str]:
        return {entry["name"] for entry in self._get(path_of("vhosts"), "listing vhosts")}

    def ensure_vhost(self, name: str) -> bool:
        if self._get(path_of("vhosts", name), f"reading vhost {name}", missing=None) is not None:
            return False
        self._send("PUT", path_of("vhosts", name), f"adding vhost {name}", {})
        _log.info("rabbit_admin.vhost_added", vhost=name)
        return True

    def delete_vhost(self, name: str) -> bool:
        deleted = self._send("DELETE", path_of("vhosts", name), f"deleting vhost {name}", missing_ok=True)
        if deleted:
            _log.info("rabbit_admin.vhost_deleted", vhost=name)
        return deleted

    # Users.

    def users(self) -> dict[str, list[str]]:
        return {name: _tags(record) for name, record in self._user_records().items()}

    def _user_records(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self._get(path_of("users"), "listing users")}

    def ensure_user(
        self,
        name: str,
        password: str,
        *,
        tags: Sequence[str] = (),
        existing: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> bool:
        """Create the user, or bring its password and tags in line. True when anything changed.

        `existing` is a listing of user records the caller already has (one request for many users).
        """
        if not password:
            raise ConfigError(Reason.CONFIG_INVALID, f"empty password for RabbitMQ user {name}")
        self._errors.remember(password)
        records = self._user_records() if existing is None else existing
        record = records.get(name)
        if (
            record is not None
            and sorted(_tags(record)) == sorted(tags)
            and _password_matches(record, password)
        ):
            return False
        body = {"password": password, "tags": ",".join(tags)}
        self._send("PUT", path_of("users", name), f"setting user {name}", body)
        _log.info("rabbit_admin.user_set", user=name, tags=list(tags))
        return True

    def delete_user(self, name: str) -> bool:
        deleted = self._send("DELETE", path_of("users", name), f"deleting user {name}", missing_ok=True)
        if deleted:
            _log.info("rabbit_admin.user_deleted", user=name)
        return deleted

    # Permissions.

    def permissions(self, vhost: str) -> dict[str, Permissions]:
        listing = self._get(path_of("vhosts", vhost, "permissions"), f"listing permissions in {vhost}")
        return {
            entry["user"]: Permissions(
                user=entry["user"],
                vhost=vhost,
                configure=entry["configure"],
                write=entry["write"],
                read=entry["read"],
            )
            for entry in listing
        }

    def ensure_permissions(
        self, wanted: Permissions, *, current: Mapping[str, Permissions] | None = None
    ) -> bool:
        current = self.permissions(wanted.vhost) if current is None else current
        if current.get(wanted.user) == wanted:
            return False
        body = {"configure": wanted.configure, "write": wanted.write, "read": wanted.read}
        action = f"setting permissions of {wanted.user} in {wanted.vhost}"
        self._send("PUT", path_of("permissions", wanted.vhost, wanted.user), action, body)
        _log.info("rabbit_admin.permissions_set", user=wanted.user, vhost=wanted.vhost)
        return True

    # Policies.

    def policies(self, vhost: str) -> dict[str, Policy]:
        found = {}
        for entry in self._get(path_of("policies", vhost), f"listing policies in {vhost}"):
            definition = entry.get("definition") or {}
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
        body = {
            "pattern": wanted.pattern,
            "definition": wanted.definition_map(),
            "priority": wanted.priority,
            "apply-to": wanted.apply_to,
        }
        action = f"setting policy {wanted.name} in {wanted.vhost}"
        self._send("PUT", path_of("policies", wanted.vhost, wanted.name), action, body)
        _log.info("rabbit_admin.policy_set", policy=wanted.name, vhost=wanted.vhost)
        return True

    # Queues, as the management API's statistics show them (refreshed every few seconds).

    def _queue_listing(self, vhost: str, columns: str) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = self._get(
            f"{path_of('queues', vhost)}?columns={columns}", f"listing queues in {vhost}"
        )
        return listing

    def queue_policies(self, vhost: str) -> dict[str, str]:
        """The policy that applies to each queue of a vhost ("" for none)."""
        return {
            entry["name"]: str(entry.get("policy") or "")
            for entry in self._queue_listing(vhost, "name,policy")
        }

    def queue_counts(self, vhost: str) -> dict[str, tuple[int, int]]:
        """Messages (ready and unacknowledged) and consumers of every queue of a vhost."""
        return {
            entry["name"]: (int(entry.get("messages") or 0), int(entry.get("consumers") or 0))
            for entry in self._queue_listing(vhost, "name,messages,consumers")
        }

    # Shovels.

    def shovel_definitions(self, vhost: str) -> dict[str, dict[str, Any]]:
        listing = self._get(path_of("parameters", "shovel", vhost), f"listing shovels in {vhost}")
        return {entry["name"]: dict(entry.get("value") or {}) for entry in listing}

    def ensure_shovel(self, shovel: ShovelSpec, passwords: Mapping[str, str]) -> bool:
        definition = shovel.definition(passwords)
        self._errors.remember(*(passwords[user] for user in shovel.users))
        if self.shovel_definitions(shovel.vhost).get(shovel.name) == definition:
            return False
        action = f"setting shovel {shovel.name} in {shovel.vhost}"
        path = path_of("parameters", "shovel", shovel.vhost, shovel.name)
        self._send("PUT", path, action, {"value": definition})
        _log.info("rabbit_admin.shovel_set", shovel=shovel.name, vhost=shovel.vhost)
        return True

    def delete_shovel(self, vhost: str, name: str) -> bool:
        path = path_of("parameters", "shovel", vhost, name)
        deleted = self._send("DELETE", path, f"deleting shovel {name} in {vhost}", missing_ok=True)
        if deleted:
            _log.info("rabbit_admin.shovel_deleted", shovel=name, vhost=vhost)
        return deleted

    def shovel_status(self) -> list[ShovelStatus]:
        """Every shovel in the vhosts this user holds a permission in (`provision` grants one)."""
        return [shovel_status_of(entry) for entry in self._get(path_of("shovels"), "reading shovel status")]

    def wait_for_shovel(self, vhost: str, name: str, *, timeout: float = 30.0) -> ShovelStatus:
        """Wait until the shovel reports `running`; a shovel that cannot connect stays `starting`.

        An API that does not answer for a moment (a node restarting its applications) is waited for too.
        """
        deadline = time.monotonic() + timeout
        last: ShovelStatus | None = None
        unanswered: TransportError | None = None
        while True:
            try:
                listing = self._get(path_of("shovels", vhost), f"reading shovel status in {vhost}")
            except TransportError as error:
                if error.reason is not Reason.TRANSPORT_UNAVAILABLE:
                    raise
                listing, unanswered = [], error
            found = [shovel_status_of(entry) for entry in listing]
            last = next((s for s in found if s.name == name), last)
            if last is not None and last.state == "running":
                return last
            if time.monotonic() > deadline:
                if unanswered is not None and last is None:
                    raise unanswered
                state = f"{last.state} {last.reason}".strip() if last else "absent"
                raise TransportError(
                    Reason.TRANSPORT_UNAVAILABLE,
                    f"shovel {name} in vhost {vhost} is not running after {timeout} s: {state}",
                )
            time.sleep(SHOVEL_POLL_S)

    # A whole plan, minus the AMQP declarations (the transport does those).

    def provision(self, plan: BrokerPlan, passwords: Mapping[str, str]) -> list[str]:
        """Vhost, users, permissions and policies of one broker. Returns what changed, for the operator."""
        self.require_plugins()
        changes: list[str] = []
        if self.ensure_vhost(plan.vhost):
            changes.append(f"vhost {plan.vhost} added")
        users = self._user_records()
        for user in plan.users:
            # No user of a plan has a tag: none may reach anything broker-wide (a tag left by an
            # older release, `monitoring` on the gateway's user, is taken away).
            if self.ensure_user(user, _password(passwords, user), tags=(), existing=users):
                changes.append(f"user {user} set")
        # Every permission of a plan is in the plan's own vhost.
        current = self.permissions(plan.vhost)
        for permissions in (*plan.permissions, self._observer(plan.vhost, current)):
            if permissions is not None and self.ensure_permissions(permissions, current=current):
                changes.append(f"permissions of {permissions.user} in {permissions.vhost} set")
        policies = self.policies(plan.vhost)
        for policy in plan.policies:
            if self.ensure_policy(policy, current=policies):
                changes.append(f"policy {policy.name} in {policy.vhost} set")
        return changes

    def _observer(self, vhost: str, current: Mapping[str, Permissions]) -> Permissions | None:
        """A permission that allows nothing, so this user sees the vhost's shovels; none if it has one."""
        if self.endpoint.user in current:
            return None
        return Permissions(
            user=self.endpoint.user,
            vhost=vhost,
            configure=OBSERVE_ONLY,
            write=OBSERVE_ONLY,
            read=OBSERVE_ONLY,
        )

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

    # Talking to the API.

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = self.endpoint.client()
        return self._client

    def _get(self, path: str, action: str, *, missing: Any = ...) -> Any:
        """The JSON at `path`; `missing` (when given) is returned for a 404 instead of raising."""
        try:
            response = self._http().get(path)
        except httpx.HTTPError as exc:
            raise self._errors.unreachable(exc, action) from None
        if response.status_code == 404 and missing is not ...:
            return missing
        self._errors.check(response, action, user=self.endpoint.user)
        return self._errors.json_of(response, action)

    def _send(
        self, method: str, path: str, action: str, body: object = None, *, missing_ok: bool = False
    ) -> bool:
        """PUT or DELETE; False when `missing_ok` and there was nothing to delete."""
        try:
            response = self._http().request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._errors.unreachable(exc, action) from None
        if response.status_code == 404 and missing_ok:
            return False
        self._errors.check(response, action, user=self.endpoint.user)
        return True


def shovel_status_of(entry: Mapping[str, Any]) -> ShovelStatus:
    """One entry of `GET /api/shovels[/<vhost>]`."""
    return ShovelStatus(
        vhost=str(entry.get("vhost", "")),
        name=str(entry.get("name", "")),
        state=str(entry.get("state", "")),
        reason=str(entry.get("reason", "")),
    )


def _tags(record: Mapping[str, Any]) -> list[str]:
    # RabbitMQ 3.9 and later list tags as a JSON list; older ones as one comma-separated string.
    tags = record.get("tags") or []
    if isinstance(tags, str):
        return [tag for tag in tags.split(",") if tag]
    return [str(tag) for tag in tags]


def _password_matches(record: Mapping[str, Any], password: str) -> bool:
    """RabbitMQ stores base64(salt + H(salt + password)) with a 4-byte salt; an unknown scheme is
    treated as a mismatch (the password is then set again)."""
    hashing = _HASHES.get(str(record.get("hashing_algorithm")))
    try:
        stored = base64.b64decode(str(record.get("password_hash") or ""), validate=True)
    except ValueError:
        return False
    if hashing is None or len(stored) < 5:
        return False
    salt, digest = stored[:4], stored[4:]
    return hmac.compare_digest(hashing(salt + password.encode("utf-8")).digest(), digest)


def _password(passwords: Mapping[str, str], user: str) -> str:
    try:
        return passwords[user]
    except KeyError:
        raise ConfigError(Reason.CONFIG_INVALID, f"no password given for RabbitMQ user {user}") from None

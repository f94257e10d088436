"""Webhooks: endpoints, events, Standard Webhooks signatures, the retry schedule, and which
addresses a webhook may not reach. Pure: resolving a host name and sending are done elsewhere.

Signatures follow Standard Webhooks (https://www.standardwebhooks.com): headers `webhook-id`,
`webhook-timestamp` (Unix seconds) and `webhook-signature` = `v1,` + base64(HMAC-SHA256(key,
"{id}.{timestamp}.{body}")), the key being the bytes after `whsec_` in the secret, base64-decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from urllib.parse import urlsplit
from uuid import UUID

from shared.domain.access import Actor
from shared.domain.errors import InvalidInput, LedgerError
from shared.domain.transfers import Transfer, TransferKind, TransferState

SECRET_PREFIX = "whsec_"
SIGNING_KEY_BYTES = 32
EVENT_ID_PREFIX = "evt_"
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
MAX_ERROR_LENGTH = 500
# A receiver has this long to answer with a 2xx (SPEC): connecting, sending, reading, all of it.
DELIVERY_TIMEOUT_S = 10.0
DEFAULT_RETRY_SCHEDULE = "5s,30s,2m,10m,30m,1h,3h,6h,12h"
PRIVATE_ADDRESS = "Webhook URL must not point to a private address"
UNRESOLVED_HOST = "Webhook URL's host does not resolve"
_EVENT_ID = re.compile(r"^evt_([0-9a-f]{32})$", re.ASCII)
_DELAY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$", re.ASCII)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class EventType(StrEnum):
    TRANSFER_COMPLETED = "transfer.completed"
    TRANSFER_FAILED = "transfer.failed"

    @classmethod
    def of_state(cls, state: TransferState) -> EventType:
        if state is TransferState.PENDING:
            raise ValueError("a pending transfer has no event")
        return cls(f"transfer.{state.value}")


ALL_EVENT_TYPES = tuple(EventType)


class DeliveryState(StrEnum):
    PENDING = "pending"  # due at `next_attempt`
    DELIVERED = "delivered"  # a 2xx answered
    FAILED = "failed"  # given up: every attempt of the schedule failed
    CANCELLED = "cancelled"  # its endpoint was deleted first


class WebhookEndpointNotFound(LedgerError):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"Webhook endpoint {endpoint_id} does not exist")


class WebhookDeliveryNotFound(LedgerError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"Delivery of event {event_id} does not exist")


# ---------------------------------------------------------------------------------------------
# Ids and secrets


def format_event_id(event_id: UUID) -> str:
    return EVENT_ID_PREFIX + event_id.hex


def parse_event_id(value: str) -> UUID:
    match = _EVENT_ID.match(value)
    if match is None:
        raise InvalidInput("Event id must be evt_ followed by 32 hexadecimal digits")
    return UUID(match.group(1))


def new_signing_key() -> bytes:
    return secrets.token_bytes(SIGNING_KEY_BYTES)


def format_secret(signing_key: bytes) -> str:
    """The secret a client stores: `whsec_` + base64 of the key's 32 bytes."""
    return SECRET_PREFIX + base64.b64encode(signing_key).decode("ascii")


def signing_key_of(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("not a webhook secret")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as error:
        raise ValueError("not a webhook secret") from error


def sign(signing_key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    signing_key: bytes, event_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (a new timestamp, so a new signature)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(signing_key, event_id, timestamp, body),
    }


# ---------------------------------------------------------------------------------------------
# Endpoint requests


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    url: str
    host: str  # a name or an address literal (IPv6 without brackets)
    port: int

    @property
    def address_literal(self) -> str | None:
        """The host if it is an IP address (then nothing to resolve), else None."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None


def parse_webhook_url(value: object) -> WebhookUrl:
    """An absolute http(s) URL with a host; where it points is checked apart (resolving)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_URL_LENGTH:
        raise InvalidInput(
            f"Webhook URL must be an http or https URL of at most {MAX_URL_LENGTH} characters"
        )
    if not value.isascii() or any(char.isspace() or not char.isprintable() for char in value):
        raise InvalidInput("Webhook URL must be an http or https URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise InvalidInput("Webhook URL must be an http or https URL") from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("Webhook URL must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("Webhook URL must not carry credentials")
    default_port = 443 if parts.scheme == "https" else 80
    return WebhookUrl(value, parts.hostname, port or default_port)


# IPv6 forms that carry an IPv4 address a gateway may reach: NAT64's well-known prefix,
# IPv4-translated and IPv4-compatible addresses (6to4 and IPv4-mapped have their own accessors).
_IPV4_EMBEDDING = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96")
)


def is_private_address(address: str) -> bool:
    """Whether an IP address is one a webhook may not reach: loopback, private, link-local,
    shared (CGNAT), reserved, multicast, unspecified, or anything else not globally routable;
    an IPv6 address that embeds an IPv4 one (mapped, 6to4, NAT64, translated, compatible) is
    refused when either is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if any(ip in network for network in _IPV4_EMBEDDING):
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(not c.is_global or c.is_multicast for c in candidates)


def refuse_private(addresses: list[str]) -> None:
    """A URL is refused when any address of its host is private (a client picks any of them),
    or when its host resolves to nothing (nothing to check)."""
    if not addresses:
        raise InvalidInput(UNRESOLVED_HOST, field="body.url")
    if any(is_private_address(address) for address in addresses):
        raise InvalidInput(PRIVATE_ADDRESS, field="body.url")


def parse_event_types(value: object) -> tuple[EventType, ...]:
    """A non-empty list of event types, without repeats, in the canonical order."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("Events must be a non-empty list of transfer.completed, transfer.failed")
    wanted = set()
    for item in value:
        try:
            wanted.add(EventType(item))
        except ValueError as error:
            raise InvalidInput(f"Unknown event type: {item}") from error
    return tuple(kind for kind in ALL_EVENT_TYPES if kind in wanted)


def parse_description(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH or not value.isprintable():
        raise InvalidInput(
            f"Description must be at most {MAX_DESCRIPTION_LENGTH} printable characters"
        )
    return value


@dataclass(frozen=True, slots=True)
class EndpointRequest:
    url: WebhookUrl
    events: tuple[EventType, ...]
    description: str | None


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: UUID
    merchant_id: UUID | None  # None: the platform's, every merchant's events
    merchant_name: str | None
    url: str
    events: tuple[EventType, ...]
    description: str | None
    created: datetime
    deleted: datetime | None

    def visible_to(self, actor: Actor) -> bool:
        """An admin sees every endpoint; a merchant key its merchant's only."""
        return actor.is_admin or (
            self.merchant_id is not None and self.merchant_id == actor.merchant_id
        )


@dataclass(frozen=True, slots=True)
class CreatedWebhookEndpoint:
    """A new endpoint and its secret: the only time the secret leaves the database."""

    endpoint: WebhookEndpoint
    secret: str


# ---------------------------------------------------------------------------------------------
# Deliveries


def parse_retry_schedule(value: str) -> tuple[float, ...]:
    """`5s,30s,2m,1h` (or bare seconds, or `ms`) as seconds; the delays after the 1st, 2nd, …
    failed attempt. Empty: no retry at all."""
    delays = []
    for part in (piece.strip() for piece in value.split(",")):
        if not part:
            continue
        match = _DELAY.match(part)
        if match is None:
            raise ValueError(f"WEBHOOK_RETRY_SCHEDULE: {part!r} is not a delay like 5s, 2m or 1h")
        delays.append(float(match.group(1)) * _UNIT_S[match.group(2) or "s"])
    return tuple(delays)


def next_attempt_after(
    attempted: datetime, attempts: int, schedule: tuple[float, ...]
) -> datetime | None:
    """When to try again after the `attempts`-th attempt failed; None once the schedule is
    used up (given up). A manual retry after that is one more attempt, then given up again."""
    if attempts > len(schedule):
        return None
    return attempted + timedelta(seconds=schedule[attempts - 1])


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one POST came to: a status code (any answer), or an error (no answer in time)."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def failure_reason(self) -> str | None:
        """A label of a few values for the metrics: `http_status`, `timeout`, `connection`,
        `private_address`; None when delivered."""
        if self.delivered:
            return None
        if self.status_code is not None:
            return "http_status"
        error = self.error or ""
        if error.startswith("Timed out"):
            return "timeout"
        if error == PRIVATE_ADDRESS_AT_DELIVERY:
            return "private_address"
        return "connection"


PRIVATE_ADDRESS_AT_DELIVERY = "Refused: the URL's host resolves to a private address"


def answered(status_code: int) -> AttemptOutcome:
    return AttemptOutcome(status_code, None)


def not_answered(error: str) -> AttemptOutcome:
    return AttemptOutcome(None, error[:MAX_ERROR_LENGTH] or "Error")


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One line of an endpoint's deliveries log."""

    id: int
    event_id: UUID
    type: EventType
    attempted: datetime
    status_code: int | None
    error: str | None
    next_attempt: datetime | None
    delivered: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to one endpoint, as it stands."""

    endpoint_id: UUID
    event_id: UUID
    type: EventType
    state: DeliveryState
    attempts: int
    next_attempt: datetime | None
    delivered: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptsPage:
    attempts: list[DeliveryAttempt]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class EventToDispatch:
    """An event to fan out: its transfer (as it is now), and the endpoints that want it."""

    id: UUID
    type: EventType
    created: datetime
    transfer: Transfer
    endpoint_ids: list[UUID]

    def data(self) -> Transfer:
        """The transfer as it was when it became final. Only a completed `transfer`'s reversal
        totals change after that, and a transfer is reversed only once completed: at its final
        state nothing of it was reversed."""
        if self.transfer.kind is not TransferKind.TRANSFER:
            return self.transfer
        return replace(self.transfer, reversed_amount=Decimal(0), reversed_fee=Decimal(0))


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery a worker claimed: where to send what, signed with which key."""

    endpoint_id: UUID
    event_id: UUID
    lease: UUID
    attempts: int  # this one included
    url: str
    signing_key: bytes
    body: str

    @property
    def webhook_id(self) -> str:
        return format_event_id(self.event_id)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery: DueDelivery
    attempted: datetime
    outcome: AttemptOutcome
    next_attempt: datetime | None  # None: delivered, or given up

    @property
    def state(self) -> DeliveryState:
        if self.outcome.delivered:
            return DeliveryState.DELIVERED
        return DeliveryState.PENDING if self.next_attempt is not None else DeliveryState.FAILED

    @property
    def metric_outcome(self) -> str:
        """`delivered`, `retrying` (a failed attempt with another to come) or `given_up`."""
        return {
            DeliveryState.DELIVERED: "delivered",
            DeliveryState.PENDING: "retrying",
            DeliveryState.FAILED: "given_up",
        }[self.state]


def record_attempt(
    delivery: DueDelivery,
    attempted: datetime,
    outcome: AttemptOutcome,
    schedule: tuple[float, ...],
) -> AttemptRecord:
    next_attempt = (
        None if outcome.delivered else next_attempt_after(attempted, delivery.attempts, schedule)
    )
    return AttemptRecord(delivery, attempted, outcome, next_attempt)

"""Webhook rules: URLs and private addresses, ids, secrets and signatures (checked against the
Standard Webhooks reference library), the retry schedule."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.domain.errors import InvalidInput
from shared.domain.transfers import Transfer, TransferKind, TransferState
from shared.domain.webhooks import (
    PRIVATE_ADDRESS,
    DueDelivery,
    EventToDispatch,
    EventType,
    answered,
    format_event_id,
    format_secret,
    is_private_address,
    new_signing_key,
    next_attempt_after,
    not_answered,
    parse_event_id,
    parse_event_types,
    parse_retry_schedule,
    parse_webhook_url,
    record_attempt,
    refuse_private,
    sign,
    signed_headers,
    signing_key_of,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class TestSignature:
    def test_the_reference_library_verifies_our_signature(self) -> None:
        key = new_signing_key()
        body = b'{"id":"evt_1","type":"transfer.completed","data":{"amount":"1.00000000"}}'
        headers = signed_headers(key, "evt_1", int(time.time()), body)
        assert Webhook(format_secret(key)).verify(body, headers)["id"] == "evt_1"

    def test_a_changed_body_or_another_secret_fails(self) -> None:
        key = new_signing_key()
        headers = signed_headers(key, "evt_1", int(time.time()), b"{}")
        with pytest.raises(WebhookVerificationError):
            Webhook(format_secret(key)).verify(b'{"x":1}', headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(format_secret(new_signing_key())).verify(b"{}", headers)

    def test_the_standard_webhooks_test_vector(self) -> None:
        # From the Standard Webhooks specification's reference tests.
        key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        body = b'{"test": 2432232314}'
        signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    def test_secret_shape(self) -> None:
        key = new_signing_key()
        secret = format_secret(key)
        assert secret.startswith("whsec_") and signing_key_of(secret) == key
        assert len(key) == 32 and new_signing_key() != key


class TestUrls:
    @pytest.mark.parametrize(
        "url", ["http://example.com/x", "https://hooks.example.com:8443/a?b=c", "http://[2606::1]/"]
    )
    def test_accepted(self, url: str) -> None:
        assert parse_webhook_url(url).url == url

    @pytest.mark.parametrize(
        "url", ["ftp://example.com", "example.com/x", "http://", "https:///x", "http://a b/", 42]
    )
    def test_refused(self, url: object) -> None:
        with pytest.raises(InvalidInput, match="http or https URL"):
            parse_webhook_url(url)

    def test_port_defaults_and_literals(self) -> None:
        assert parse_webhook_url("https://example.com/").port == 443
        assert parse_webhook_url("http://example.com/").port == 80
        assert parse_webhook_url("http://[::1]:81/").address_literal == "::1"
        assert parse_webhook_url("http://example.com/").address_literal is None

    @pytest.mark.parametrize(
        "address",
        [
            *("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254"),
            *("100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1"),
            *("224.0.0.1", "ff02::1", "192.0.2.1", "fe80::1%eth0"),
            # IPv6 forms carrying a private IPv4 address: NAT64 (169.254.169.254), 6to4
            # (127.0.0.1), IPv4-compatible, IPv4-translated.
            *("64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::127.0.0.1", "::ffff:0:7f00:1"),
        ],
    )
    def test_private_addresses(self, address: str) -> None:
        assert is_private_address(address)

    @pytest.mark.parametrize(
        "address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"]
    )
    def test_public_addresses(self, address: str) -> None:
        assert not is_private_address(address)

    def test_a_host_with_any_private_address_or_none_is_refused(self) -> None:
        refuse_private(["93.184.215.14"])
        for addresses, message in (
            (["93.184.215.14", "10.0.0.1"], PRIVATE_ADDRESS),
            ([], "Webhook URL's host does not resolve"),
        ):
            with pytest.raises(InvalidInput) as refused:
                refuse_private(addresses)
            assert refused.value.message == message
            assert refused.value.field == "body.url"


class TestEventsAndIds:
    def test_event_types_are_deduplicated_in_order(self) -> None:
        both = ["transfer.failed", "transfer.completed", "transfer.failed"]
        assert parse_event_types(both) == (EventType.TRANSFER_COMPLETED, EventType.TRANSFER_FAILED)
        with pytest.raises(InvalidInput):
            parse_event_types([])
        with pytest.raises(InvalidInput, match="Unknown event type"):
            parse_event_types(["transfer.pending"])

    def test_event_ids_round_trip(self) -> None:
        event_id = uuid.uuid4()
        assert parse_event_id(format_event_id(event_id)) == event_id
        for bad in ("evt_123", event_id.hex, "evt_" + event_id.hex.upper(), f"evt_{event_id}"):
            with pytest.raises(InvalidInput):
                parse_event_id(bad)

    def test_a_reversed_transfer_is_shown_as_it_was_when_it_completed(self) -> None:
        transfer = Transfer(
            id=uuid.uuid4(),
            kind=TransferKind.TRANSFER,
            sender_id=uuid.uuid4(),
            receiver_id=uuid.uuid4(),
            amount=Decimal(10),
            fee=Decimal(0),
            percent_fee=Decimal(0),
            currency="USD",
            idempotency_key="k",
            state=TransferState.COMPLETED,
            failure_reason=None,
            created=NOW,
            processed=NOW,
            reversed_amount=Decimal(4),
            reversed_fee=Decimal(0),
        )
        event = EventToDispatch(uuid.uuid4(), EventType.TRANSFER_COMPLETED, NOW, transfer, [])
        assert event.data().reversed_amount == Decimal(0)


class TestSchedule:
    def test_parsed_in_seconds(self) -> None:
        assert parse_retry_schedule("5s,30s,2m,10m,30m,1h,3h,6h,12h") == (
            *(5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0),
        )
        assert parse_retry_schedule("200ms, 1.5, 2s") == (0.2, 1.5, 2.0)
        assert parse_retry_schedule("") == ()
        with pytest.raises(ValueError, match="WEBHOOK_RETRY_SCHEDULE"):
            parse_retry_schedule("5 minutes")

    def test_next_attempt_then_given_up(self) -> None:
        schedule = (5.0, 30.0)
        assert next_attempt_after(NOW, 1, schedule) == NOW + timedelta(seconds=5)
        assert next_attempt_after(NOW, 2, schedule) == NOW + timedelta(seconds=30)
        assert next_attempt_after(NOW, 3, schedule) is None
        assert next_attempt_after(NOW, 11, schedule) is None  # a manual retry after giving up

    def test_records_say_what_became_of_a_delivery(self) -> None:
        delivery = DueDelivery(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 2, "http://x", b"k", "{}")
        delivered = record_attempt(delivery, NOW, answered(204), (1.0,))
        assert (delivered.metric_outcome, delivered.next_attempt) == ("delivered", None)
        given_up = record_attempt(delivery, NOW, answered(500), (1.0,))
        assert (given_up.metric_outcome, given_up.next_attempt) == ("given_up", None)
        retrying = record_attempt(delivery, NOW, not_answered("Timed out after 10 s"), (1, 2))
        assert retrying.metric_outcome == "retrying"
        assert retrying.outcome.failure_reason == "timeout"
        assert answered(302).failure_reason == "http_status"
        assert not_answered("ConnectError: refused").failure_reason == "connection"

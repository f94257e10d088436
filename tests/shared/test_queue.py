"""The API's publish (`TransferPublisher`) puts on the queue what Celery's own publish would.

On a queue of the test's own: the session's workers consume the transfers queue."""

import base64
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from redis import Redis

from shared.domain.transfers import Transfer, TransferKind, TransferState
from shared.infra.config import load_settings
from shared.infra.queue import (
    APPLY_TRANSFER_TASK,
    TransferPublisher,
    broker_breaker,
    celery_app,
    encode_task,
    transfers_message,
)
from tests.helpers import unique

# Fresh for every message (or this host's): what may differ between two publishes.
_PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "origin", "reply_to"}


def _pop_all(redis: Redis, queue: str) -> list[dict[str, Any]]:
    raw = redis.lrange(queue, 0, -1)
    redis.delete(queue)
    return [json.loads(message) for message in raw]


def _without_per_message(message: dict[str, Any]) -> dict[str, Any]:
    return {
        **message,
        "headers": {k: v for k, v in message["headers"].items() if k not in _PER_MESSAGE},
        "properties": {k: v for k, v in message["properties"].items() if k not in _PER_MESSAGE},
    }


def test_the_message_is_the_one_celery_sends() -> None:
    name, args, kwargs, argsrepr, kwargsrepr = message = (
        APPLY_TRANSFER_TASK,
        [["a", "b"]],
        {"request_id": "r"},
        "a, b",
        "",
    )
    queue = unique("queue")
    redis = Redis.from_url(load_settings().redis_url)
    try:
        # As `_publish` sends, to the test's queue.
        with celery_app.producer_or_acquire() as producer:
            celery_app.send_task(
                name,
                args=args,
                kwargs=kwargs,
                producer=producer,
                argsrepr=argsrepr,
                kwargsrepr=kwargsrepr,
                queue=queue,
            )
        (celerys,) = _pop_all(redis, queue)
    finally:
        redis.close()
    ours = json.loads(encode_task(message, "gen1@host", queue))
    assert _without_per_message(ours) == _without_per_message(celerys)
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(
        base64.b64decode(celerys["body"])
    )
    # The ids a worker keys on are fresh and consistent within the message.
    headers, properties = ours["headers"], ours["properties"]
    assert headers["id"] == headers["root_id"] == properties["correlation_id"]
    assert uuid.UUID(properties["delivery_tag"]) != uuid.UUID(headers["id"])


def _pending(sender: uuid.UUID, receiver: uuid.UUID, to_currency: str | None = None) -> Transfer:
    return Transfer(
        uuid.uuid4(),
        TransferKind.TRANSFER,
        sender,
        receiver,
        Decimal(10),
        Decimal(0),
        Decimal(0),
        "USD",
        unique("key"),
        TransferState.PENDING,
        None,
        datetime.now(UTC),
        None,
        to_currency=to_currency,
    )


async def test_publishes_one_message_naming_every_transfer_and_balance() -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    first, second = _pending(alice, bob), _pending(alice, bob, to_currency="EUR")
    queue = unique("queue")
    publisher = TransferPublisher(load_settings().redis_url, queue)
    redis = Redis.from_url(load_settings().redis_url)
    try:
        await publisher.publish_transfers([(first, "r1"), (second, None)])
        (message,) = _pop_all(redis, queue)
    finally:
        await publisher.aclose()
        redis.close()
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    expected = transfers_message([(first, "r1"), (second, None)])
    assert args == expected[1] == [[str(first.id), str(second.id)]]
    assert kwargs == expected[2]
    assert kwargs["request_ids"] == ["r1", None]  # each transfer's own, for the worker's lines
    # Each balance once, the cross-currency receiver's in its `to_currency`.
    assert kwargs["balances"] == [[str(alice), "USD"], [str(bob), "USD"], [str(bob), "EUR"]]
    assert message["headers"]["argsrepr"] == f"{first.id}, {second.id}"


async def test_a_broker_that_is_down_costs_no_error() -> None:
    """Refused at once (nothing listens there): no exception, the breaker opens."""
    publisher = TransferPublisher("redis://127.0.0.1:1/0")
    try:
        assert broker_breaker.allows()
        await publisher.publish_transfers([(_pending(uuid.uuid4(), uuid.uuid4()), None)])
        assert not broker_breaker.allows()  # paused: the next publishes skip the broker
    finally:
        broker_breaker.succeeded()
        await publisher.aclose()

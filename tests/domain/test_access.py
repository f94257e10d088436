"""Access rules: key formats, rate limits, and what an actor may see and do."""

from __future__ import annotations

import uuid

import pytest

from shared.domain.access import (
    Actor,
    RateLimit,
    Scope,
    hash_secret,
    looks_like_secret,
    new_secret,
    parse_key_name,
    parse_rate_limit,
)
from shared.domain.errors import Forbidden, InvalidInput, MayNotActFor


def merchant_actor(scope: Scope = Scope.WRITE) -> Actor:
    return Actor(uuid.uuid4(), uuid.uuid4(), "alice", scope, None)


ADMIN = Actor(uuid.uuid4(), None, None, Scope.WRITE, None)


class TestSecrets:
    def test_new_secrets_are_prefixed_random_and_recognised(self) -> None:
        secrets = {new_secret() for _ in range(100)}
        assert len(secrets) == 100
        assert all(s.startswith("mlk_") and looks_like_secret(s) for s in secrets)

    @pytest.mark.parametrize(
        "value", ["", "mlk_", "mlk_short", "xyz_" + "a" * 43, "mlk_" + "é" * 43]
    )
    def test_other_strings_are_not_secrets(self, value: str) -> None:
        assert not looks_like_secret(value)

    def test_the_hash_is_stable_and_not_the_secret(self) -> None:
        secret = new_secret()
        assert hash_secret(secret) == hash_secret(secret) != secret
        assert len(hash_secret(secret)) == 64


class TestRateLimit:
    @pytest.mark.parametrize(
        ("text", "limit"),
        [("10/second", RateLimit(10, "second")), ("600/minute", RateLimit(600, "minute"))],
    )
    def test_parses(self, text: str, limit: RateLimit) -> None:
        assert parse_rate_limit(text) == limit
        assert str(limit) == text

    @pytest.mark.parametrize(
        "text", ["0/second", "10/hour", "ten/second", "10 / second", "٣/second"]
    )
    def test_refuses(self, text: str) -> None:
        with pytest.raises(InvalidInput):
            parse_rate_limit(text)


class TestKeyName:
    def test_accepts(self) -> None:
        assert parse_key_name("billing app") == "billing app"

    @pytest.mark.parametrize("name", ["", "x" * 65, "tab\there", "nul\x00", False, 5, None])
    def test_refuses(self, name: object) -> None:
        with pytest.raises(InvalidInput):
            parse_key_name(name)


class TestActor:
    def test_an_admin_sees_and_acts_for_everyone(self) -> None:
        ADMIN.require_admin()
        ADMIN.require_acting_for("anyone")
        assert ADMIN.sees_merchant(uuid.uuid4()) and ADMIN.sees_transfer(None, uuid.uuid4())
        assert ADMIN.idempotency_scope is None

    def test_a_merchant_sees_only_transfers_it_is_party_to(self) -> None:
        actor = merchant_actor()
        assert actor.merchant_id is not None
        assert actor.sees_transfer(actor.merchant_id, uuid.uuid4())
        assert actor.sees_transfer(uuid.uuid4(), actor.merchant_id)
        assert not actor.sees_transfer(uuid.uuid4(), uuid.uuid4())
        assert actor.idempotency_scope == actor.merchant_id

    def test_a_merchant_acts_only_for_itself(self) -> None:
        actor = merchant_actor()
        actor.require_acting_for("alice")
        with pytest.raises(MayNotActFor, match="API key may not act for merchant bob"):
            actor.require_acting_for("bob")
        with pytest.raises(Forbidden):
            actor.require_admin()

    def test_a_read_key_writes_nothing(self) -> None:
        with pytest.raises(Forbidden):
            merchant_actor(Scope.READ).require_acting_for("alice")

from decimal import Decimal

import pytest

from shared.domain.errors import InvalidInput
from shared.domain.merchants import parse_merchant_name
from shared.domain.transfers import (
    TransferRequest,
    TransferState,
    parse_idempotency_key,
)


class TestTransferState:
    def test_only_pending_is_not_final(self) -> None:
        assert [state for state in TransferState if not state.is_final] == [TransferState.PENDING]


class TestFingerprint:
    def test_same_meaning_same_fingerprint(self) -> None:
        first = TransferRequest("a", "b", Decimal("0.1"), "BTC")
        second = TransferRequest("a", "b", Decimal("0.10000000"), "BTC")
        assert first.fingerprint() == second.fingerprint()

    @pytest.mark.parametrize(
        "other",
        [
            TransferRequest("a", "c", Decimal("0.1"), "BTC"),
            TransferRequest("b", "a", Decimal("0.1"), "BTC"),
            TransferRequest("a", "b", Decimal("0.2"), "BTC"),
            TransferRequest("a", "b", Decimal("0.1"), "ETH"),
        ],
    )
    def test_different_request_different_fingerprint(self, other: TransferRequest) -> None:
        assert TransferRequest("a", "b", Decimal("0.1"), "BTC").fingerprint() != other.fingerprint()


class TestIdempotencyKey:
    @pytest.mark.parametrize("key", ["a", "abc-123_XYZ", "~" * 255, "!"])
    def test_accepts_visible_ascii(self, key: str) -> None:
        assert parse_idempotency_key(key) == key

    @pytest.mark.parametrize("key", ["", "a b", "a" * 256, "ключ", "tab\t", "\x7f"])
    def test_refuses(self, key: str) -> None:
        with pytest.raises(InvalidInput):
            parse_idempotency_key(key)


class TestMerchantName:
    @pytest.mark.parametrize("name", ["1 merchant", "ryan_gosling", "Ünïcode", "x" * 64])
    def test_accepts(self, name: str) -> None:
        assert parse_merchant_name(name) == name

    @pytest.mark.parametrize("name", ["", " lead", "trail ", "a/b", "bell\x07", "x" * 65, 5])
    def test_refuses(self, name: object) -> None:
        with pytest.raises(InvalidInput):
            parse_merchant_name(name)

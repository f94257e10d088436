"""Statements' pure rules: times with a timezone, the window, the cursor, a page's chain."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from shared.domain.errors import InvalidCursor, InvalidInput, InvariantViolation
from shared.domain.statements import (
    EntryKind,
    StatementCursor,
    StatementEntry,
    VersionRange,
    Window,
    check_page,
    parse_moment,
    request_scope,
)

NOON = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
ACCOUNT = uuid.UUID(int=1)


class TestParseMoment:
    @pytest.mark.parametrize(
        "text",
        [
            "2025-01-15T12:00:00Z",
            "2025-01-15T12:00:00+00:00",
            "2025-01-15T13:00:00+01:00",
            "2025-01-15T07:00:00.000000-05:00",
            "2025-01-15 12:00Z",
        ],
    )
    def test_any_offset_is_the_same_instant_in_utc(self, text: str) -> None:
        moment = parse_moment(text, what="from")
        assert moment == NOON and moment.utcoffset() == timedelta(0)

    def test_microseconds_are_kept(self) -> None:
        moment = parse_moment("2025-01-15T12:00:00.123456Z", what="from")
        assert moment.microsecond == 123456

    @pytest.mark.parametrize(
        "value",
        [
            "2025-01-15T12:00:00",  # no timezone: a different instant everywhere
            "2025-01-15",
            "yesterday",
            "",
            "2025-01-15T12:00:00 01:00",  # a '+' that arrived unencoded, as a space
            "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
            "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
            None,
            12,
        ],
    )
    def test_anything_else_is_refused_with_one_message(self, value: object) -> None:
        with pytest.raises(InvalidInput) as raised:
            parse_moment(value, what="to")
        assert raised.value.message == (
            "to must be an ISO 8601 time with a timezone, e.g. 2025-01-15T09:30:00Z"
        )


class TestWindow:
    def test_open_on_either_side(self) -> None:
        Window()
        Window(start=NOON)
        Window(end=NOON)
        Window(NOON, NOON + timedelta(microseconds=1))

    @pytest.mark.parametrize("end", [NOON, NOON - timedelta(microseconds=1)])
    def test_from_must_be_earlier_than_to(self, end: datetime) -> None:
        with pytest.raises(InvalidInput, match=r"^from must be earlier than to$"):
            Window(NOON, end)


class TestCursor:
    def test_round_trip(self) -> None:
        scope = request_scope(ACCOUNT, Window(NOON))
        cursor = StatementCursor(VersionRange(3, 10), 5, scope)
        encoded = cursor.encode()
        assert "=" not in encoded and len(encoded) <= 200
        assert StatementCursor.decode(encoded) == cursor

    def test_scope_names_the_balance_and_the_window(self) -> None:
        later = NOON + timedelta(microseconds=1)
        scopes = {
            request_scope(ACCOUNT, Window()),
            request_scope(ACCOUNT, Window(start=NOON)),
            request_scope(ACCOUNT, Window(end=NOON)),
            request_scope(ACCOUNT, Window(start=later)),
            request_scope(uuid.UUID(int=2), Window()),
        }
        assert len(scopes) == 5
        same_instant = NOON.astimezone(timezone(timedelta(hours=3)))
        assert request_scope(ACCOUNT, Window(same_instant)) == request_scope(ACCOUNT, Window(NOON))

    def test_a_cursor_continues_only_its_scope(self) -> None:
        cursor = StatementCursor(VersionRange(0, 2), 1, request_scope(ACCOUNT, Window()))
        cursor.require_scope(request_scope(ACCOUNT, Window()))
        with pytest.raises(InvalidCursor):
            cursor.require_scope(request_scope(ACCOUNT, Window(end=NOON)))

    @pytest.mark.parametrize(
        "raw",
        [
            "1.2.3",
            "a.b.c.d",
            "01.2.1.s",  # not how a version is written
            "-1.2.0.s",
            "0.1000000000000000000.0.s",  # 19 digits: beyond what a BIGINT surely holds
            "3.2.3.s",  # low above high
            "2.5.1.s",  # after below low
            "0.5.5.s",  # nothing after the last version
        ],
    )
    def test_forged_contents_are_invalid(self, raw: str) -> None:
        encoded = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        with pytest.raises(InvalidCursor):
            StatementCursor.decode(encoded)

    @pytest.mark.parametrize("text", ["", "!!", "a" * 201, "é", "/w==", "YQ"])
    def test_malformed_text_is_invalid(self, text: str) -> None:
        with pytest.raises(InvalidCursor):
            StatementCursor.decode(text)


def entry(version: int, amount: str, balance_after: str) -> StatementEntry:
    return StatementEntry(
        version, None, EntryKind.TRANSFER, Decimal(amount), Decimal(balance_after), NOON
    )


class TestCheckPage:
    def test_a_chain_from_the_previous_balance(self) -> None:
        check_page(4, Decimal("10"), [entry(5, "-2.5", "7.5"), entry(6, "1", "8.5")], last=6)
        check_page(4, Decimal("10"), [entry(5, "-2.5", "7.5")], last=None)
        check_page(4, Decimal("10"), [], last=4)

    @pytest.mark.parametrize(
        ("entries", "last"),
        [
            ([entry(5, "-2.5", "7.5"), entry(7, "1", "8.5")], None),  # a version skipped
            ([entry(5, "-2.5", "7.5"), entry(6, "1", "9")], None),  # a wrong balance_after
            ([entry(5, "-2.5", "7.5")], 6),  # the last page ends early
        ],
    )
    def test_a_hole_is_an_invariant_violation(
        self, entries: list[StatementEntry], last: int | None
    ) -> None:
        with pytest.raises(InvariantViolation):
            check_page(4, Decimal("10"), entries, last)

    def test_a_version_range_is_never_inverted(self) -> None:
        VersionRange(0, 0)
        with pytest.raises(InvariantViolation):
            VersionRange(2, 1)

"""Volume fee tiers and daily/monthly limits: the rules, the tier boundaries, and the journal
enforcing limits and keeping the running totals (SPEC Part 3)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from shared.domain.errors import InvalidInput
from shared.domain.fee_tiers import FeeTier, month_window, parse_fee_tiers, tier_percent_fee
from shared.domain.limits import (
    BalanceLimit,
    LimitPeriod,
    LimitUsage,
    first_exceeded,
    parse_limits,
)
from shared.domain.posting import (
    BalanceTotal,
    Journal,
    accounts_touched,
    issuance_account,
    merchant_account,
)
from shared.domain.transfers import INSUFFICIENT_FUNDS, Transfer, TransferKind
from tests.domain.test_posting import TODAY, locked, make_transfer

D = Decimal
DAILY, MONTHLY = "Daily limit exceeded", "Monthly limit exceeded"


def tiers(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from_volume": volume, "percent_fee": fee} for volume, fee in pairs]


class TestParseFeeTiers:
    def test_valid_tiers_are_exact(self) -> None:
        parsed = parse_fee_tiers(tiers(("0", "2"), ("10000", "1.5"), ("50000.5", "0")))
        assert parsed == (
            FeeTier(D("0"), D("2.00")),
            FeeTier(D("10000"), D("1.50")),
            FeeTier(D("50000.5"), D("0.00")),
        )

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("2%", "Fee tiers must be a list of {from_volume, percent_fee}"),
            ([], "Fee tiers must not be empty (null returns to the flat percent_fee)"),
            (tiers(("1", "2")), "The first fee tier must start from volume 0"),
            (
                tiers(("0", "2"), ("100", "1"), ("100", "0.5")),
                "Fee tiers must be in strictly ascending order of from_volume",
            ),
            (
                tiers(("0", "2"), ("100", "1"), ("50", "0.5")),
                "Fee tiers must be in strictly ascending order of from_volume",
            ),
            (tiers(("0", "100.01")), "Percent fee must be between 0 and 100"),
            (tiers(("0", "-1")), "Percent fee must be between 0 and 100"),
            (tiers(("0", "1.005")), "Percent fee must have at most 2 decimal places"),
            (tiers(("0", "1"), ("-5", "1")), "From volume must be greater than or equal to 0"),
            (
                tiers(("0", "1"), ("0.000000001", "1")),
                "From volume must have at most 8 decimal places",
            ),
            ([{"from_volume": "0"}], "Each fee tier must have exactly from_volume and percent_fee"),
            (
                [{"from_volume": "0", "percent_fee": "1", "currency": "USD"}],
                "Each fee tier must have exactly from_volume and percent_fee",
            ),
            (tiers(*[(str(n), "1") for n in range(21)]), "Fee tiers must be at most 20"),
        ],
    )
    def test_each_rule_has_its_message(self, value: object, message: str) -> None:
        with pytest.raises(InvalidInput) as raised:
            parse_fee_tiers(value)
        assert raised.value.message == message

    def test_a_negative_zero_is_zero(self) -> None:
        (tier,) = parse_fee_tiers(tiers(("-0", "-0.00")))
        assert not tier.from_volume.is_signed() and not tier.percent_fee.is_signed()


class TestTierOfAVolume:
    TIERS = (FeeTier(D(0), D("2.00")), FeeTier(D(10000), D("1.50")), FeeTier(D(50000), D("1.00")))

    @pytest.mark.parametrize(
        ("volume", "percent"),
        [
            ("0", "2.00"),
            ("9999.99999999", "2.00"),
            ("10000", "1.50"),  # exactly at from_volume: the tier that starts there
            ("10000.00000001", "1.50"),
            ("49999.99999999", "1.50"),
            ("50000", "1.00"),
            ("99999999999", "1.00"),
        ],
    )
    def test_the_last_tier_not_above_the_volume(self, volume: str, percent: str) -> None:
        assert tier_percent_fee(self.TIERS, D(volume)) == D(percent)


class TestMonthWindow:
    @pytest.mark.parametrize(
        ("now", "start", "end"),
        [
            (datetime(2026, 3, 31, 23, 59, 59, 999999, UTC), (2026, 3), (2026, 4)),
            (datetime(2026, 4, 1, 0, 0, tzinfo=UTC), (2026, 4), (2026, 5)),
            (datetime(2026, 12, 15, 12, tzinfo=UTC), (2026, 12), (2027, 1)),
        ],
    )
    def test_utc_calendar_months(
        self, now: datetime, start: tuple[int, int], end: tuple[int, int]
    ) -> None:
        assert month_window(now) == (
            datetime(*start, 1, tzinfo=UTC),
            datetime(*end, 1, tzinfo=UTC),
        )


class TestParseLimits:
    def test_valid_limits(self) -> None:
        parsed = parse_limits(
            [
                {"currency": "usd", "period": "day", "max_amount": "1000"},
                {"currency": "USD", "period": "month", "max_amount": "20000.5"},
            ]
        )
        assert parsed == (
            BalanceLimit("USD", LimitPeriod.DAY, D("1000")),
            BalanceLimit("USD", LimitPeriod.MONTH, D("20000.5")),
        )
        assert parse_limits([]) == ()

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (None, "Limits must be a list of {currency, period, max_amount}"),
            (
                [{"currency": "USD", "period": "week", "max_amount": "1"}],
                "Limit period must be day or month",
            ),
            (
                [{"currency": "US", "period": "day", "max_amount": "1"}],
                "Currency must be 3 to 10 letters or digits",
            ),
            (
                [{"currency": "USD", "period": "day", "max_amount": "0"}],
                "Max amount must be greater than 0",
            ),
            (
                [{"currency": "USD", "period": "day"}],
                "Each limit must have exactly currency, period and max_amount",
            ),
            (
                [
                    {"currency": "USD", "period": "day", "max_amount": "1"},
                    {"currency": "usd", "period": "day", "max_amount": "2"},
                ],
                "Only one limit per currency and period",
            ),
        ],
    )
    def test_each_rule_has_its_message(self, value: object, message: str) -> None:
        with pytest.raises(InvalidInput) as raised:
            parse_limits(value)
        assert raised.value.message == message


class TestFirstExceeded:
    DAY = LimitUsage(BalanceLimit("USD", LimitPeriod.DAY, D(1000)), D(850))
    MONTH = LimitUsage(BalanceLimit("USD", LimitPeriod.MONTH, D(5000)), D(4900))

    def test_reaching_a_limit_exactly_is_allowed(self) -> None:
        assert first_exceeded([self.DAY], D(150)) is None
        assert first_exceeded([self.DAY], D("150.00000001")) == self.DAY

    def test_the_daily_limit_is_named_first(self) -> None:
        assert first_exceeded([self.MONTH, self.DAY], D(200)) == self.DAY
        assert first_exceeded([self.MONTH, self.DAY], D(120)) == self.MONTH


NOON = datetime(TODAY.year, TODAY.month, TODAY.day, 12, tzinfo=UTC)


def sent_today(amount: str, fee: str, sender: uuid.UUID) -> Transfer:
    """A transfer recorded on the journal's day."""
    return dataclasses.replace(make_transfer(amount, fee, sender=sender), created=NOON)


def usage(period: LimitPeriod, max_amount: str, used: str = "0") -> LimitUsage:
    return LimitUsage(BalanceLimit("USD", period, D(max_amount)), D(used))


class TestJournalLimits:
    def journal(
        self, transfers: list[Transfer], sender: uuid.UUID, balance: str, limits: list[LimitUsage]
    ) -> Journal:
        keys = {key for transfer in transfers for key in accounts_touched(transfer)}
        accounts = locked({key: balance if key.merchant_id == sender else "0" for key in keys})
        return Journal(accounts, today=TODAY, limits={merchant_account(sender, "USD"): limits})

    def test_ten_transfers_of_150_under_a_daily_limit_of_1000(self) -> None:
        sender = uuid.uuid4()
        transfers = [sent_today("150", "0", sender) for _ in range(10)]
        journal = self.journal(transfers, sender, "5000", [usage(LimitPeriod.DAY, "1000")])
        outcomes = [journal.apply(transfer).failure_reason for transfer in transfers]
        assert outcomes == [None] * 6 + [DAILY] * 4
        (total,) = journal.balance_totals()
        assert total == BalanceTotal(sender, "USD", TODAY, D(900), D(900))

    def test_the_fee_counts_and_what_was_used_before(self) -> None:
        sender = uuid.uuid4()
        first, second = sent_today("100", "2", sender), sent_today("100", "2", sender)
        journal = self.journal(
            [first, second], sender, "5000", [usage(LimitPeriod.MONTH, "1000", used="796")]
        )
        assert journal.apply(first).failure_reason is None  # 796 + 102 = 898
        assert journal.apply(second).failure_reason is None  # 1000: exactly the limit
        third = sent_today("0.00000001", "0", sender)
        journal = self.journal([third], sender, "5000", [usage(LimitPeriod.MONTH, "1000", "1000")])
        assert journal.apply(third).failure_reason == MONTHLY

    def test_a_refused_transfer_moves_nothing_and_uses_nothing(self) -> None:
        sender = uuid.uuid4()
        big, small = sent_today("200", "0", sender), sent_today("50", "0", sender)
        journal = self.journal([big, small], sender, "5000", [usage(LimitPeriod.DAY, "100")])
        assert journal.apply(big).postings == ()
        assert journal.apply(small).failure_reason is None
        assert journal.balance_totals() == [BalanceTotal(sender, "USD", TODAY, D(50), D(50))]

    def test_insufficient_funds_is_named_before_a_limit(self) -> None:
        sender = uuid.uuid4()
        transfer = sent_today("200", "0", sender)
        journal = self.journal([transfer], sender, "100", [usage(LimitPeriod.DAY, "150")])
        assert journal.apply(transfer).failure_reason == INSUFFICIENT_FUNDS

    def test_withdrawals_count_and_deposits_do_not(self) -> None:
        merchant = uuid.uuid4()
        withdrawal = dataclasses.replace(
            sent_today("600", "0", merchant),
            kind=TransferKind.WITHDRAWAL,
            receiver_id=None,
        )
        deposit = dataclasses.replace(
            make_transfer("5000", "0", receiver=merchant), kind=TransferKind.DEPOSIT, sender_id=None
        )
        second = dataclasses.replace(withdrawal, id=uuid.uuid4())
        keys = {merchant_account(merchant, "USD"): "1000", issuance_account("USD"): "0"}
        journal = Journal(
            locked(keys),
            today=TODAY,
            limits={merchant_account(merchant, "USD"): [usage(LimitPeriod.DAY, "1000")]},
        )
        outcomes = [journal.apply(t).failure_reason for t in (withdrawal, deposit, second)]
        assert outcomes == [None, None, DAILY]
        # A withdrawal is no transfer: it adds nothing to the volume fee tiers read.
        assert journal.balance_totals() == [BalanceTotal(merchant, "USD", TODAY, D(600), D(0))]

    def test_a_transfer_recorded_yesterday_adds_to_yesterdays_volume(self) -> None:
        sender = uuid.uuid4()
        transfer = dataclasses.replace(
            sent_today("70", "1", sender), created=datetime(2026, 1, 14, 23, 59, tzinfo=UTC)
        )
        journal = self.journal([transfer], sender, "500", [])
        journal.apply(transfer)
        assert journal.balance_totals() == [
            BalanceTotal(sender, "USD", date(2026, 1, 14), D(0), D(70)),
            BalanceTotal(sender, "USD", TODAY, D(71), D(0)),
        ]

    def test_merchants_without_limits_still_keep_totals(self) -> None:
        sender = uuid.uuid4()
        transfers = [sent_today("10", "0.5", sender) for _ in range(3)]
        keys = {key for transfer in transfers for key in accounts_touched(transfer)}
        journal = Journal(
            locked({key: "100" if key.merchant_id == sender else "0" for key in keys}), today=TODAY
        )
        assert all(journal.apply(t).failure_reason is None for t in transfers)
        assert journal.balance_totals() == [BalanceTotal(sender, "USD", TODAY, D("31.5"), D(30))]

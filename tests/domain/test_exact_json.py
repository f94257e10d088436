import json
from decimal import Decimal

import pytest

from api.exact_json import parse_exact_json


class TestParseExactJson:
    def test_numbers_become_exact_decimals(self) -> None:
        parsed = parse_exact_json(b'{"a": 0.1, "b": 1234567890.123456789, "c": 7}')
        assert parsed == {
            "a": Decimal("0.1"),
            "b": Decimal("1234567890.123456789"),
            "c": Decimal(7),
        }
        assert all(isinstance(value, Decimal) for value in parsed.values())

    def test_huge_exponent_stays_exact_for_the_validator_to_refuse(self) -> None:
        assert parse_exact_json(b'{"a": 1e400}') == {"a": Decimal("1e400")}

    @pytest.mark.parametrize("body", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}'])
    def test_refuses_non_finite_constants(self, body: bytes) -> None:
        with pytest.raises(json.JSONDecodeError):
            parse_exact_json(body)

    def test_refuses_bytes_that_are_not_utf8(self) -> None:
        with pytest.raises(json.JSONDecodeError, match="UTF-8"):
            parse_exact_json(b'{"a": "\xff"}')

    @pytest.mark.parametrize("body", [b"[1e99999999999999999999]", b"[-1E-99999999999999999999]"])
    def test_refuses_exponents_past_decimals_range(self, body: bytes) -> None:
        with pytest.raises(json.JSONDecodeError, match="Number out of range"):
            parse_exact_json(body)

    def test_refuses_digits_other_than_ascii(self) -> None:
        with pytest.raises(json.JSONDecodeError):
            parse_exact_json('{"a": ١٢}'.encode())

    def test_integers_of_any_length_stay_exact(self) -> None:
        # int() would refuse more than 4,300 digits; the validator refuses the size instead.
        assert parse_exact_json(b"[" + b"9" * 5000 + b"]") == [Decimal("9" * 5000)]

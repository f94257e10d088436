"""How the console shows numbers and times, and the template environment that uses them.

Money is formatted from its exact `Decimal`, never through a float: thousands separators, at
least two decimals, and every significant decimal kept (`1,234.50`, `0.00012345`). Times are
UTC, always labelled so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.templating import Jinja2Templates

from shared.domain.money import format_amount, format_percent

BASE_PATH = "/console"
TEMPLATES_DIR = Path(__file__).parent / "templates"
MIN_DECIMALS = 2


def money(amount: Decimal | None, signed: bool = False) -> str:
    """`1234.5` -> `1,234.50`; `-0.00012345` -> `-0.00012345`; exact at any size."""
    if amount is None:
        return "—"
    text = format_amount(amount)  # exactly 8 decimals, no exponent
    sign = "-" if text.startswith("-") else ("+" if signed and amount > 0 else "")
    integer, _, fraction = text.lstrip("-").partition(".")
    fraction = fraction.rstrip("0").ljust(MIN_DECIMALS, "0")
    grouped = f"{int(integer):,}"  # an int of up to 30 digits: exact
    return f"{sign}{grouped}.{fraction}"


def percent(value: Decimal) -> str:
    return f"{format_percent(value)}%"


def utc(moment: datetime | None) -> str:
    """`2025-01-15 09:30:00 UTC` (to the second; the exact time is in `iso`)."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_iso(text: str | None) -> datetime | None:
    """An ISO 8601 time (as the audit record stores it), or None if it is not one."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """`42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`: what an operator reads at a glance."""
    if seconds is None:
        return "—"
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def short_id(value: object) -> str:
    return str(value)[:8]


def path_part(value: object) -> str:
    """A merchant name (any character but '/') as one path segment."""
    return quote(str(value), safe="")


def query(**params: Any) -> str:
    """`?a=1&b=2` from the parameters that have a value, else an empty string."""
    present = {name: str(value) for name, value in params.items() if value not in (None, "")}
    return f"?{urlencode(present)}" if present else ""


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        money=money,
        percent=percent,
        utc=utc,
        iso=iso,
        from_iso=from_iso,
        duration=duration,
        short_id=short_id,
        path_part=path_part,
    )
    environment.globals.update(base=BASE_PATH, query=query)
    return environment


templates = Jinja2Templates(env=_environment())

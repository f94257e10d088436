"""Opaque keyset cursors: what the last row of a page was, for the next page to start after."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from shared.domain.errors import InvalidCursor


def encode_text(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_text(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidCursor() from error


def encode_moment(created: datetime, row_id: uuid.UUID) -> str:
    """After the row created at `created` with `row_id` (newest-first listings)."""
    return encode_text(f"{created.isoformat()}|{row_id}")


def decode_moment(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, row_id = decode_text(cursor).split("|")
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive cursor timestamp")
        return moment, uuid.UUID(row_id)
    except ValueError as error:
        raise InvalidCursor() from error

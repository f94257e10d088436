"""`mini-ledger import FILE`: stream a CSV or JSON Lines file of transfers into the service.

Rows go out in batches (`POST /batches`); refused rows land in a rejects file with their
reasons. Every row carries its own Idempotency-Key, so an import that was interrupted (or
crashed) is resumed by running the same command again: rows already recorded come back as
replays, nothing is recorded twice.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import httpx

COLUMNS = ("idempotency_key", "from_merchant", "to_merchant", "amount", "currency")
MAX_ATTEMPTS = 8
RETRY_BASE_S = 0.5
POLL_INTERVAL_S = 1.0
REQUEST_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    item: dict[str, Any] | None  # None: unreadable, `problem` says why
    problem: str | None = None


@dataclass
class Progress:
    rows: int = 0
    accepted: int = 0
    refused: int = 0
    completed: int = 0
    failed: int = 0
    batches: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def settled(self) -> int:
        return self.completed + self.failed

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"rows {self.rows}  accepted {self.accepted}  refused {self.refused}  "
            f"completed {self.completed}  failed {self.failed}  "
            f"pending {self.accepted - self.settled}  "
            f"{self.settled / elapsed:,.0f} settled/s  {elapsed:,.1f}s"
        )


def read_rows(path: Path) -> Iterator[Row]:
    """CSV (with a header naming the five columns) or JSON Lines, chosen by content."""
    with path.open(encoding="utf-8", newline="") as source:
        first = source.read(1)
        while first.isspace():
            first = source.read(1)
        source.seek(0)
        if first == "{":
            yield from _json_lines(source)
        else:
            yield from _csv_rows(source)


def _json_lines(source: TextIO) -> Iterator[Row]:
    for line_number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_float=Decimal, parse_int=Decimal)
        except json.JSONDecodeError as error:
            yield Row(line_number, None, f"Invalid JSON: {error.msg}")
            continue
        if not isinstance(record, dict):
            yield Row(line_number, None, "Each line must be a JSON object")
            continue
        yield Row(line_number, {key: _wire(value) for key, value in record.items()})


def _csv_rows(source: TextIO) -> Iterator[Row]:
    reader = csv.DictReader(source)
    missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise SystemExit(f"the CSV header lacks: {', '.join(missing)}")
    for record in reader:
        if None in record or any(record[column] is None for column in COLUMNS):
            yield Row(reader.line_num, None, "Wrong number of columns")
            continue
        yield Row(reader.line_num, {column: record[column] for column in COLUMNS})


def _wire(value: Any) -> Any:
    """Numbers travel as exact decimal strings."""
    return f"{value:f}" if isinstance(value, Decimal) else value


def chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def post_batch(client: httpx.Client, items: list[dict[str, Any]]) -> dict[str, Any]:
    """POST /batches, retrying what the service says to retry (safe: every row has its key)."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            response = client.post("/batches", json={"transfers": items})
        except httpx.TransportError as error:
            problem = str(error)
        else:
            if response.status_code == 202:
                result: dict[str, Any] = response.json()["result"]
                return result
            if response.status_code not in (502, 503, 504):
                raise SystemExit(f"POST /batches answered {response.status_code}: {response.text}")
            problem = f"status {response.status_code}"
        delay = RETRY_BASE_S * 2**attempt
        sys.stderr.write(f"\nPOST /batches failed ({problem}); retrying in {delay:.1f}s\n")
        time.sleep(delay)
    raise SystemExit(f"POST /batches kept failing after {MAX_ATTEMPTS} attempts")


def refresh(client: httpx.Client, progress: Progress, finished: dict[str, dict[str, int]]) -> None:
    """Re-read the counts of every batch not yet finished."""
    completed = failed = 0
    for batch_id in progress.batches:
        counts = finished.get(batch_id)
        if counts is None:
            result = client.get(f"/batches/{batch_id}").json()["result"]
            counts = result["counts"]
            if result["finished"]:
                finished[batch_id] = counts
        completed += counts["completed"]
        failed += counts["failed"]
    progress.completed, progress.failed = completed, failed


class Display:
    """One progress line, redrawn in place on a terminal, printed now and then otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def show(self, progress: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        end = "" if self.tty else "\n"
        self.stream.write(("\r\x1b[2K" if self.tty else "") + progress.line() + end)
        self.stream.flush()


def run_import(
    path: Path, base_url: str, api_key: str, batch_size: int, rejects_path: Path, wait: bool
) -> Progress:
    progress = Progress()
    display = Display(sys.stderr)
    finished: dict[str, dict[str, int]] = {}
    headers = {"Authorization": f"Bearer {api_key}"}
    with (
        httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S, headers=headers) as client,
        rejects_path.open("w", newline="", encoding="utf-8") as rejects_file,
    ):
        rejects = csv.writer(rejects_file)
        rejects.writerow(["line", "idempotency_key", "status", "error"])
        try:
            for chunk in chunks(read_rows(path), batch_size):
                readable = [row for row in chunk if row.item is not None]
                for row in chunk:
                    if row.item is None:
                        rejects.writerow([row.line, "", 422, row.problem])
                        progress.refused += 1
                progress.rows += len(chunk)
                if not readable:
                    continue
                result = post_batch(client, [row.item for row in readable if row.item])
                progress.batches.append(result["id"])
                for row, outcome in zip(readable, result["items"], strict=True):
                    if "error" in outcome and outcome["error"] is not None:
                        error = outcome["error"]
                        message = error["message"]
                        text = "; ".join(message) if isinstance(message, list) else message
                        key = (row.item or {}).get("idempotency_key", "")
                        rejects.writerow([row.line, key, error["status"], text])
                        progress.refused += 1
                    else:
                        progress.accepted += 1
                if display.tty or wait:
                    refresh(client, progress, finished)
                display.show(progress)
            while wait and progress.settled < progress.accepted:
                time.sleep(POLL_INTERVAL_S)
                refresh(client, progress, finished)
                display.show(progress)
            refresh(client, progress, finished)
        finally:
            rejects_file.flush()
            display.show(progress, force=True)
            if display.tty:
                sys.stderr.write("\n")
    return progress

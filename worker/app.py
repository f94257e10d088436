"""The Celery application the worker, beat and Flower load: `celery -A worker.app ...`."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from shared.config import get_settings
from shared.logging import configure_logging
from shared.queue import celery_app
from worker import tasks  # noqa: F401  (registers the tasks on the app)

app = celery_app


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    configure_logging(get_settings())

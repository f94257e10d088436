"""Beat's periodic audit: a real worker runs it and records the outcome where `/metrics` and the
console read it."""

from __future__ import annotations

import json
import time

import pytest
from redis import Redis

from shared.infra.config import load_settings
from shared.infra.queue import AUDIT_TASK, celery_app
from shared.services.operations import AUDIT_KEY

pytestmark = pytest.mark.integration


def test_a_worker_runs_the_audit_and_records_its_report(workers: object) -> None:
    redis = Redis.from_url(load_settings().redis_url)
    try:
        redis.delete(AUDIT_KEY)
        celery_app.send_task(AUDIT_TASK)
        deadline = time.monotonic() + 60
        while (raw := redis.hget(AUDIT_KEY, "report")) is None:
            assert time.monotonic() < deadline, "no audit recorded"
            time.sleep(0.1)
        report = json.loads(raw)
        assert report["ok"] is True, report["problems"]
        assert redis.hget(AUDIT_KEY, "ok") == b"1"
    finally:
        redis.close()


def test_beat_schedules_it() -> None:
    schedule = celery_app.conf.beat_schedule
    assert any(entry["task"] == AUDIT_TASK for entry in schedule.values())

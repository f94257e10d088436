"""A batch's progress: how many of the transfers it accepted are pending, completed, failed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class BatchProgress:
    id: uuid.UUID
    owner_merchant_id: uuid.UUID | None
    created: datetime
    accepted: int
    refused: int
    pending: int
    completed: int
    failed: int

    @property
    def finished(self) -> bool:
        return self.pending == 0

"""SPEC's success envelope: `{"status": <code>, "result": ...}` with the status repeated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi.responses import JSONResponse
from pydantic import BaseModel


def envelope(
    result: BaseModel | Sequence[BaseModel],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    rendered = (
        result.model_dump(mode="json")
        if isinstance(result, BaseModel)
        else [item.model_dump(mode="json") for item in result]
    )
    return JSONResponse(
        {"status": status, "result": rendered, **extra}, status_code=status, headers=headers
    )

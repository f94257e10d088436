"""The operator console at `/console`: server-rendered pages for the platform's operators, in
the API's process, on the API's services (SPEC Part 2, "Operations").

Not part of the API's contract: no route is in the OpenAPI schema, and the bearer-key check of
`api/auth.py` leaves `/console` to the console's own session (`session.py`).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.console import actions, login, pages, webhooks

router = APIRouter(include_in_schema=False)
router.include_router(login.router)
router.include_router(pages.router)
router.include_router(actions.router)
router.include_router(webhooks.router)

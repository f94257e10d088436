"""Logging in with an admin key, logging out, and the console's own static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from api.console.base import LOGIN_PATH, ConsoleRoute, redirect, render
from api.console.format import BASE_PATH
from api.console.session import check_csrf, read_form, sessions
from shared.domain.access import hash_secret
from shared.domain.errors import LedgerError, Unauthenticated

router = APIRouter(prefix=BASE_PATH, route_class=ConsoleRoute)

STATIC_DIR = Path(__file__).parent / "static"
# Served by name from this list only: no path ever reaches the file system.
STATIC_FILES = {
    "pico.min.css": "text/css",
    "console.css": "text/css",
    "console.js": "text/javascript",
}
STATIC_MAX_AGE_S = 3600
UNKNOWN_KEY = "That key is not a live API key: check that it was copied whole and not revoked."
MERCHANT_KEY = (
    "That is a merchant key ({merchant}): the console is for the platform's operators and "
    "needs an admin key (`mini-ledger keys create --admin`)."
)


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a console page, never another site."""
    if target and target.startswith(f"{BASE_PATH}/") and not target.startswith("//"):
        return target
    return BASE_PATH


@router.get("/login")
async def login_page(request: Request) -> Response:
    target = _safe_next(request.query_params.get("next"))
    store = sessions(request)
    session = await store.load(request)
    if session.key_hash is not None:
        try:
            if (await store.actor(session)).is_admin:
                return redirect(target)
        except LedgerError:
            session.log_out()
    return render(request, "login.html", next=target, message=None)


@router.post("/login")
async def log_in(request: Request) -> Response:
    session = await sessions(request).load(request)
    form = await read_form(request)
    check_csrf(session, form)
    target = _safe_next(form.get("next"))
    secret = form.get("key", "").strip()
    try:
        # The API's own cache: a key is resolved here exactly as a bearer header is.
        actor = await request.app.state.key_cache.resolve(secret)
    except Unauthenticated:
        return render(request, "login.html", 401, next=target, message=UNKNOWN_KEY)
    if not actor.is_admin:
        message = MERCHANT_KEY.format(merchant=actor.merchant_name)
        return render(request, "login.html", 403, next=target, message=message)
    session.log_in(hash_secret(secret))
    return redirect(target)


@router.post("/logout")
async def log_out(request: Request) -> Response:
    session = await sessions(request).load(request)
    check_csrf(session, await read_form(request))
    session.log_out()
    session.flash("ok", "Logged out.")
    return redirect(LOGIN_PATH)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return FileResponse(
        STATIC_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": f"public, max-age={STATIC_MAX_AGE_S}"},
    )

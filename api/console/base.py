"""What every console page and action shares: who is operating (`Viewer` for pages, `Editor`
for forms), rendering, and the route class that turns refusals into pages and writes the
session cookie."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from redis.asyncio import Redis
from starlette.responses import RedirectResponse, Response

from api.console.format import BASE_PATH, templates
from api.console.session import (
    CsrfRefused,
    LoginRequired,
    Session,
    check_csrf,
    read_form,
    sessions,
)
from api.errors import status_of
from shared.domain.access import Actor
from shared.domain.errors import LedgerError, Unauthenticated
from shared.infra.database import Database
from shared.services.recording import PendingRecorder

LOGIN_PATH = f"{BASE_PATH}/login"
SESSION_ENDED = "Your session ended: its API key was revoked. Log in with a live admin key."
# Pages show secrets once and balances always: nothing is cached, framed or sent elsewhere.
# Pico's own icons are `data:` images; nothing else is loaded from anywhere but the API.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Operator:
    """A logged-in admin: their key's `Actor` (the services' authorization) and session."""

    actor: Actor
    session: Session
    db: Database
    recorder: PendingRecorder
    redis: Redis
    request_id: str | None

    def ok(self, text: str) -> None:
        self.session.flash("ok", text)

    def refused(self, text: str) -> None:
        self.session.flash("error", text)


@dataclass(frozen=True, slots=True)
class Action:
    """A form posted by a logged-in admin with a write key, its CSRF token checked."""

    operator: Operator
    form: dict[str, str]

    def field(self, name: str) -> str:
        return self.form.get(name, "").strip()


async def _operator(request: Request) -> Operator:
    store = sessions(request)
    session = await store.load(request)
    if session.key_hash is None:
        raise LoginRequired()
    try:
        actor = await store.actor(session)
    except Unauthenticated:
        session.log_out()
        raise LoginRequired(SESSION_ENDED) from None
    if not actor.is_admin:  # Only admin keys log in; a key cannot change owner.
        session.log_out()
        raise LoginRequired()
    state = request.app.state
    await state.rate_limiter.check(actor)
    request_id = getattr(request.state, "request_id", None)
    return Operator(actor, session, state.database, state.recorder, state.redis, request_id)


async def _action(request: Request) -> Action:
    """CSRF first: a forged form is refused before anything, logged in or not."""
    session = await sessions(request).load(request)
    form = await read_form(request)
    check_csrf(session, form)
    operator = await _operator(request)
    operator.actor.require_write()
    return Action(operator, form)


Viewer = Annotated[Operator, Depends(_operator)]
Editor = Annotated[Action, Depends(_action)]


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    operator: Operator | None = None,
    **context: Any,
) -> Response:
    """A page; it shows (and so consumes) the session's flash messages."""
    session: Session | None = getattr(request.state, "console_session", None)
    return templates.TemplateResponse(
        request,
        template,
        {
            "operator": operator,
            "csrf_token": "" if session is None else session.csrf,
            "logged_in": session is not None and session.key_hash is not None,
            "flashes": [] if session is None else session.take_flashes(),
            **context,
        },
        status_code=status_code,
        headers=NO_STORE,
    )


def redirect(path: str) -> Response:
    """After a form: see the outcome on a page (POST, redirect, GET)."""
    return RedirectResponse(path, status_code=303)


def _login_redirect(request: Request, refusal: LoginRequired) -> Response:
    if refusal.reason:
        session: Session | None = getattr(request.state, "console_session", None)
        if session is not None:
            session.flash("error", refusal.reason)
    target = request.url.path
    if request.method == "GET" and target != BASE_PATH:
        if request.url.query:
            target = f"{target}?{request.url.query}"
        return redirect(f"{LOGIN_PATH}?next={quote(target, safe='')}")
    return redirect(LOGIN_PATH)


def _error_page(request: Request, error: LedgerError) -> Response:
    return render(
        request, "error.html", status_of(error), title="Not possible", message=error.message
    )


class ConsoleRoute(APIRoute):
    """Pages, not JSON: a missing session goes to the login page, a forged form is a 403
    page, a domain refusal a page with its message and status; then the session cookie, if the
    session changed, and the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired as refusal:
                response = _login_redirect(request, refusal)
            except CsrfRefused:
                response = render(
                    request,
                    "error.html",
                    403,
                    title="Form expired",
                    message="This form was not sent from this session (its security token is "
                    "missing or stale). Reload the page and try again.",
                )
            except LedgerError as error:
                response = _error_page(request, error)
            try:
                await sessions(request).save(request, response)
            except LedgerError as error:  # No Redis, no signing secret: no session to keep.
                response = _error_page(request, error)
            response.headers.update(SECURITY_HEADERS)
            return response

        return console_handler

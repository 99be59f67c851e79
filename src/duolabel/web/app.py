"""The annotation web app: annotators label, experts audit, admins run the project.

Server-rendered pages (Jinja2, with htmx for the parts of the admin page that refresh)
and a JSON API under ``/api/v1`` for the same operations. Every route names the roles
and account statuses that may use it (see ``common.py``) and checks them against the
store on each request, so suspending someone takes effect at once. Every POST form
carries a CSRF token (the API takes it in the ``X-CSRF-Token`` header). Gold labels of
control and exam items never reach a page or an API answer; the only right answers ever
shown are those of a finished exam attempt, on its feedback page.

Errors: pages show one line; the API answers ``{"error": {"type", "message", "status"}}``.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

from duolabel.errors import AccessError, DuolabelError, ProjectError, SetupError

try:
    from fastapi import FastAPI, Form, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException
    from starlette.middleware.sessions import SessionMiddleware
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise SetupError(f"the web app needs {exc.name!r}: pip install 'duolabel[web]'") from None

from duolabel.accounts import accept_invitation, end_session, invitation_role, log_in, start_session
from duolabel.project import Project
from duolabel.web.common import ANYONE, HERE, Web, Who

__all__ = ["SECRET_FILE", "create_app", "serve"]

SECRET_FILE = ".duolabel-secret"
SECRET_ENV = "DUOLABEL_SECRET"
MIN_SECRET_LENGTH = 16
SESSION_COOKIE = "duolabel_session"

SECURITY_HEADERS = {
    # No inline script or style anywhere, so a stored-XSS payload in an item cannot run.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def create_app(project: Project) -> FastAPI:
    """The web app for an open project (served by :func:`serve` or any ASGI server)."""
    from duolabel.web.api import router as api_router
    from duolabel.web.pages import router as pages_router

    web = Web(project)
    app = FastAPI(title="duolabel", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = web
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(project.path),
        session_cookie=SESSION_COOKIE,
        max_age=int(project.config.web.session_hours * 3600),
        same_site="lax",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("cache-control", "no-store")
        return response

    # -- errors: one line on a page or one JSON shape, never a traceback ------------

    def error(request: Request, status: int, exc: Exception | str) -> Response:
        message = str(exc).splitlines()[0] if str(exc) else "error"
        if request.url.path.startswith("/api/"):
            kind = type(exc).__name__ if isinstance(exc, Exception) else "HTTPError"
            return JSONResponse({"error": {"type": kind, "message": message, "status": status}}, status)
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        who = _maybe_who(request, web)
        return web.render(request, "error.html", status, who=who, message=message)

    @app.exception_handler(AccessError)
    def access_error(request: Request, exc: AccessError) -> Response:
        return error(request, exc.status, exc)

    @app.exception_handler(DuolabelError)
    def user_error(request: Request, exc: DuolabelError) -> Response:
        return error(request, 400, exc)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> Response:
        return error(request, exc.status_code, AccessError(str(exc.detail), status=exc.status_code))

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return error(request, 400, ProjectError("the request was incomplete; reload the page and try again"))

    # -- logging in and out, invitations ----------------------------------------------

    @app.get("/login")
    def login_page(request: Request) -> Response:
        if _maybe_who(request, web) is not None:
            return RedirectResponse("/", status_code=303)
        return web.render(request, "login.html", error=None, name="")

    @app.post("/login")
    def login(
        request: Request,
        csrf_token: Annotated[str, Form()] = "",
        name: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
    ) -> Response:
        web.check_csrf(request, csrf_token)
        try:
            annotator = log_in(web.store, name, password, address=_address(request), web=web.config.web)
        except AccessError as exc:
            return web.render(request, "login.html", exc.status, error=str(exc), name=name)
        begin_session(request, web, annotator.id)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
        web.check_csrf(request, csrf_token, _maybe_who(request, web))
        finish_session(request, web)
        return RedirectResponse("/login", status_code=303)

    @app.get("/invite/{token}")
    def invite_page(request: Request, token: str) -> Response:
        role = invitation_role(web.store, token)
        return web.render(request, "invite.html", role=role, token=token, error=None, name="")

    @app.post("/invite/{token}")
    def accept_invite(
        request: Request,
        token: str,
        csrf_token: Annotated[str, Form()] = "",
        name: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
    ) -> Response:
        web.check_csrf(request, csrf_token)
        role = invitation_role(web.store, token)
        try:
            annotator = accept_invitation(
                web.store, token, name, password, exam=web.config.quality.exam_size > 0
            )
        except ProjectError as exc:
            return web.render(request, "invite.html", 400, role=role, token=token, error=str(exc), name=name)
        begin_session(request, web, annotator.id)
        return RedirectResponse("/", status_code=303)

    app.include_router(pages_router)
    app.include_router(api_router)
    return app


def begin_session(request: Request, web: Web, annotator_id: int) -> str:
    """Log a browser in with a brand-new session id (never one it brought); returns the CSRF token."""
    old = request.session.get("sid")
    if isinstance(old, str):
        end_session(web.store, old)
    request.session.clear()
    login = start_session(web.store, annotator_id, hours=web.config.web.session_hours)
    request.session["sid"] = login.token
    return login.csrf


def finish_session(request: Request, web: Web) -> None:
    token = request.session.get("sid")
    if isinstance(token, str):
        end_session(web.store, token)
    request.session.clear()


def _maybe_who(request: Request, web: Web) -> Who | None:
    try:
        return web.who(request, ANYONE)
    except AccessError:
        return None


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def serve(project: Project, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the annotation app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(project), host=host, port=port, server_header=False)


# -- the session secret ------------------------------------------------------------


def session_secret(project_dir: Path) -> str:
    """The key that signs session cookies: $DUOLABEL_SECRET, else one kept in the project.

    The file is created once with mode 0600 and shared by every server on the project,
    so a restart (or a second server) does not log everybody out.
    """
    if secret := os.environ.get(SECRET_ENV, "").strip():
        if len(secret) < MIN_SECRET_LENGTH:
            raise ProjectError(
                f"{SECRET_ENV} is {len(secret)} characters long; use at least {MIN_SECRET_LENGTH}, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return secret
    path = Path(project_dir) / SECRET_FILE
    if path.exists():
        return _read_secret(path)
    secret = secrets.token_urlsafe(32)
    tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret + "\n")
        try:
            # A hard link never replaces an existing file: if another server won the
            # race, everybody uses its secret.
            os.link(tmp, path)
        except FileExistsError:
            return _read_secret(path)
        finally:
            tmp.unlink()
    except PermissionError as exc:
        raise ProjectError(
            f"cannot write the session secret {path} ({exc.strerror}); set {SECRET_ENV} instead"
        ) from None
    return secret


def _read_secret(path: Path) -> str:
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ProjectError(f"{path} holds no usable secret; delete it and start the server again")
    return secret

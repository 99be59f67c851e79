"""The annotation web app: annotators label, experts audit, admins run the project.

Server-rendered pages (Jinja2, with htmx for the parts of the admin page that refresh)
and a JSON API under ``/api/v1`` for the same operations. Every route names the roles
and account statuses that may use it (see ``common.py``) and checks them against the
store on each request, so suspending someone takes effect at once. Every POST form
carries a CSRF token (the API takes it in the ``X-CSRF-Token`` header). Gold labels of
control and exam items never reach a page or an API answer, not even on an exam attempt's
feedback page, which says only which answers were wrong.

Errors: pages show one line; the API answers ``{"error": {"type", "message", "status"}}``, also
for an unexpected exception (500, type ``InternalError``, no detail of it). A request with a
lone surrogate or a NUL character is refused for every route at once
(:func:`~duolabel.web.common.refuse_unstorable_text`).

This module only assembles the app (session cookie, security headers, error handlers)
and includes the routers of :mod:`duolabel.web.pages` and :mod:`duolabel.web.api`, which
both call :mod:`duolabel.web.actions`, and of :mod:`duolabel.web.browse` (the admin item
browser); nothing imports this module back.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from duolabel.errors import AccessError, DuolabelError, ProjectError, SetupError

try:
    import anyio.to_thread
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.datastructures import MutableHeaders
    from starlette.exceptions import HTTPException
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise SetupError(f"the web app needs {exc.name!r}: pip install 'duolabel[web]'") from None

from duolabel.project import Project
from duolabel.web.api import router as api_router
from duolabel.web.browse import router as browse_router
from duolabel.web.common import HERE, Web, maybe_who, refuse_unstorable_text
from duolabel.web.pages import router as pages_router
from duolabel.web.synthetic import router as synthetic_router

__all__ = ["SECRET_FILE", "create_app", "serve"]

SECRET_FILE = ".duolabel-secret"
SECRET_ENV = "DUOLABEL_SECRET"
MIN_SECRET_LENGTH = 16
SESSION_COOKIE = "duolabel_session"
#: What a request that met a bug in duolabel is told (never the exception: it may hold internals).
INTERNAL_ERROR = "the server met an internal error; it is logged there. Try again, or tell the project admin"

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
    web = Web(project)
    threads = project.config.web.threads

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The endpoints' worker threads (a ``def`` endpoint, run_in_threadpool): anyio's
        # limiter belongs to the event loop, so it is set once the loop runs (issue 12).
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPI(
        title="duolabel",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        dependencies=[Depends(refuse_unstorable_text)],
    )
    app.state.web = web
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(project.path),
        session_cookie=SESSION_COOKIE,
        max_age=int(project.config.web.session_hours * 3600),
        same_site="lax",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # A plain ASGI wrapper, not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
    # runs every request through an extra task and memory streams (issue 12, the hot path).
    app.add_middleware(_SecurityHeaders)
    _warm_up()

    # -- errors: one line on a page or one JSON shape, never a traceback ------------

    def error(request: Request, status: int, exc: Exception | str, kind: str | None = None) -> Response:
        message = str(exc).splitlines()[0] if str(exc) else "error"
        if request.url.path.startswith("/api/"):
            kind = kind or (type(exc).__name__ if isinstance(exc, Exception) else "HTTPError")
            return JSONResponse({"error": {"type": kind, "message": message, "status": status}}, status)
        if status == 401:
            return RedirectResponse("/login", status_code=303)
        who = maybe_who(request, web)
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

    @app.exception_handler(Exception)
    def server_error(request: Request, exc: Exception) -> Response:
        # The last resort, a bug in duolabel: Starlette's ServerErrorMiddleware sends this answer
        # and then raises ``exc`` again, so the server still logs the traceback. It runs outside
        # the other middleware, hence the security headers set here.
        try:
            response = error(request, 500, INTERNAL_ERROR, kind="InternalError")
        except Exception:  # rendering the page failed too (say the store is down)
            response = PlainTextResponse(INTERNAL_ERROR, status_code=500)
        response.headers.update({**SECURITY_HEADERS, "cache-control": "no-store"})
        return response

    app.include_router(pages_router)
    app.include_router(api_router)
    app.include_router(browse_router)
    app.include_router(synthetic_router)
    return app


class _SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` (and ``cache-control: no-store`` outside
    ``/static/``) to every HTTP response that does not set them itself, and marking its cookies
    ``Secure`` when the request came over HTTPS: served with TLS, or through a proxy that says
    so (``X-Forwarded-Proto: https``, which uvicorn believes from ``FORWARDED_ALLOW_IPS`` only).
    Starlette's session middleware takes the flag once for all requests; this way one server
    answers both the proxy and plain HTTP on the loopback address, and the session cookie a
    browser got over HTTPS is never sent in clear text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = dict(SECURITY_HEADERS)
        if not scope["path"].startswith("/static/"):
            extra["cache-control"] = "no-store"

        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
                if https:
                    message["headers"] = [_secure(name, value) for name, value in message["headers"]]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """A ``Set-Cookie`` header with the ``Secure`` attribute (other headers as they are).

    >>> _secure(b"set-cookie", b"session=abc; path=/; httponly")
    (b'set-cookie', b'session=abc; path=/; httponly; secure')
    >>> _secure(b"set-cookie", b"session=securexyz; Secure")[1]
    b'session=securexyz; Secure'
    """
    if name.lower() != b"set-cookie":
        return name, value
    attributes = [part.strip().lower() for part in value.split(b";")[1:]]
    return name, value if b"secure" in attributes else value + b"; secure"


def _warm_up() -> None:
    """Import now what the first answers would otherwise import (scipy's intervals for the
    quality rules: most of a second), so no annotator's request pays for it."""
    import scipy.stats  # noqa: F401


PROJECT_ENV = "DUOLABEL_PROJECT"


# An idle connection stays open this long (uvicorn's own default is 5 s). A reverse proxy
# keeps its connections to the app open for longer (nginx: 60 s) and a browser too; when
# the app closes one first, a request sent on it in that instant is lost ("server
# disconnected"; nginx answers 502 to a POST it cannot repeat). Longer than the proxy's,
# the app never closes first. Idle connections cost a few kB each.
KEEP_ALIVE_SECONDS = 75


def serve(
    project: Project,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    keep_alive: int = KEEP_ALIVE_SECONDS,
) -> None:
    """Run the annotation app with uvicorn until interrupted.

    With ``workers`` > 1 uvicorn starts that many processes, each opening the project
    itself (:func:`app_from_environment`); they share the store and the session secret.
    ``keep_alive`` is how many seconds an idle connection stays open (see
    :data:`KEEP_ALIVE_SECONDS`).
    """
    import uvicorn

    if workers < 1:
        raise ProjectError(f"--workers must be at least 1, got {workers}")
    if keep_alive < 1:
        raise ProjectError(f"--keep-alive must be at least 1 second, got {keep_alive}")
    run = partial(uvicorn.run, host=host, port=port, server_header=False, timeout_keep_alive=keep_alive)
    project.store.analyze()  # whatever wrote the queue last, plan next-task on fresh statistics
    if workers == 1:
        run(create_app(project))
        return
    session_secret(project.path)  # made once here, before the workers race for it
    os.environ[PROJECT_ENV] = str(project.path)
    run("duolabel.web.app:app_from_environment", factory=True, workers=workers)


def app_from_environment() -> FastAPI:
    """The app for the project named by ``$DUOLABEL_PROJECT`` (each uvicorn worker's)."""
    folder = os.environ.get(PROJECT_ENV)
    if not folder:
        raise ProjectError(f"{PROJECT_ENV} is not set: it names the project folder to serve")
    return create_app(Project.open(folder))


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

"""The annotation web app: people log in and label the items routed to them.

Server-rendered pages, no JavaScript needed except the keyboard shortcuts. Every POST
form carries a CSRF token that must match the one in the signed session cookie; every
page but /login needs an active annotator, checked against the store on each request
so that suspending someone takes effect at once. Gold labels never reach a template:
the label page gets the item's id and text only.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from duolabel.errors import ProjectError, SetupError

try:
    from fastapi import FastAPI, Form, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates
    from starlette.exceptions import HTTPException
    from starlette.middleware.sessions import SessionMiddleware
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise SetupError(f"the web app needs {exc.name!r}: pip install 'duolabel[web]'") from None

from duolabel.accounts import authenticate
from duolabel.project import Project
from duolabel.queue import answers_given, lease_task, submit_answer
from duolabel.store import Annotator

__all__ = ["SECRET_FILE", "create_app", "serve"]

HERE = Path(__file__).parent
SECRET_FILE = ".duolabel-secret"
SECRET_ENV = "DUOLABEL_SECRET"
MIN_SECRET_LENGTH = 16
SESSION_COOKIE = "duolabel_session"
SESSION_MAX_AGE = 12 * 60 * 60  # one working day; people log in again the next morning
SHORTCUT_KEYS = 9

SECURITY_HEADERS = {
    # No inline script or style anywhere, so a stored-XSS payload in an item cannot run.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class _LoginRequired(Exception):
    """No active annotator in the session: send the browser to /login."""


class _Forbidden(Exception):
    """A request that must not go through (e.g. a bad CSRF token)."""


def create_app(project: Project) -> FastAPI:
    """The annotation app for an open project (served by :func:`serve` or any ASGI server)."""
    store = project.store
    task_config = project.config.task
    label_names = task_config.label_names
    lease_minutes = project.config.quality.lease_minutes
    templates = Jinja2Templates(directory=HERE / "templates")

    app = FastAPI(title="duolabel", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(project.path),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
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

    def render(request: Request, template: str, status_code: int = 200, /, **context: Any) -> Response:
        context["csrf_token"] = _csrf_token(request)
        return templates.TemplateResponse(request, template, context, status_code=status_code)

    def current_annotator(request: Request) -> Annotator:
        annotator_id = request.session.get("annotator_id")
        if not isinstance(annotator_id, int):
            raise _LoginRequired
        with store.read() as session:
            annotator = session.get(Annotator, annotator_id)
        if annotator is None or annotator.status != "active":
            request.session.clear()
            raise _LoginRequired
        return annotator

    # -- errors: one line on a page, never a traceback -------------------------

    def error_page(request: Request, status_code: int, message: str) -> Response:
        return render(request, "error.html", status_code, message=message)

    @app.exception_handler(_LoginRequired)
    def login_required(request: Request, exc: _LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(_Forbidden)
    def forbidden(request: Request, exc: _Forbidden) -> Response:
        return error_page(request, 403, str(exc))

    @app.exception_handler(ProjectError)
    def project_error(request: Request, exc: ProjectError) -> Response:
        return error_page(request, 400, str(exc).splitlines()[0])

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> Response:
        return error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return error_page(request, 400, "the form was incomplete; reload the page and try again")

    # -- pages -----------------------------------------------------------------

    @app.get("/login")
    def login_page(request: Request) -> Response:
        if isinstance(request.session.get("annotator_id"), int):
            return RedirectResponse("/", status_code=303)
        return render(request, "login.html", error=None, name="")

    @app.post("/login")
    def login(
        request: Request,
        csrf_token: Annotated[str, Form()] = "",
        name: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
    ) -> Response:
        _check_csrf(request, csrf_token)
        annotator = authenticate(store, name, password)
        if annotator is None:
            return render(request, "login.html", 401, error="wrong name or password", name=name)
        if annotator.status != "active":
            message = f"your account is {annotator.status}; ask a project admin to activate it"
            return render(request, "login.html", 403, error=message, name=name)
        # A fresh session (and CSRF token) on every login.
        request.session.clear()
        request.session["annotator_id"] = annotator.id
        request.session["csrf"] = secrets.token_urlsafe(32)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
        _check_csrf(request, csrf_token)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/")
    def label_page(request: Request) -> Response:
        annotator = current_annotator(request)
        task = lease_task(store, annotator.id, lease_minutes=lease_minutes)
        return render(
            request,
            "label.html",
            annotator_name=annotator.name,
            answers=answers_given(store, annotator.id),
            instructions=task_config.instructions,
            labels=[
                {
                    "key": key if key <= SHORTCUT_KEYS else None,
                    "name": spec.name,
                    "description": spec.description,
                }
                for key, spec in enumerate(task_config.labels, start=1)
            ],
            # Only what the annotator needs: never the Item itself, which holds the gold label.
            task=None
            if task is None
            else {
                "assignment_id": task.assignment_id,
                "item_id": task.item.id,
                "text": task.item.text,
            },
        )

    @app.post("/answer")
    def answer(
        request: Request,
        csrf_token: Annotated[str, Form()] = "",
        assignment_id: Annotated[str, Form()] = "",
        label: Annotated[str, Form()] = "",
        seconds: Annotated[str, Form()] = "",
    ) -> Response:
        annotator = current_annotator(request)
        _check_csrf(request, csrf_token)
        try:
            assignment = int(assignment_id)
        except ValueError:
            raise ProjectError(f"assignment_id must be a number, got {assignment_id!r}") from None
        submit_answer(store, annotator.id, assignment, label, labels=label_names, seconds=_seconds(seconds))
        return RedirectResponse("/", status_code=303)

    return app


def serve(project: Project, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the annotation app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(project), host=host, port=port, server_header=False)


# -- helpers -------------------------------------------------------------------


def _csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def _check_csrf(request: Request, submitted: str) -> None:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not secrets.compare_digest(expected.encode(), submitted.encode()):
        raise _Forbidden(
            "this form has expired or did not come from this site; reload the page and try again"
        )


def _seconds(value: str) -> float | None:
    """Seconds the page was open, as the browser measured them; absent or junk means unknown."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


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

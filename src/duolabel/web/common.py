"""What every route of the web app shares: who is asking, role checks, CSRF, sessions, rendering.

A browser holds one signed, HttpOnly, SameSite=Lax cookie. Before login it carries only
a CSRF token for the login form; at login it is replaced by a fresh server-side session
id (:func:`begin_session`, over :func:`duolabel.people.accounts.start_session`), so a
session id planted before login is worthless, and logging out or being suspended ends the
session on the server. What the routes do is in :mod:`duolabel.web.actions`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from duolabel.core.tasks import task_type
from duolabel.errors import AccessError, ProjectError, shown
from duolabel.people.accounts import end_session, session_of, start_session
from duolabel.store import Annotator
from duolabel.web import actions

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = [
    "ADMIN",
    "ANNOTATOR",
    "ANYONE",
    "CSRF_HEADER",
    "EXAM_RESULT",
    "EXPERT",
    "HERE",
    "ONBOARDING",
    "Access",
    "Web",
    "Who",
    "anonymous_csrf",
    "begin_session",
    "client_address",
    "finish_session",
    "log_in",
    "maybe_who",
    "parse_id",
    "posted",
    "refuse_unstorable_text",
    "signed_in",
    "web_of",
]

HERE = Path(__file__).parent
CSRF_HEADER = "x-csrf-token"

#: The roles and the account statuses that may use a route.
Access = tuple[tuple[str, ...], tuple[str, ...]]

# Which roles and account statuses may use each group of routes; every route names one.
ANNOTATOR = (("annotator",), ("active",))
ONBOARDING = (("annotator",), ("onboarding",))
EXPERT = (("expert", "admin"), ("active",))
ADMIN = (("admin",), ("active",))
ANYONE = (("annotator", "expert", "admin"), ("active", "onboarding"))
# A declined annotator may still read the feedback of their last exam attempt.
EXAM_RESULT = (("annotator",), ("active", "onboarding", "declined"))

_FORBIDDEN = "this page is not for your account"


@dataclass(frozen=True)
class Who:
    """The logged-in account of a request and its session's CSRF token."""

    annotator: Annotator
    csrf: str

    @property
    def id(self) -> int:
        """The account's id."""
        return self.annotator.id


class Web:
    """The app's shared state: the project, its settings, its task type and the templates.

    ``task`` picks the answer widget the labeling pages include; ``project`` is what
    :mod:`duolabel.web.actions` are given as their context.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self.store = project.store
        self.config = project.config
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.task = task_type(self.config.task.type)

    # -- who is asking ------------------------------------------------------------

    def who(self, request: Request, access: Access) -> Who:
        """The logged-in account, if its role and status may use this route; else ``AccessError``."""
        token = request.session.get("sid")
        found = session_of(self.store, token) if isinstance(token, str) else None
        if found is None:
            request.session.pop("sid", None)  # keeps the login form's CSRF token
            raise AccessError("log in first", status=401)
        annotator, csrf = found
        roles, statuses = access
        if annotator.status not in ("active", "onboarding") and annotator.status not in statuses:
            request.session.pop("sid", None)
            raise AccessError(f"your account is {annotator.status}; ask a project admin", status=401)
        if annotator.role not in roles:
            raise AccessError(_FORBIDDEN, status=403)
        if annotator.status not in statuses:
            raise AccessError(f"{_FORBIDDEN} while your account is {annotator.status}", status=403)
        return Who(annotator, csrf)

    def check_csrf(self, request: Request, submitted: str | None, who: Who | None = None) -> None:
        """Refuse a POST whose token is not the session's (or, on the public forms, the
        browser's pre-login token)."""
        if who is None:
            token = request.session.get("sid")
            found = session_of(self.store, token) if isinstance(token, str) else None
            expected = [request.session.get("csrf"), found[1] if found else None]
        else:
            expected = [who.csrf]
        valid = [e for e in expected if isinstance(e, str) and e]
        if not submitted or not any(secrets.compare_digest(e.encode(), submitted.encode()) for e in valid):
            raise AccessError(
                "this form has expired or did not come from this site; reload the page and try again"
            )

    # -- pages --------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        /,
        who: Who | None = None,
        **context: Any,
    ) -> Response:
        """A template with the CSRF token, the account, the task's instructions and its answer
        widget filled in."""
        context["csrf_token"] = who.csrf if who is not None else anonymous_csrf(request)
        context["me"] = who.annotator if who is not None else None
        context.setdefault("instructions", self.config.task.instructions)
        context.setdefault("widget", self.task.widget)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)


def anonymous_csrf(request: Request) -> str:
    """The browser's pre-login CSRF token (for the login and invitation forms), made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def web_of(request: Request) -> Web:
    """The app's shared state, for a route."""
    return request.app.state.web


def signed_in(request: Request, access: Access) -> tuple[Web, Who]:
    """The app and the logged-in account of a request, if its role and status may use the
    route (:meth:`Web.who`)."""
    web = web_of(request)
    return web, web.who(request, access)


def posted(request: Request, access: Access, csrf_token: str | None) -> tuple[Web, Who]:
    """The app and the account that posts, if its role may and ``csrf_token`` (the form's
    field or the API's header) is its session's. The role is checked first."""
    web, who = signed_in(request, access)
    web.check_csrf(request, csrf_token, who)
    return web, who


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def refuse_unstorable_text(request: Request) -> None:
    """Every route's first dependency: ``ProjectError`` (a 400 in the usual error shape) for a
    request holding text that nothing downstream can store or encode: a lone surrogate
    (``"\\ud800"`` in JSON), which no database, password hash or JSON answer can encode, or a
    NUL character (``"\\u0000"`` in JSON, ``%00`` in a form or a query string), which
    PostgreSQL's text refuses (a comment holding one was a 500 there).

    Checked once here for all routes, before their role checks (it tells nothing about what a
    request should hold). Forms and query strings cannot carry a surrogate: Starlette decodes
    them as UTF-8 with replacement characters.
    """
    if "%00" in request.url.query:
        for key, value in request.query_params.multi_items():
            _refuse_nul(key, value)
    content_type = request.headers.get("content-type", "").lower()
    if request.method not in _BODY_METHODS:
        return
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        try:
            raw = await request.body()  # kept by the request for a route that reads the bytes
        except RuntimeError:  # a page's route read its form fields first: the form is kept
            raw = b"%00"
        if b"%00" in raw or b"\x00" in raw:
            for field, entry in (await request.form()).multi_items():
                _refuse_nul(field, entry if isinstance(entry, str) else "")
        return
    if content_type and "json" not in content_type:
        return
    raw = await request.body()  # kept by the request: the route reads the same bytes
    # Only a \u escape or bytes that are not plain ASCII text (UTF-8's ED A0-BF for a surrogate,
    # or a UTF-16 or UTF-32 body, with its NUL bytes: json.loads reads those too) can hold one,
    # so the usual body is let through after three quick scans.
    if raw.isascii() and b"\\u" not in raw and b"\x00" not in raw:
        return
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return  # not JSON: the route refuses it in its own words
    found = _unstorable(data)
    if found is None:
        return
    where, char = found
    if char == "\x00":
        _refuse_nul(where, char, quoted=True)
    raise ProjectError(
        f"the request's JSON holds a lone surrogate (U+{ord(char):04X}) in {where}; send text as "
        "valid Unicode, a character beyond U+FFFF as a surrogate pair (\\ud83d\\ude00)"
    )


def _refuse_nul(where: str, value: str, *, quoted: bool = False) -> None:
    if "\x00" in value or "\x00" in where:
        name = where if quoted else shown(where)
        raise ProjectError(f"the request holds a NUL character (U+0000) in {name}; text cannot hold one")


def _unstorable(data: Any) -> tuple[str, str] | None:
    """Where the first lone surrogate or NUL character of a JSON value is (``'name'``, ``the
    body``) and which one.

    Examples
    --------
    >>> _unstorable({"name": "ok", "tags": ["\\U0001f600", "a\\udfff"]})
    ("'tags'", '\\udfff')
    >>> _unstorable({"comment": "a\\x00b"})
    ("'comment'", '\\x00')
    """
    stack: list[tuple[str, Any]] = [("the body", data)]  # iterative: a deep body cannot recurse
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, inner in value.items():
                stack.append((shown(key), key))
                stack.append((shown(key) if where == "the body" else where, inner))
        elif isinstance(value, list):
            stack.extend((where, inner) for inner in reversed(value))
        elif isinstance(value, str):
            char = next((c for c in value if "\ud800" <= c <= "\udfff" or c == "\x00"), None)
            if char is not None:
                return where, char
    return None


def parse_id(value: Any, what: str = "assignment_id") -> int:
    """A form field that must hold a whole number; ``ProjectError`` naming the field otherwise."""
    try:
        return int(str(value))
    except ValueError:
        raise ProjectError(f"{what} must be a number, got {shown(value)}") from None


# -- sessions ----------------------------------------------------------------------------


def begin_session(request: Request, web: Web, annotator_id: int) -> str:
    """Log a browser in with a brand-new session id (never one it brought); returns the CSRF token."""
    old = request.session.get("sid")
    if isinstance(old, str):
        end_session(web.store, old)
    request.session.clear()
    login = start_session(web.store, annotator_id, hours=web.config.web.session_hours)
    request.session["sid"] = login.token
    return login.csrf


def log_in(request: Request, web: Web, name: str, password: str) -> tuple[Annotator, str]:
    """Check a name and password (throttled by the peer's address too) and log the browser in
    with a new session; returns the account and its CSRF token. ``AccessError`` if refused."""
    annotator = actions.login(web.project, name, password, address=client_address(request))
    return annotator, begin_session(request, web, annotator.id)


def finish_session(request: Request, web: Web) -> None:
    """Log a browser out: its session ends on the server and its cookie is emptied."""
    token = request.session.get("sid")
    if isinstance(token, str):
        end_session(web.store, token)
    request.session.clear()


def maybe_who(request: Request, web: Web) -> Who | None:
    """The logged-in account of any role and usable status, or ``None``."""
    try:
        return web.who(request, ANYONE)
    except AccessError:
        return None


def client_address(request: Request) -> str:
    """The peer's address, which login throttling counts failures by."""
    return request.client.host if request.client is not None else "unknown"

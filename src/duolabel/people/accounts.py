"""Accounts: argon2 password hashes, one-time invitations, login throttling, sessions.

Passwords are stored only as argon2id hashes, and must pass :func:`check_password` (a
length and a strength estimate). Names are NFKC-normalised, free of control, invisible and
blank-looking characters, written in one script (:func:`check_name`), and unique
case-insensitively (``annotators.name_key``). An invitation is a random token of which the
store keeps only the SHA-256, so a copy of the database cannot be used to sign up; the same
goes for session ids. Login throttling is described at
:func:`log_in`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import regex
from fontTools import unicodedata as ucd  # Unicode's Scripts and ScriptExtensions, kept current
from sqlalchemy import Select, and_, bindparam, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from duolabel.errors import AccessError, ProjectError, SetupError, shown
from duolabel.store import Annotator, Invitation, LoginFailure, Store, WebSession
from duolabel.store.tables import name_key, utcnow

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from duolabel.config import WebConfig

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "STATUSES",
    "LoginSession",
    "accept_invitation",
    "add_annotator",
    "authenticate",
    "check_name",
    "check_password",
    "create_invitation",
    "end_session",
    "invitation_role",
    "log_in",
    "password_hasher",
    "session_of",
    "set_status",
    "start_session",
]

ROLES = ("annotator", "expert", "admin")
STATUSES = ("onboarding", "active", "suspended", "declined")
MIN_PASSWORD_LENGTH = 10
MIN_STRENGTH = 3  # zxcvbn's scale, 0-4: 3 is "safely unguessable" for an online attack
MAX_NAME_LENGTH = 100  # the width of annotators.name


@cache
def password_hasher() -> PasswordHasher:
    """The one argon2id hasher of the process (argon2-cffi's defaults); ``SetupError`` without it.

    Made once and kept: tools that create many accounts at once (the load benchmark) hash
    with it directly.
    """
    try:
        from argon2 import PasswordHasher
    except ModuleNotFoundError:
        raise SetupError("passwords need argon2-cffi: pip install 'duolabel[web]'") from None
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return password_hasher().hash(secrets.token_urlsafe(16))


def add_annotator(
    store: Store, name: str, password: str, *, role: str = "annotator", status: str = "active"
) -> Annotator:
    """Create an account (active unless ``status`` says otherwise, e.g. ``"onboarding"``).

    Raises ``ProjectError`` for a taken or empty name, an unknown role or a password
    shorter than ``MIN_PASSWORD_LENGTH`` characters.
    """
    annotator = _new_account(name, password, role=role, status=status)
    taken = ProjectError(f"annotator '{annotator.name}' already exists; choose another name")
    try:
        with store.write() as session:
            if (
                session.scalar(select(Annotator.id).where(Annotator.name_key == annotator.name_key))
                is not None
            ):
                raise taken
            session.add(annotator)
    except IntegrityError:  # another process added the same name in between
        raise taken from None
    return annotator


def _new_account(name: str, password: str, *, role: str, status: str) -> Annotator:
    name = check_name(name)
    if role not in ROLES:
        raise ProjectError(f"role {shown(role)} is not one of {', '.join(map(repr, ROLES))}")
    check_password(password, name)
    if status not in STATUSES:
        raise ProjectError(f"status {shown(status)} is not one of {', '.join(map(repr, STATUSES))}")
    password_hash = password_hasher().hash(password)
    return Annotator(
        name=name,
        name_key=name_key(name),
        role=role,
        password_hash=password_hash,
        status=status,
        skills={},
        flags=[],
    )


# Unicode categories no name may hold: controls (Cc), format characters such as zero-width
# spaces, joiners and bidi overrides (Cf), unassigned, private-use and surrogate code points.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"})
# Besides those, Unicode's default-ignorable code points (variation selectors, the combining
# grapheme joiner, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0...: drawn as nothing) and
# the blank Braille pattern, which is not default-ignorable but is drawn blank. The `regex`
# module's tables follow the current Unicode release; Python's unicodedata has no such property.
_INVISIBLE = regex.compile(r"[\p{Default_Ignorable_Code_Point}\u2800]")
# The scripts that, with Latin, make one writing system (UTS #39's "highly restrictive" level):
# Japanese mixes Han, Hiragana and Katakana, Korean Han and Hangul, Chinese Han and Bopomofo.
_WRITING_SYSTEMS = {"Hani": {"Jpan", "Kore", "Hanb"}, "Hira": {"Jpan"}, "Kana": {"Jpan"}}
_WRITING_SYSTEMS |= {"Hang": {"Kore"}, "Bopo": {"Hanb"}}
_CJK = {"Jpan", "Kore", "Hanb"}
_ANY_SCRIPT = {"Zyyy", "Zinh"}  # Common (digits, punctuation) and Inherited (combining marks)


def check_name(name: str) -> str:
    """An account name as stored: NFKC-normalised and stripped; ``ProjectError`` for an empty
    or too long name, one with a control, invisible or blank-looking character, or one that
    mixes scripts (a Cyrillic "а" among Latin letters): two names that look alike must not be
    two accounts.

    Examples
    --------
    >>> check_name(" Ｚoë "), check_name("山田ハナコ")
    ('Zoë', '山田ハナコ')
    >>> check_name("\u0430lice")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    duolabel.errors.ProjectError: annotator name 'аlice' mixes Cyrillic and Latin letters: U+0430 ...
    """
    given = name
    name = unicodedata.normalize("NFKC", name).strip()
    if not name:
        raise ProjectError("annotator name is empty; give a name such as 'alice'")
    if len(name) > MAX_NAME_LENGTH:
        raise ProjectError(f"annotator name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    # The name as typed first, so the error names the character the person used (NFKC makes
    # U+3164 HANGUL FILLER into U+1160).
    bad = [c for c in given + name if unicodedata.category(c) in _BAD_CATEGORIES or _INVISIBLE.match(c)]
    if bad:
        raise ProjectError(
            f"annotator name {name!r} holds an invisible or control character ({_code_point(bad[0])}); "
            "use letters, digits, spaces and punctuation"
        )
    _check_one_script(name)
    return name


def _code_point(char: str) -> str:
    """``U+0430 CYRILLIC SMALL LETTER A``: a character as an error names it."""
    label = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {label}" if label else f"U+{ord(char):04X}"


def _check_one_script(name: str) -> None:
    """``ProjectError`` unless ``name`` is written in one script, or in Latin with one of the
    CJK writing systems (Unicode's Script_Extensions, as UTS #39 resolves them)."""
    scripts = [
        (char, extensions | set().union(*(_WRITING_SYSTEMS.get(s, set()) for s in extensions)))
        for char in name
        if not (extensions := set(ucd.script_extension(char))) & _ANY_SCRIPT
    ]
    if not scripts or set.intersection(*(s for _, s in scripts)):
        return
    cjk = [s for _, s in scripts if "Latn" not in s]
    if cjk and set.intersection(_CJK, *cjk):
        return  # Latin with one CJK writing system ("Tanaka太郎")
    # The script most letters are in; the error names the first letter outside it.
    main = Counter(s for _, ext in scripts for s in ext - _CJK).most_common(1)[0][0]
    odd, odd_scripts = next((char, ext) for char, ext in scripts if main not in ext)
    odd_script = ucd.script(odd) if ucd.script(odd) in odd_scripts else min(odd_scripts - _CJK)
    main_name, odd_name = ucd.script_name(main), ucd.script_name(odd_script)
    raise ProjectError(
        f"annotator name {name!r} mixes {odd_name} and {main_name} letters: {_code_point(odd)} is "
        f"{odd_name}; use {main_name} letters only (one script for the whole name), so that it "
        "cannot pass for another account's name"
    )


# The fallback rule when zxcvbn is not installed: the most common password stems, which a
# guesser tries first with digits and symbols around them.
_COMMON = frozenset(
    {
        "password",
        "passwort",
        "motdepasse",
        "contraseña",
        "qwerty",
        "qwertz",
        "azerty",
        "asdfgh",
        "zxcvbn",
        "letmein",
        "welcome",
        "admin",
        "administrator",
        "login",
        "iloveyou",
        "monkey",
        "dragon",
        "master",
        "sunshine",
        "princess",
        "football",
        "baseball",
        "shadow",
        "superman",
        "trustno1",
        "abc",
        "abcdef",
        "abcdefgh",
        "secret",
        "changeme",
        "default",
        "duolabel",
    }
)


def _strength(password: str, name: str) -> int:
    """A strength estimate on zxcvbn's 0-4 scale.

    With the ``zxcvbn`` package installed, its estimate (with the name as a known word).
    Without it, a rule of our own: 0 for a common password stem with digits or symbols around
    it, for fewer than 5 different characters, or for a run of consecutive characters
    ("123456789a", "abcdefghij"); else ``MIN_STRENGTH``.
    """
    try:
        from zxcvbn import zxcvbn
    except ModuleNotFoundError:
        stem = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", password.casefold())
        steps = {ord(b) - ord(a) for a, b in zip(password, password[1:], strict=False)}
        if stem in _COMMON or len(set(password)) < 5 or len(steps) <= 2 and steps <= {-1, 0, 1}:
            return 0
        return MIN_STRENGTH
    return int(zxcvbn(password[:100], user_inputs=[name])["score"])


def check_password(password: str, name: str) -> None:
    """``ProjectError`` unless ``password`` has ``MIN_PASSWORD_LENGTH`` characters, does not
    hold the account name, and is estimated hard to guess (:func:`_strength` at least
    ``MIN_STRENGTH``)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ProjectError(
            f"password for '{name}' is {len(password)} characters long; use at least {MIN_PASSWORD_LENGTH}"
        )
    key = name_key(name)
    if len(key) >= 3 and key in name_key(password):
        raise ProjectError(f"password for '{name}' contains the name; choose one that does not")
    if _strength(password, name) < MIN_STRENGTH:
        raise ProjectError(
            f"password for '{name}' is too easy to guess; use a few unrelated words, "
            "e.g. 'tidy harbour lantern'"
        )


def authenticate(store: Store, name: str, password: str) -> Annotator | None:
    """The annotator whose name and password match, whatever their status; else ``None``.

    The caller decides what a suspended or onboarding account may do.
    """
    with store.read() as session:
        annotator = session.scalar(select(Annotator).where(Annotator.name_key == name_key(name)))
    if annotator is None:
        # Hash anyway, so a wrong name takes as long as a wrong password and the
        # response time does not tell which names exist.
        _verify(_dummy_hash(), password)
        return None
    if not _verify(annotator.password_hash, password):
        return None
    if password_hasher().check_needs_rehash(annotator.password_hash):
        with store.write() as session:
            row = session.get(Annotator, annotator.id)
            if row is not None:
                row.password_hash = annotator.password_hash = password_hasher().hash(password)
    return annotator


def _verify(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return password_hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def set_status(store: Store, name: str, status: str) -> Annotator:
    """Change an account's status (an admin suspends or reactivates someone); a change ends
    their sessions."""
    if status not in STATUSES:
        raise ProjectError(f"status {shown(status)} is not one of {', '.join(map(repr, STATUSES))}")
    with store.write() as session:
        annotator = session.scalar(select(Annotator).where(Annotator.name_key == name_key(name)))
        if annotator is None:
            raise ProjectError(f"there is no account named {shown(name)}")
        if annotator.status != status:
            # Every change ends the sessions, reactivation included: a suspension by the
            # control rule or an exam's decline only changes the status (the person then sees
            # why), and a cookie copied before it must not work again once the account is active.
            session.execute(delete(WebSession).where(WebSession.annotator_id == annotator.id))
        annotator.status = status
    return annotator


# -- invitations -----------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_Expiring = TypeVar("_Expiring", Invitation, WebSession)


def _expiring(table: type[_Expiring], hours: float, **columns: Any) -> _Expiring:
    """A new row of a table of expiring tokens (invitations, web sessions), created now and
    valid for ``hours``."""
    now = utcnow()
    return table(created_at=now, expires_at=now + timedelta(hours=hours), **columns)


def create_invitation(
    store: Store, *, role: str = "annotator", hours: float = 72.0, created_by: int | None = None
) -> str:
    """A one-time invitation token for an account with ``role``, valid for ``hours``.

    Only the token's SHA-256 is stored; the token itself is shown once (in a link).

    Examples
    --------
    >>> import tempfile, duolabel
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> token = create_invitation(project.store, role="annotator")
    >>> invitation_role(project.store, token)
    'annotator'
    >>> carol = accept_invitation(project.store, token, "carol", "a long password", exam=True)
    >>> carol.role, carol.status
    ('annotator', 'onboarding')
    >>> accept_invitation(project.store, token, "dave", "a long password", exam=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    duolabel.errors.AccessError: this invitation link is unknown, used or expired; ask ...
    >>> project.close()
    """
    if role not in ROLES:
        raise ProjectError(f"role {shown(role)} is not one of {', '.join(map(repr, ROLES))}")
    if not hours > 0:
        raise ProjectError(f"an invitation must be valid for a positive number of hours, got {hours}")
    token = secrets.token_urlsafe(32)
    invitation = _expiring(Invitation, hours, token_hash=_digest(token), role=role, created_by=created_by)
    with store.write() as session:
        session.add(invitation)
    return token


_BAD_INVITATION = "this invitation link is unknown, used or expired; ask a project admin for a new one"


def invitation_role(store: Store, token: str) -> str:
    """The role a still-valid invitation grants; ``AccessError`` (404) for any other token."""
    with store.read() as session:
        invitation = session.get(Invitation, _digest(token))
        if invitation is None or invitation.used_at is not None or invitation.expires_at < utcnow():
            raise AccessError(_BAD_INVITATION, status=404)
        return invitation.role


def accept_invitation(store: Store, token: str, name: str, password: str, *, exam: bool) -> Annotator:
    """Create the account an invitation grants and use the invitation up, in one transaction.

    An annotator starts ``onboarding`` (the exam) when ``exam`` is true; experts and admins
    start active.
    """
    role = invitation_role(store, token)
    status = "onboarding" if exam and role == "annotator" else "active"
    annotator = _new_account(name, password, role=role, status=status)
    taken = ProjectError(f"annotator '{annotator.name}' already exists; choose another name")
    try:
        with store.write() as session:
            invitation = session.get(Invitation, _digest(token), with_for_update=True)
            if invitation is None or invitation.used_at is not None or invitation.expires_at < utcnow():
                raise AccessError(_BAD_INVITATION, status=404)
            if (
                session.scalar(select(Annotator.id).where(Annotator.name_key == annotator.name_key))
                is not None
            ):
                raise taken
            session.add(annotator)
            session.flush()
            invitation.used_at = utcnow()
            invitation.annotator_id = annotator.id
    except IntegrityError:
        raise taken from None
    return annotator


# -- logging in ------------------------------------------------------------------


@dataclass(frozen=True)
class LoginSession:
    """A logged-in browser: the secret ``token`` for the cookie and its CSRF token."""

    token: str
    csrf: str
    annotator_id: int
    expires_at: datetime


def log_in(store: Store, name: str, password: str, *, address: str, web: WebConfig) -> Annotator:
    """Check a login, throttled per (name, address) pair and per address.

    Each try is counted *before* the password is checked, in one write transaction that
    holds the counters' row locks, so concurrent tries cannot all slip under the limit
    (issue 12: 40 concurrent guesses got 22 checks). A successful login takes its try back.
    Past ``login_max_failures`` for the pair, each further try waits 1 s, then twice as long
    after each failure (at most ``login_window_minutes``), instead of a hard lock: the owner
    on another address is never held up by someone else's guesses. An address has its own,
    higher limit (``login_max_failures_per_address``) on guesses at many names. Counters
    older than ``login_window_minutes`` start afresh.

    Raises ``AccessError``: 429 while a try must wait (the password is not checked), 401 for
    a wrong name or password, 403 for a suspended or declined account.
    """
    key = name_key(name)[: 3 * MAX_NAME_LENGTH]
    address = address[:64]
    limits = {"account": web.login_max_failures, "address": web.login_max_failures_per_address}
    with store.write() as session:
        now = utcnow()
        counters = [_counter(session, "account", key, address), _counter(session, "address", "", address)]
        waits = [
            c.blocked_until - now for c in counters if c.blocked_until is not None and c.blocked_until > now
        ]
        if waits:
            seconds = max(1, round(max(waits).total_seconds()))
            # Raising rolls the transaction back: a refused try is not counted.
            raise AccessError(f"too many failed logins; try again in {seconds} seconds", status=429)
        for counter in counters:
            _count_try(counter, limits[counter.scope], now, web.login_window_minutes)
    annotator = authenticate(store, name, password)
    if annotator is None:
        with store.write() as session:
            now = utcnow()
            for counter in (
                _counter(session, "account", key, address),
                _counter(session, "address", "", address),
            ):
                # The wait runs from this answer, not from before the (slow) password check.
                _block(counter, limits[counter.scope], now, web.login_window_minutes)
            stale = now - timedelta(minutes=web.login_window_minutes)
            session.execute(
                delete(LoginFailure).where(
                    LoginFailure.last_at < stale,
                    or_(LoginFailure.blocked_until.is_(None), LoginFailure.blocked_until < stale),
                )
            )
        raise AccessError("wrong name or password", status=401)
    with store.write() as session:  # not a failure after all: take the try back
        session.execute(
            delete(LoginFailure).where(
                LoginFailure.scope == "account", LoginFailure.name == key, LoginFailure.address == address
            )
        )
        counter = _counter(session, "address", "", address)
        counter.failures = max(0, counter.failures - 1)
        if counter.failures < limits["address"]:
            counter.blocked_until = None
    if annotator.status not in ("active", "onboarding"):
        raise AccessError(f"your account is {annotator.status}; ask a project admin", status=403)
    return annotator


def _counter(session: Session, scope: str, name: str, address: str) -> LoginFailure:
    """The counter row of ``scope`` for this name and address, created if need be, locked."""
    where = and_(LoginFailure.scope == scope, LoginFailure.name == name, LoginFailure.address == address)
    row = session.scalar(select(LoginFailure).where(where).with_for_update())
    if row is not None:
        return row
    try:
        # A savepoint: on PostgreSQL a concurrent first try may insert the same row; its
        # unique key makes this insert wait for it and fail, and the row is then read locked.
        with session.begin_nested():
            session.add(LoginFailure(scope=scope, name=name, address=address, failures=0, last_at=utcnow()))
    except IntegrityError:
        pass
    row = session.scalar(select(LoginFailure).where(where).with_for_update())
    assert row is not None
    return row


def _count_try(counter: LoginFailure, limit: int, now: datetime, window_minutes: float) -> None:
    """Count one try; past ``limit``, the next one waits 1 s, 2 s, 4 s, ... (at most the window)."""
    if counter.last_at < now - timedelta(minutes=window_minutes):
        counter.failures = 0
    counter.failures += 1
    counter.last_at = now
    _block(counter, limit, now, window_minutes)


def _block(counter: LoginFailure, limit: int, now: datetime, window_minutes: float) -> None:
    if counter.failures >= limit:
        delay = min(2.0 ** min(counter.failures - limit, 30), window_minutes * 60)
        counter.blocked_until = now + timedelta(seconds=delay)


def start_session(store: Store, annotator_id: int, *, hours: float) -> LoginSession:
    """A new session (a fresh random id, never one the browser brought) for a logged-in account."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    login = _expiring(WebSession, hours, id_hash=_digest(token), annotator_id=annotator_id, csrf=csrf)
    now, expires = login.created_at, login.expires_at
    with store.write() as session:
        session.execute(delete(WebSession).where(WebSession.expires_at < now))
        session.add(login)
    return LoginSession(token, csrf, annotator_id, expires)


def session_of(store: Store, token: str) -> tuple[Annotator, str] | None:
    """The account and CSRF token of an unexpired session; ``None`` for anything else."""
    if not token:
        return None
    # One statement, so no transaction of its own (Store.glance): every web request checks.
    with store.glance() as session:
        found = session.execute(_session_query(), {"id_hash": _digest(token), "now": utcnow()}).first()
    return None if found is None else (found[0], found[1])


@cache
def _session_query() -> Select[Annotator, str]:
    # Built once: every request of the web app checks its session (issue 12, the hot path).
    return (
        select(Annotator, WebSession.csrf)
        .join(WebSession, WebSession.annotator_id == Annotator.id)
        .where(WebSession.id_hash == bindparam("id_hash"), WebSession.expires_at >= bindparam("now"))
    )


def end_session(store: Store, token: str) -> None:
    """Log a session out: its id is no longer accepted, even if replayed."""
    with store.write() as session:
        session.execute(delete(WebSession).where(WebSession.id_hash == _digest(token)))

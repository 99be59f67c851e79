"""Annotator accounts: creation with an argon2 password hash, and login checks."""

from __future__ import annotations

import secrets
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from duolabel.errors import ProjectError, SetupError
from duolabel.store import Annotator, Store

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["MIN_PASSWORD_LENGTH", "ROLES", "add_annotator", "authenticate"]

ROLES = ("annotator", "expert", "admin")
MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = 100  # the width of annotators.name


@cache
def _hasher() -> PasswordHasher:
    try:
        from argon2 import PasswordHasher
    except ModuleNotFoundError:
        raise SetupError("passwords need argon2-cffi: pip install 'duolabel[web]'") from None
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def add_annotator(store: Store, name: str, password: str, *, role: str = "annotator") -> Annotator:
    """Create an active annotator account.

    Raises ``ProjectError`` for a taken or empty name, an unknown role or a password
    shorter than ``MIN_PASSWORD_LENGTH`` characters.
    """
    name = name.strip()
    if not name:
        raise ProjectError("annotator name is empty; give a name such as 'alice'")
    if len(name) > MAX_NAME_LENGTH:
        raise ProjectError(f"annotator name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    if role not in ROLES:
        raise ProjectError(f"role {role!r} is not one of {', '.join(map(repr, ROLES))}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ProjectError(
            f"password for '{name}' is {len(password)} characters long; use at least {MIN_PASSWORD_LENGTH}"
        )
    password_hash = _hasher().hash(password)
    annotator = Annotator(name=name, role=role, password_hash=password_hash, status="active")
    taken = ProjectError(f"annotator '{name}' already exists; choose another name")
    try:
        with store.write() as session:
            if session.scalar(select(Annotator.id).where(Annotator.name == name)) is not None:
                raise taken
            session.add(annotator)
    except IntegrityError:  # another process added the same name in between
        raise taken from None
    return annotator


def authenticate(store: Store, name: str, password: str) -> Annotator | None:
    """The annotator whose name and password match, whatever their status; else ``None``.

    The caller decides what a suspended or onboarding account may do.
    """
    with store.read() as session:
        annotator = session.scalar(select(Annotator).where(Annotator.name == name.strip()))
    if annotator is None:
        # Hash anyway, so a wrong name takes as long as a wrong password and the
        # response time does not tell which names exist.
        _verify(_dummy_hash(), password)
        return None
    if not _verify(annotator.password_hash, password):
        return None
    if _hasher().check_needs_rehash(annotator.password_hash):
        with store.write() as session:
            row = session.get(Annotator, annotator.id)
            if row is not None:
                row.password_hash = annotator.password_hash = _hasher().hash(password)
    return annotator


def _verify(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False

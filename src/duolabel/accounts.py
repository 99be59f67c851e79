"""Accounts: moved to :mod:`duolabel.people.accounts`."""

# temporary shim: removed when the layers are merged

from __future__ import annotations

from duolabel.people.accounts import (
    MIN_PASSWORD_LENGTH,
    ROLES,
    STATUSES,
    LoginSession,
    accept_invitation,
    add_annotator,
    authenticate,
    create_invitation,
    end_session,
    invitation_role,
    log_in,
    password_hasher,
    session_of,
    set_status,
    start_session,
)
from duolabel.people.accounts import password_hasher as _hasher  # benchmarks/load.py

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "STATUSES",
    "LoginSession",
    "_hasher",
    "accept_invitation",
    "add_annotator",
    "authenticate",
    "create_invitation",
    "end_session",
    "invitation_role",
    "log_in",
    "password_hasher",
    "session_of",
    "set_status",
    "start_session",
]

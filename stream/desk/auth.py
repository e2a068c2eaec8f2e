"""Users, passwords, login sessions, CSRF tokens and the audit trail.

* Passwords: argon2id (argon2-cffi's defaults, RFC 9106's low-memory profile), rehashed on
  login when the parameters change.
* Sessions live in the database, not in a signed cookie: the cookie carries a random token, the
  table only its SHA-256, and a session ends when it expires, on sign-out, or at once when its
  user is disabled (every request re-reads the user).
* CSRF: each session has its own random token, required in every form post; the login form,
  posted before any session exists, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stream.desk.database import utcnow
from stream.desk.errors import UserError
from stream.desk.tables import AuditEntry, LoginSession, Role, User

_HASHER = PasswordHasher()
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 12
# A hash to verify against when the user does not exist, so a wrong name costs as long as a
# wrong password (no user enumeration by timing).
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def check_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise UserError(
            "a user name is 2-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return username


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(
            f"unknown role {role!r}; use one of {', '.join(r.value for r in Role)}"
        ) from None


def audit(
    db: Session,
    user: User | None,
    action: str,
    target: str | None = None,
    detail: str | None = None,
) -> None:
    """One line of the audit trail, in the caller's transaction (it commits with the action)."""
    db.add(
        AuditEntry(
            at=utcnow(),
            user_id=user.id if user else None,
            username=user.username if user else None,
            action=action,
            target=target,
            detail=detail,
        )
    )


def add_user(db: Session, username: str, password: str, role: str, by: User | None = None) -> User:
    check_username(username)
    chosen = parse_role(role)
    if db.scalar(select(User).where(User.username == username)) is not None:
        raise UserError(f"user {username!r} exists already")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=chosen.value,
        active=True,
        created_at=utcnow(),
    )
    db.add(user)
    db.flush()
    audit(db, by, "user.add", f"user:{username}", f"role {chosen.value}")
    return user


def set_active(db: Session, username: str, active: bool, by: User | None = None) -> User:
    """Disable (or re-enable) a user; disabling also ends every session of theirs."""
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username!r}")
    user.active = active
    if not active:
        db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    audit(db, by, "user.enable" if active else "user.disable", f"user:{username}")
    return user


def authenticate(db: Session, username: str, password: str) -> User | None:
    """The active user with this name and password, else None (same work either way)."""
    user = db.scalar(select(User).where(User.username == username))
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


@dataclass(frozen=True)
class SignedIn:
    user: User
    csrf_token: str
    expires_at: datetime

    @property
    def role(self) -> Role:
        return Role(self.user.role)

    def may(self, *roles: Role) -> bool:
        return self.role in roles


def start_session(db: Session, user: User, lifetime: timedelta) -> str:
    """A new session for ``user``; returns the cookie's token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.add(
        LoginSession(
            token_hash=_token_hash(token),
            user_id=user.id,
            csrf_token=new_csrf_token(),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    # Expired sessions of anyone are swept here: sign-ins are rare enough to carry it.
    db.execute(delete(LoginSession).where(LoginSession.expires_at < now))
    return token


def resolve_session(db: Session, token: str | None) -> SignedIn | None:
    """The signed-in user behind a cookie token: None when unknown, expired or disabled."""
    if not token or len(token) > 128:
        return None
    row = db.execute(
        select(LoginSession, User)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.token_hash == _token_hash(token))
    ).first()
    if row is None:
        return None
    login, user = row
    if login.expires_at <= utcnow() or not user.active:
        return None
    return SignedIn(user=user, csrf_token=login.csrf_token, expires_at=login.expires_at)


def end_session(db: Session, token: str | None) -> None:
    if token:
        db.execute(delete(LoginSession).where(LoginSession.token_hash == _token_hash(token)))

"""Who may review: users in a file, one ``name:scrypt$N$r$p$salt$hash`` line each (hashlib.scrypt,
salt and hash in base64), written by ``edge-hmi --add-user``; a login gets a random session token
(a cookie), kept in memory only: a restart of the HMI logs everyone out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path

N, R, P = 2**14, 8, 1  # scrypt's cost: ~50 ms and 16 MiB per check, the interactive setting of its paper
SESSION_S = 12 * 3600  # one shift and a half
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    expected = base64.b64decode(digest)
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
    )
    return hmac.compare_digest(got, expected)


def read_users(path: Path) -> dict[str, str]:
    users = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            name, sep, stored = line.partition(":")
            if not sep or not NAME.fullmatch(name):
                raise ValueError(f"{path}:{number}: not 'name:scrypt$...'; add users with edge-hmi --add-user")
            users[name] = stored.strip()
    return users


def add_user(path: Path, name: str, password: str) -> None:
    """Adds the user, or gives an existing one a new password."""
    if not NAME.fullmatch(name):
        raise ValueError(f"user name {name!r}: letters, digits, '.', '_' or '-', at most 64")
    users = read_users(path) if path.exists() else {}
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}:{h}\n" for n, h in users.items()))
    path.chmod(0o600)


class Sessions:
    def __init__(self, users_file: Path | None) -> None:
        self._users_file = users_file
        self._tokens: dict[str, tuple[str, float]] = {}

    @property
    def enabled(self) -> bool:
        return self._users_file is not None

    def login(self, name: str, password: str) -> str | None:
        """A new session token, or None for a wrong name or password (the file is read anew: edits apply at once)."""
        if self._users_file is None:
            return None
        stored = read_users(self._users_file).get(name)
        if stored is None or not check_password(password, stored):
            return None
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (name, time.monotonic() + SESSION_S)
        return token

    def user(self, token: str | None) -> str | None:
        entry = self._tokens.get(token or "")
        if entry is None or entry[1] < time.monotonic():
            self._tokens.pop(token or "", None)
            return None
        return entry[0]

    def logout(self, token: str | None) -> None:
        self._tokens.pop(token or "", None)

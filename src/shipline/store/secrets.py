"""Secrets: named values kept encrypted in the store and handed to steps by reference.

A pipeline names a secret (`${{ secrets.REGISTRY_TOKEN }}`); its value is
looked up when a run starts and lives only in that run's memory and in the
environment of the steps that use it: never in the run's params, spec,
results or logs (the recorder masks it).  A rerun looks it up again, so a
rotated secret takes effect without touching any definition.

Values are encrypted with Fernet (AES-128-CBC and HMAC-SHA256) under one key:
`$SHIPLINE_SECRET_KEY`, else the file `$SHIPLINE_HOME/secret.key`, made with
mode 0600 the first time a secret is set.  Repositories' webhook secrets are
sealed with the same key.  Everything that shares a store
(a server and the CLI, several server replicas on PostgreSQL) needs that key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import delete, insert, select, update

from shipline.domain.checking import SECRET_NAME
from shipline.exceptions import NotFound, StoreError, UsageError
from shipline.files import private_dir, private_file
from shipline.settings import Settings
from shipline.store.sql import SqlStore, _utc, utcnow
from shipline.store.tables import secrets

if TYPE_CHECKING:  # imported when a value is sealed or opened: a run that uses no secret never loads it
    from cryptography.fernet import Fernet


class SecretInfo(BaseModel):
    """What anyone may know of a secret: its name and when it was set, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


SEALED = "fernet:"
"""The prefix of an encrypted value in the store (text without it predates encryption)."""


class Keyring:
    """The one key that encrypts values in the store, read (or made) only when one is touched."""

    def __init__(self, key: str | None, key_file: Path) -> None:
        self.key = key
        self.key_file = key_file
        self._fernet: Fernet | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        key = settings.secret_key.get_secret_value() if settings.secret_key else None
        return cls(key, settings.secret_key_file)

    @property
    def source(self) -> str:
        return "$SHIPLINE_SECRET_KEY" if self.key else str(self.key_file)

    def _cipher(self, create: bool) -> Fernet:
        if self._fernet is None:
            self._fernet = self._load(create)
        return self._fernet

    def _load(self, create: bool) -> Fernet:
        key = self.key
        if key is None:
            if not self.key_file.exists():
                if not create:
                    raise StoreError(
                        f"values in the store were encrypted with a key that is not here: {self.key_file} "
                        "is missing; restore it, set SHIPLINE_SECRET_KEY, or set the secrets again"
                    )
                _create_key_file(self.key_file)
            key = self.key_file.read_text().strip()
        from cryptography.fernet import Fernet

        try:
            return Fernet(key)
        except ValueError as exc:
            raise UsageError(
                f"the secret key in {self.source} is not a Fernet key (32 url-safe base64 bytes); "
                'make one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from exc

    def seal(self, value: str) -> str:
        """A value to keep in the store, encrypted and marked as such."""
        return SEALED + self._cipher(create=True).encrypt(value.encode()).decode()

    def open(self, stored: str) -> str:
        """The value behind `seal`; text stored before sealing existed comes back as it is."""
        if not stored.startswith(SEALED):
            return stored
        from cryptography.fernet import InvalidToken

        try:
            return self._cipher(create=False).decrypt(stored[len(SEALED) :].encode()).decode()
        except InvalidToken as exc:
            raise StoreError(
                f"a value in the store cannot be decrypted with the key in {self.source}: it was sealed under "
                "another key; use that key (SHIPLINE_SECRET_KEY or secret.key) or set the value again"
            ) from exc


def _create_key_file(path: Path) -> None:
    """Write a new key readable by its owner only; a racing process's key wins intact."""
    private_dir(path.parent)
    try:
        fd = private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    from cryptography.fernet import Fernet

    with os.fdopen(fd, "wb") as out:
        out.write(Fernet.generate_key() + b"\n")


def check_name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name):
        raise UsageError(f"secret name {name!r}: use letters, digits, '_' and '-', starting with a letter or '_' (128 at most)")
    return name


class SecretStore:
    def __init__(self, sql: SqlStore, keyring: Keyring) -> None:
        self.sql = sql
        self.keyring = keyring

    def set(self, name: str, value: str) -> SecretInfo:
        """Create or replace a secret."""
        check_name(name)
        if not value:
            raise UsageError(f"secret {name!r}: the value is empty")
        token = self.keyring.seal(value)
        moment = utcnow()
        with self.sql.transaction() as conn:
            changed = conn.execute(update(secrets).where(secrets.c.name == name).values(value=token, updated_at=moment))
            if changed.rowcount == 0:
                conn.execute(insert(secrets).values(name=name, value=token, created_at=moment, updated_at=moment))
        return self.get(name)

    def get(self, name: str) -> SecretInfo:
        with self.sql.transaction() as conn:
            row = conn.execute(
                select(secrets.c.name, secrets.c.created_at, secrets.c.updated_at).where(secrets.c.name == name)
            ).first()
        if row is None:
            raise NotFound(f"no secret {name!r}; set it with `shipline secrets set {name}`")
        return _info(row)

    def all(self) -> list[SecretInfo]:
        with self.sql.transaction() as conn:
            rows = conn.execute(select(secrets.c.name, secrets.c.created_at, secrets.c.updated_at).order_by(secrets.c.name))
            return [_info(row) for row in rows]

    def delete(self, name: str) -> SecretInfo:
        info = self.get(name)
        with self.sql.transaction() as conn:
            conn.execute(delete(secrets).where(secrets.c.name == name))
        return info

    def missing(self, names: Sequence[str]) -> list[str]:
        """Which of these names have no secret (no decryption needed to tell)."""
        if not names:
            return []
        with self.sql.transaction() as conn:
            found = set(conn.execute(select(secrets.c.name).where(secrets.c.name.in_(list(names)))).scalars())
        return [n for n in names if n not in found]

    def reveal(self, names: Sequence[str]) -> dict[str, str]:
        """The values of these secrets, for a run that starts now; raises NotFound for a missing one."""
        if not names:
            return {}
        with self.sql.transaction() as conn:
            rows = conn.execute(select(secrets.c.name, secrets.c.value).where(secrets.c.name.in_(list(names)))).all()
        if missing := [n for n in names if n not in {row.name for row in rows}]:
            listed = ", ".join(missing)
            raise NotFound(
                f"secret {listed} is not set: set it with `shipline secrets set {missing[0]}` (or PUT /api/v1/secrets/NAME)"
            )
        values = {}
        for row in rows:
            try:
                values[row.name] = self.keyring.open(row.value)
            except StoreError as exc:
                raise StoreError(f"secret {row.name!r}: {exc}") from exc
        return values


def _info(row: Any) -> SecretInfo:
    return SecretInfo(name=row.name, created_at=_utc(row.created_at), updated_at=_utc(row.updated_at))

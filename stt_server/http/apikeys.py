"""API keys as configured: an id, the sha256 of the key, a role. Pure: no I/O, no aiohttp.

Only the hash of a key is ever stored (config.toml, environment, database); the key itself lives
with its user. Keys are long random tokens, so one sha256 is enough: a slow KDF protects guessable
passwords, and would cost every request a KDF run per configured key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

ROLES = ("user", "admin")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9._@-]{1,64}")


@dataclass(frozen=True)
class ApiKey:
    """One configured key: ``id`` names its owner (jobs record it), ``sha256`` is the key's hash."""

    id: str
    sha256: str
    role: str = "user"

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"API key id {self.id!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
        if not _HEX64.fullmatch(self.sha256):
            raise ValueError(f"API key {self.id!r}: sha256 must be 64 lowercase hex digits "
                             "(the output of `stt-server hash-key`), never the key itself")
        if self.role not in ROLES:
            raise ValueError(f"API key {self.id!r}: role must be one of {', '.join(ROLES)}")


def hash_key(key: str) -> str:
    """The hex sha256 of a key, as configured; surrounding whitespace is not part of a key."""
    return hashlib.sha256(key.strip().encode("utf-8")).hexdigest()


def _from_text(text: str) -> list[Any]:
    """The environment's form: a JSON list of tables, or ``id:role:sha256`` items split by commas."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        loaded = json.loads(text)
        if not isinstance(loaded, list):
            raise ValueError("API keys in JSON must be a list of objects")
        return loaded
    items = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3:
            raise ValueError("API keys must be written id:role:sha256, separated by commas")
        items.append({"id": parts[0], "role": parts[1], "sha256": parts[2]})
    return items


def parse_keys(value: str | Iterable[ApiKey | Mapping[str, Any]]) -> tuple[ApiKey, ...]:
    """Keys from config tables, from the environment's text form, or already built."""
    items = _from_text(value) if isinstance(value, str) else list(value)
    keys: list[ApiKey] = []
    for number, item in enumerate(items, 1):
        if isinstance(item, ApiKey):
            keys.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ValueError(f"API key #{number} must be a table with id, sha256 and role")
        unknown = sorted(set(item) - {"id", "sha256", "role"})
        if unknown or not {"id", "sha256"} <= set(item):
            raise ValueError(f"API key #{number} needs id and sha256 (and may have role), got {sorted(item)}")
        keys.append(ApiKey(str(item["id"]), str(item["sha256"]).lower(), str(item.get("role", "user"))))
    for attr in ("id", "sha256"):
        values = [getattr(k, attr) for k in keys]
        if len(set(values)) != len(values):
            raise ValueError(f"two API keys share one {attr}")
    return tuple(keys)


def match_key(token: str, keys: Iterable[ApiKey]) -> ApiKey | None:
    """The configured key whose hash is ``token``'s, compared in constant time against every key.

    No early exit: the time taken does not depend on which key (if any) matched."""
    digest = hash_key(token).encode("ascii")
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(digest, key.sha256.encode("ascii")):
            found = key
    return found

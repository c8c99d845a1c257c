"""A structlog processor that keeps secrets out of log lines.

Three nets: values of fields named like a secret (``api_key``, ``webhook_secret``, ``token``,
``Authorization``, ``password``…) are replaced, at any depth of dicts and lists; ``Bearer …``
credentials inside any string are masked; and known secret values (passed in, or read from
environment variables named like a secret) are masked wherever they appear in a string.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, MutableMapping

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"key|secret|token|authori[sz]ation|passw(or)?d|cookie|credential", re.IGNORECASE)
BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
MIN_SECRET_CHARS = 8  # shorter values ("1", "true") would mask innocent text


def secret_values_from_env(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names look like secrets (API keys live there)."""
    return [v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_CHARS]


class Redactor:
    """``processor(logger, method, event_dict)``: returns the event dict with secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._field(str(key), event_dict[key])
        return event_dict

    def _field(self, name: str, value: Any) -> Any:
        if SECRET_NAME.search(name) and value is not None and not isinstance(value, (bool, int, float)):
            return REDACTED
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, Mapping):
            return {k: self._field(str(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._value(v) for v in value]
        return value

    def _text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)

"""Short-lived signed links to a job's audio, for the web page's <audio> element (which sends no headers).

A link carries the key's id, an expiry and an HMAC-SHA256 over the job id, the key id and the expiry
under a secret the server makes at start-up; the API key itself is never in a URL. Pure: the clock is
passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

TTL_S = 300.0  # a few minutes: long enough to start playing; the player asks again for a new page


@dataclass(frozen=True)
class UrlSigner:
    """Signs and checks ``(job id, key id, expiry)``; a fresh secret per process (links die on restart)."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    ttl_s: float = TTL_S

    def _mac(self, job_id: str, key_id: str, expires: int) -> str:
        message = f"{job_id}\n{key_id}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def sign(self, job_id: str, key_id: str, now: float) -> tuple[dict[str, str], int]:
        """The query parameters of a link to the job's audio for ``key_id``, and when it expires."""
        expires = int(now + self.ttl_s)
        return {"kid": key_id, "exp": str(expires), "sig": self._mac(job_id, key_id, expires)}, expires

    def verify(self, job_id: str, key_id: str, expires: str, signature: str, now: float) -> bool:
        """Whether the link is this server's, for this job and key, and not expired (constant-time)."""
        try:
            when = int(expires)
        except ValueError:
            return False
        good = hmac.compare_digest(self._mac(job_id, key_id, when), signature)
        return good and now < when <= now + self.ttl_s + 1


def audio_url(job_id: str, params: dict[str, str]) -> str:
    return f"/v1/jobs/{job_id}/audio?{urlencode(params)}"

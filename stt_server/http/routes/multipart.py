"""Reading a multipart upload as a stream: the file to the spool, the small fields to a dict.

Bounded whatever the client sends, with or without Content-Length: the body must keep up a
minimum rate once a grace period has passed (a slow client would hold an upload slot), and the
non-file fields are bounded in number, in size each and in total, and may not repeat (beyond a
few values of a ``name[]`` list).
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, TypeVar

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError, PayloadEncodingError

from stt_server.http.auth import PRINCIPAL
from stt_server.errors import BadRequest, PayloadTooLarge, RequestTimeout, malformed
from stt_server.settings import ServerSettings
from stt_server.jobs.spool import Spool, SpooledFile

READ_BLOCK = 1 << 16
MAX_FIELD_BYTES = 16384
MAX_FIELDS = 32
MAX_FIELDS_BYTES = 65536
MAX_LIST_VALUES = 8  # values of one ``name[]`` field, e.g. timestamp_granularities[]

T = TypeVar("T")


class BodyPace:
    """Reads of one body, each bounded so that the body as a whole keeps ``min_rate`` bytes per
    second on average once ``grace_s`` have passed; a slower body gets 408."""

    def __init__(self, min_rate: float, grace_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.min_rate = min_rate
        self.grace_s = grace_s
        self.received = 0

    def deadline(self) -> float:
        """When the body falls below the minimum rate if nothing more arrives."""
        allowed = self.received / self.min_rate if self.min_rate > 0 else float("inf")
        return self.start + max(self.grace_s, allowed)

    async def read(self, step: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout_at(self.deadline()):  # no task per read, unlike wait_for
                return await step
        except TimeoutError:
            raise RequestTimeout(f"the request body arrived too slowly: at least {self.min_rate:g} bytes "
                                 f"per second are needed after the first {self.grace_s:g} s") from None

    async def blocks(self, part: BodyPartReader) -> AsyncIterator[bytes]:
        while block := await self.read(part.read_chunk(READ_BLOCK)):
            self.received += len(block)
            yield block

    @classmethod
    def of(cls, settings: ServerSettings) -> BodyPace:
        return cls(settings.min_upload_bytes_per_s, settings.upload_grace_s)


def requester(request: web.Request) -> str:
    """Who is asking: the authenticated key's id when there is one, else the peer address.

    Jobs record it as their owner; the queue takes turns between owners."""
    principal = request.get(PRINCIPAL)
    return str(principal) if principal else f"ip:{request.remote or 'unknown'}"


class FieldBudget:
    """The non-file fields of one upload, checked as they arrive."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {}
        self.count = 0
        self.total = 0

    def admit(self, name: str) -> None:
        self.count += 1
        if self.count > MAX_FIELDS:
            raise BadRequest(f"too many fields: at most {MAX_FIELDS} besides the file", code="too_many_fields")
        seen = len(self.values.get(name, ()))
        if seen and not name.endswith("[]"):
            raise BadRequest(f"field {name!r} is sent more than once", param=name, code="repeated_field")
        if seen >= MAX_LIST_VALUES:
            raise BadRequest(f"field {name!r} has more than {MAX_LIST_VALUES} values", param=name,
                             code="repeated_field")

    async def read(self, part: BodyPartReader, pace: BodyPace) -> None:
        name = part.name or ""
        self.admit(name)
        data = bytearray()
        async for block in pace.blocks(part):
            data += block
            self.total += len(block)
            if len(data) > MAX_FIELD_BYTES:
                raise BadRequest(f"field {name!r} is too long", param=name or None)
            if self.total > MAX_FIELDS_BYTES:
                raise BadRequest(f"the fields besides the file exceed {MAX_FIELDS_BYTES} bytes",
                                 code="fields_too_large")
        if name:
            self.values.setdefault(name, []).append(data.decode("utf-8", errors="replace"))

    def fields(self) -> dict[str, str]:
        # A name[] list is kept comma-joined, as a single value would be.
        return {name: ",".join(values) for name, values in self.values.items()}


async def read_upload(request: web.Request, server: ServerSettings,
                      spool: Spool) -> tuple[SpooledFile, str, dict[str, str]]:
    """Spool the ``file`` part and collect the other fields; a failed read leaves nothing behind."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("expected multipart/form-data with a 'file' field", param="file")
    limit = server.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + (1 << 20):
        raise PayloadTooLarge(f"file is larger than the limit of {limit} bytes", param="file")
    spooled: SpooledFile | None = None
    filename = "audio"
    budget = FieldBudget()
    pace = BodyPace.of(server)
    try:
        reader = await request.multipart()
        while (part := await pace.read(reader.next())) is not None:
            if isinstance(part, MultipartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            if part.name == "file":
                if spooled is not None:
                    raise BadRequest("send one 'file' per request", param="file")
                filename = part.filename or "audio"
                spooled = await spool.receive(pace.blocks(part), limit)
            else:  # nameless parts are read (and counted) too, then dropped
                await budget.read(part, pace)
    except (ValueError, HttpProcessingError) as exc:  # bad part headers raise the latter
        if spooled is not None:
            spool.discard(spooled)
        if isinstance(exc, PayloadEncodingError):  # the body's framing or encoding (the pure-Python parser)
            raise malformed(exc) from exc
        reason = getattr(exc, "message", None) or str(exc)
        raise BadRequest(f"malformed multipart body: {reason}"[:500]) from exc
    except BaseException:
        if spooled is not None:
            spool.discard(spooled)
        raise
    if spooled is None:
        raise BadRequest("missing required field 'file'", param="file", code="missing_file")
    return spooled, filename, budget.fields()

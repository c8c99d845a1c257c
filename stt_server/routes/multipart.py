"""Reading a multipart upload as a stream: the file to the spool, the small fields to a dict."""

from __future__ import annotations

from typing import AsyncIterator

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..auth import PRINCIPAL
from ..errors import BadRequest, PayloadTooLarge
from ..services import Services
from ..spool import SpooledFile

READ_BLOCK = 1 << 16
MAX_FIELD_BYTES = 16384


async def _blocks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while block := await part.read_chunk(READ_BLOCK):
        yield block


def requester(request: web.Request) -> str:
    """Who is asking: the authenticated key's id when there is one, else the peer address.

    Jobs record it as their owner; the queue takes turns between owners."""
    principal = request.get(PRINCIPAL)
    return str(principal) if principal else f"ip:{request.remote or 'unknown'}"


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while block := await part.read_chunk(READ_BLOCK):
        data += block
        if len(data) > MAX_FIELD_BYTES:
            raise BadRequest(f"field {part.name!r} is too long", param=part.name)
    return data.decode("utf-8", errors="replace")


async def read_upload(request: web.Request, svc: Services) -> tuple[SpooledFile, str, dict[str, str]]:
    """Spool the ``file`` part and collect the other fields; a failed read leaves nothing behind."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("expected multipart/form-data with a 'file' field", param="file")
    limit = svc.settings.server.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + (1 << 20):
        raise PayloadTooLarge(f"file is larger than the limit of {limit} bytes", param="file")
    spooled: SpooledFile | None = None
    filename = "audio"
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.name == "file":
                if spooled is not None:
                    raise BadRequest("send one 'file' per request", param="file")
                filename = part.filename or "audio"
                spooled = await svc.spool.receive(_blocks(part), limit)
            else:
                value = await _read_field(part)
                # Repeated fields such as timestamp_granularities[] are kept comma-joined.
                fields[part.name] = f"{fields[part.name]},{value}" if part.name in fields else value
    except (ValueError, HttpProcessingError) as exc:  # bad part headers raise the latter
        if spooled is not None:
            svc.spool.discard(spooled)
        reason = getattr(exc, "message", None) or str(exc)
        raise BadRequest(f"malformed multipart body: {reason}"[:500]) from exc
    except BaseException:
        if spooled is not None:
            svc.spool.discard(spooled)
        raise
    if spooled is None:
        raise BadRequest("missing required field 'file'", param="file", code="missing_file")
    return spooled, filename, fields

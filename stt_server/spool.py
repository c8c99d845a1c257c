"""The spool: uploaded audio on disk, content-addressed by sha256, written as it streams in."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from .errors import BadRequest, PayloadTooLarge

WRITE_BLOCK = 1 << 20  # gather this much before one hop to a thread for the write


@dataclass(frozen=True)
class SpooledFile:
    """An upload on disk under a temporary name until :meth:`Spool.commit` files it by hash."""

    temp_path: Path
    sha256: str
    size_bytes: int


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.incoming = directory / ".incoming"
        self.incoming.mkdir(exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.directory / sha256

    async def receive(self, blocks: AsyncIterator[bytes], max_bytes: int) -> SpooledFile:
        """Stream ``blocks`` to a temporary file, hashing as it goes; never holds the whole file."""
        temp = self.incoming / uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        handle = await asyncio.to_thread(open, temp, "wb")
        try:
            async for block in blocks:
                size += len(block)
                if size > max_bytes:
                    raise PayloadTooLarge(f"file is larger than the limit of {max_bytes} bytes", param="file")
                digest.update(block)
                pending.append(block)
                pending_size += len(block)
                if pending_size >= WRITE_BLOCK:
                    await asyncio.to_thread(handle.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await asyncio.to_thread(handle.write, b"".join(pending))
            await asyncio.to_thread(handle.close)
        except BaseException:
            handle.close()
            temp.unlink(missing_ok=True)
            raise
        if size == 0:
            temp.unlink(missing_ok=True)
            raise BadRequest("the uploaded file is empty", param="file", code="empty_file")
        return SpooledFile(temp, digest.hexdigest(), size)

    async def receive_path(self, source: Path, max_bytes: int) -> SpooledFile:
        """Spool a local file (the CLI's way in), block by block."""

        async def blocks() -> AsyncIterator[bytes]:
            with open(source, "rb") as fh:
                while block := await asyncio.to_thread(fh.read, WRITE_BLOCK):
                    yield block

        return await self.receive(blocks(), max_bytes)

    def commit(self, spooled: SpooledFile) -> Path:
        """File the upload under its hash (an identical one already there is kept)."""
        final = self.path_for(spooled.sha256)
        if final.exists():
            spooled.temp_path.unlink(missing_ok=True)
        else:
            os.replace(spooled.temp_path, final)
        return final

    def discard(self, spooled: SpooledFile) -> None:
        spooled.temp_path.unlink(missing_ok=True)

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def clear_incoming(self) -> int:
        """Remove half-written uploads left by a crash."""
        removed = 0
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

"""The spool: uploaded audio on disk, content-addressed by sha256, written as it streams in."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from stt_server.errors import BadRequest, InsufficientStorage, PayloadTooLarge

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
        # Audio of running jobs, decoded by their planning pass (stt_server.audio.decoded).
        self.decoded = directory / ".decoded"
        self.decoded.mkdir(exist_ok=True)
        # A running total, so that checking the size limit costs nothing per upload; the lock
        # because retention removes files from a worker thread.
        self._lock = threading.Lock()
        self._used = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
        # Commit sequence numbers, so that a removal decided before a new upload of the same
        # audio arrived can tell and keep the file (see ``remove``).
        self._commits = 0
        self._committed: dict[str, int] = {}
        # Files committed whose job row is not written yet: no removal may take them (see ``hold``).
        self._held: dict[str, int] = {}

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
        except BaseException as exc:
            with contextlib.suppress(OSError):
                handle.close()  # flushing may fail again on a full disk: the unlink must still run
            temp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("the disk holding the audio spool is full; try again later",
                                          param="file", headers={"Retry-After": "300"}) from exc
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

    @property
    def commits(self) -> int:
        """How many uploads have been committed so far: a mark to pass to ``remove``."""
        return self._commits

    def commit(self, spooled: SpooledFile, max_bytes: int | None = None) -> Path:
        """File the upload under its hash (an identical one already there is kept) and hold it until
        :meth:`release`: the caller records the job that needs it in between.

        Raises InsufficientStorage (and discards the upload) if filing it would take the
        spool past ``max_bytes``; an identical file already there costs nothing.
        """
        final = self.path_for(spooled.sha256)
        with self._lock:
            if final.exists():
                spooled.temp_path.unlink(missing_ok=True)
            elif max_bytes is not None and self._used + spooled.size_bytes > max_bytes:
                spooled.temp_path.unlink(missing_ok=True)
                # How full it is stays in stats and metrics: it is the operator's business, not a client's.
                raise InsufficientStorage("the audio spool is full; try again later",
                                          param="file", headers={"Retry-After": "300"})
            else:
                os.replace(spooled.temp_path, final)
                self._used += spooled.size_bytes
            self._commits += 1
            self._committed[spooled.sha256] = self._commits
            self._held[spooled.sha256] = self._held.get(spooled.sha256, 0) + 1
        return final

    def release(self, sha256: str) -> None:
        """The job that a ``commit`` filed this file for is recorded (or will never be): a removal
        may take the file again once no job refers to it."""
        with self._lock:
            left = self._held.get(sha256, 0) - 1
            if left > 0:
                self._held[sha256] = left
            else:
                self._held.pop(sha256, None)

    def discard(self, spooled: SpooledFile) -> None:
        spooled.temp_path.unlink(missing_ok=True)

    def remove(self, sha256: str, *, unless_committed_after: int | None = None) -> bool:
        """Delete a stored file; with a mark from ``commits``, keep it if it was uploaded again since.
        A file held by a commit whose job is not recorded yet is always kept.

        Returns True when no file is left (deleted, or already gone), False when it was kept.
        """
        path = self.path_for(sha256)
        with self._lock:
            if sha256 in self._held:
                return False
            if unless_committed_after is not None and self._committed.get(sha256, 0) > unless_committed_after:
                return False
            self._committed.pop(sha256, None)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return True
            self._used -= size
        return True

    def stored_hashes(self) -> list[str]:
        """The names (hashes) of every stored file."""
        return [p.name for p in self.directory.iterdir() if p.is_file()]

    def verify(self, sha256: str) -> bool:
        """True when the stored file still hashes to its name (blocking: run it in a thread)."""
        digest = hashlib.sha256()
        try:
            with open(self.path_for(sha256), "rb") as fh:
                while block := fh.read(WRITE_BLOCK):
                    digest.update(block)
        except FileNotFoundError:
            return False
        return digest.hexdigest() == sha256

    def clear_incoming(self) -> int:
        """Remove what a crash left: half-written uploads, and audio decoded for jobs that were running
        (a resumed job reads its chunks from its upload)."""
        removed = 0
        for leftover in [*self.incoming.iterdir(), *self.decoded.iterdir()]:
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def used_bytes(self) -> int:
        """Bytes of committed audio (a running total: scanned once at start, then kept)."""
        return self._used

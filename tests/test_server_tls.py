"""HTTPS (``tls_cert``/``tls_key``), trusted proxies' ``X-Forwarded-For``, and fair slots."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
from pathlib import Path

import pytest

from eventtally.server import ConfigFileError, ServerConfig
from eventtally.server.slots import Slots
from tests.server_support import INGEST, SEGMENT_KEY, query, running_server

trustme = pytest.importorskip("trustme")

BODY = b'[{"type":"track","event":"A","receivedAt":"2024-05-14T10:00:00Z"}]'


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _pem_files(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        with cert_path.open("ab") as fh:
            fh.write(extra.bytes())
    return cert_path, key_path


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_https_serves_ingest_and_reads(tmp_path: Path, ca: trustme.CA) -> None:
    """With a certificate made here, ingest and a query work over HTTPS (TLS 1.2+)."""
    cert, key = _pem_files(ca, tmp_path)
    with running_server(tmp_path, {"tls_cert": str(cert), "tls_key": str(key)}) as srv:
        assert srv.url.startswith("https://")
        conn = http.client.HTTPSConnection(
            "127.0.0.1", srv.port, timeout=10, context=_client_context(ca)
        )
        try:
            conn.request("POST", f"/{INGEST}", BODY, {"x-api-token": SEGMENT_KEY})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
            conn.request(
                "POST",
                "/api/v1/metrics/results",
                json.dumps(query("all-events")),
                {"x-api-token": SEGMENT_KEY},
            )
            resp = conn.getresponse()
            assert resp.status == 200
            assert sum(r["value"] for r in json.loads(resp.read())) == 1
            assert conn.sock is not None
            assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
        finally:
            conn.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_and_plain_http_are_refused(tmp_path: Path, ca: trustme.CA) -> None:
    """A TLS 1.1 client cannot connect, and plain HTTP on the HTTPS port gets no answer."""
    cert, key = _pem_files(ca, tmp_path)
    with running_server(tmp_path, {"tls_cert": str(cert), "tls_key": str(key)}) as srv:
        old = _client_context(ca)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw,
            pytest.raises(ssl.SSLError),
        ):
            old.wrap_socket(raw, server_hostname="127.0.0.1")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                data = raw.recv(65536)
            except ConnectionResetError:
                data = b""
            assert not data.startswith(b"HTTP/1.1 200")


def test_tls_settings_are_validated() -> None:
    """tls_cert and tls_key come together and must be files; proxies must be addresses."""
    with pytest.raises(ConfigFileError, match="both or neither"):
        ServerConfig(tls_cert=Path("/nonexistent.pem")).validate()
    with pytest.raises(ConfigFileError, match="not a readable file"):
        ServerConfig(tls_cert=Path("/nonexistent.pem"), tls_key=Path("/nope.key")).validate()
    with pytest.raises(ConfigFileError, match="trusted_proxies"):
        ServerConfig(trusted_proxies=("not-an-ip",)).validate()
    with pytest.raises(ConfigFileError, match="org_slot_share"):
        ServerConfig(org_slot_share=0).validate()
    with pytest.raises(ConfigFileError, match="max_header_bytes"):
        ServerConfig(max_header_bytes=10).validate()


def _logged_client(srv: object, caplog: pytest.LogCaptureFixture, forwarded: str) -> str:
    port = srv.port  # type: ignore[attr-defined]
    caplog.clear()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/v1/organization/ping", headers={"x-api-token": SEGMENT_KEY,
                     "X-Forwarded-For": forwarded})  # fmt: skip
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    lines = [r.getMessage() for r in caplog.records if "organization/ping" in r.getMessage()]
    assert len(lines) == 1
    return lines[0].split(" ", 1)[0]


@pytest.mark.parametrize(
    ("proxies", "forwarded", "client"),
    [
        ([], "203.0.113.5", "127.0.0.1"),
        (["127.0.0.1"], "203.0.113.5", "203.0.113.5"),
        (["127.0.0.0/8"], "198.51.100.1, 203.0.113.5", "203.0.113.5"),
        (["127.0.0.1", "10.0.0.0/8"], "198.51.100.1, 203.0.113.5, 10.1.2.3", "203.0.113.5"),
        (["127.0.0.1"], "garbage", "127.0.0.1"),
    ],
)
def test_forwarded_for_is_honoured_only_from_trusted_proxies(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    proxies: list[str],
    forwarded: str,
    client: str,
) -> None:
    """REMOTE_ADDR (the access log's first field) is the rightmost untrusted hop."""
    caplog.set_level(logging.INFO, logger="eventtally.server")
    with running_server(tmp_path, {"trusted_proxies": proxies}) as srv:
        assert _logged_client(srv, caplog, forwarded) == client


def test_slots_share_between_organizations() -> None:
    """One org holds at most ceil(limit x share); the rest stay free for others; pools apart."""
    slots = Slots(ingest=4, reads=2, org_share=0.5)
    assert slots.org_cap("ingest") == 2
    assert [slots.try_acquire("ingest", "a") for _ in range(3)] == [True, True, False]
    assert slots.try_acquire("ingest", "b") and slots.try_acquire("ingest", "b")
    assert not slots.try_acquire("ingest", "c")  # the pool is full
    assert slots.try_acquire("read", "a")  # reads have their own pool
    assert slots.in_flight == 5
    slots.release("ingest", "a")
    assert slots.try_acquire("ingest", "c")
    assert slots.held_by("ingest", "a") == 1
    unlimited = Slots(ingest=0, reads=0)
    assert all(unlimited.try_acquire("ingest", "a") for _ in range(100))


def test_serve_tls_flags_serve_https(tmp_path: Path, ca: trustme.CA) -> None:
    """``eventtally serve --tls-cert --tls-key`` answers over HTTPS and stops cleanly."""
    from tests.ops_support import ServerProcess
    from tests.server_support import write_config

    cert, key = _pem_files(ca, tmp_path)
    write_config(tmp_path)
    with ServerProcess(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as srv:
        assert "serving on https://127.0.0.1:" in srv.stdout()
        conn = http.client.HTTPSConnection(
            "127.0.0.1", srv.port, timeout=10, context=_client_context(ca)
        )
        try:
            conn.request("GET", "/readyz")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        assert srv.stop() == 0

"""The strict HTTP/1.1 head parser and chunked decoder (``server/http11.py``), case by case."""

from __future__ import annotations

import pytest

from eventtally.server.http11 import MAX_CHUNK_LINE, ChunkedDecoder, ProtocolError, parse_head


def _head(*lines: str | bytes, request: bytes = b"POST /in HTTP/1.1") -> bytes:
    raw = [request, b"Host: t"]
    raw += [line.encode("latin-1") if isinstance(line, str) else line for line in lines]
    return b"\r\n".join(raw)


def test_a_plain_request_parses() -> None:
    """Method, target, version, lower-cased names, trimmed values, length."""
    h = parse_head(_head("X-Api-Token:  k1 ", "Content-Length: 12"))
    assert (h.method, h.target, h.version) == ("POST", "/in", "HTTP/1.1")
    assert h.headers == [("host", "t"), ("x-api-token", "k1"), ("content-length", "12")]
    assert h.content_length == 12 and not h.chunked and h.keep_alive and h.has_body
    assert h.get("x-api-token") == "k1" and h.get("nope") is None


def test_chunked_framing() -> None:
    """One ``Transfer-Encoding: chunked`` (any case) frames the body."""
    h = parse_head(_head("Transfer-Encoding: Chunked"))
    assert h.chunked and h.content_length is None and h.has_body


def test_leading_empty_lines_are_ignored() -> None:
    """RFC 9112 2.2: a server should ignore empty lines before the request line."""
    assert parse_head(b"\r\n" + _head()).method == "POST"


@pytest.mark.parametrize(
    ("lines", "status", "words"),
    [
        (["Transfer-Encoding : chunked"], 400, "Whitespace between"),
        (["Content-Length\t: 5"], 400, "Whitespace between"),
        (["X-Caf\xe9: 1"], 400, "Invalid character"),
        (["X(y): 1"], 400, "Invalid character"),
        ([": 1"], 400, "Empty header name"),
        (["no colon here"], 400, "without a colon"),
        (["X-A: 1", " folded"], 400, "obs-fold"),
        (["X-A: 1", "\tfolded"], 400, "obs-fold"),
        ([b"X-A: a\rb"], 400, "Bare CR"),
        ([b"X-A: a\nb"], 400, "Bare LF"),
        ([b"X-A: a\x00b"], 400, "Control character"),
        ([b"X-A: a\x1bb"], 400, "Control character"),
        ([b"X-A: a\x7fb"], 400, "Control character"),
        (["Content-Length: 5", "Transfer-Encoding: chunked"], 400, "Both"),
        (["Transfer-Encoding: chunked", "Content-Length: 5"], 400, "Both"),
        (["Content-Length: 5", "Content-Length: 5"], 400, "More than one"),
        (["Content-Length: 5", "Content-Length: 6"], 400, "More than one"),
        (["Content-Length: 5, 5"], 400, "Invalid Content-Length"),
        (["Content-Length: -1"], 400, "Invalid Content-Length"),
        (["Content-Length: +5"], 400, "Invalid Content-Length"),
        (["Content-Length: 0x10"], 400, "Invalid Content-Length"),
        (["Content-Length: \xb2"], 400, "Invalid Content-Length"),
        (["Content-Length: 1234567890123456789"], 400, "Invalid Content-Length"),
        (["Transfer-Encoding: gzip, chunked"], 400, "Unsupported Transfer-Encoding"),
        (["Transfer-Encoding: chunked, chunked"], 400, "Unsupported Transfer-Encoding"),
        (["Transfer-Encoding: identity"], 400, "Unsupported Transfer-Encoding"),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], 400, "Unsupported"),
        (["Host: u"], 400, "exactly one Host"),
        (["Expect: something-else"], 417, "expectation"),
    ],
)
def test_violations_are_refused(lines: list[str | bytes], status: int, words: str) -> None:
    """Each smuggling primitive and malformed line is a ProtocolError with a clear message."""
    with pytest.raises(ProtocolError) as info:
        parse_head(_head(*lines))
    assert info.value.status == status
    assert words in info.value.message


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"POST /in", 400),
        (b"POST  /in HTTP/1.1", 400),
        (b"POST /in HTTP/1.1 ", 400),
        (b"PO\xc3\x89ST /in HTTP/1.1", 400),
        (b"POST /caf\xc3\xa9 HTTP/1.1", 400),
        (b"POST /in HTTP/2.0", 505),
        (b"POST /in HTTP/1", 400),
        (b"POST /in http/1.1", 400),
        (b"POST /" + b"a" * 9000 + b" HTTP/1.1", 414),
    ],
)
def test_bad_request_lines(request_line: bytes, status: int) -> None:
    """Request lines: three parts, token method, visible-ASCII target, HTTP/1.x."""
    with pytest.raises(ProtocolError) as info:
        parse_head(_head(request=request_line))
    assert info.value.status == status


def test_missing_host_in_http11_is_400_but_http10_needs_none() -> None:
    """RFC 9112 3.2: HTTP/1.1 requests carry exactly one Host; HTTP/1.0 may omit it."""
    with pytest.raises(ProtocolError, match="Host"):
        parse_head(b"GET / HTTP/1.1\r\nX-A: 1")
    assert parse_head(b"GET / HTTP/1.0").version == "HTTP/1.0"


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, Close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
        ("HTTP/1.0", "close", False),
    ],
)
def test_connection_semantics(version: str, connection: str | None, keep_alive: bool) -> None:
    """HTTP/1.1 persists unless ``close``; HTTP/1.0 only with ``keep-alive``."""
    lines = ["Host: t"] + ([f"Connection: {connection}"] if connection else [])
    h = parse_head("\r\n".join([f"GET / {version}", *lines]).encode())
    assert h.keep_alive is keep_alive


def test_expect_continue_only_for_http11() -> None:
    """``Expect: 100-continue`` is honoured for HTTP/1.1 and ignored for HTTP/1.0."""
    assert parse_head(_head("Expect: 100-Continue", "Content-Length: 3")).expect_continue
    h10 = parse_head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3")
    assert not h10.expect_continue


def test_transfer_encoding_in_http10_is_refused() -> None:
    """RFC 9112 6.1: chunked framing does not exist in HTTP/1.0."""
    with pytest.raises(ProtocolError, match=r"HTTP/1\.0"):
        parse_head(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked")


def test_obs_text_values_are_kept_opaque() -> None:
    """Bytes 0x80-0xFF are allowed in values (obs-text) and kept byte for byte."""
    h = parse_head(_head(b"X-Name: caf\xc3\xa9"))
    assert h.get("x-name") == "caf\xc3\xa9"


# ---------------------------------------------------------------- chunked decoder


def _decode_all(data: bytes, step: int) -> tuple[bytes, ChunkedDecoder, bytearray]:
    dec = ChunkedDecoder()
    buf = bytearray()
    out = b""
    for i in range(0, len(data), step):
        buf += data[i : i + step]
        out += dec.decode(buf)
    return out, dec, buf


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_chunked_decodes_in_any_slicing(step: int) -> None:
    """The same body decodes whatever the read sizes; what follows stays in the buffer."""
    data = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1"
    out, dec, rest = _decode_all(data, step)
    assert out == b"hello world"
    assert dec.done and dec.trailers == [("x-t", "1")]
    assert bytes(rest) == b"GET / HTTP/1.1"


def test_chunked_upper_case_hex() -> None:
    """Chunk sizes are hexadecimal, either case."""
    out, dec, _ = _decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", 100)
    assert out == b"0123456789" and dec.done


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"zz\r\nab\r\n", "bad chunk size"),
        (b"-1\r\n", "bad chunk size"),
        (b" 5\r\nhello\r\n", "bad chunk size"),
        (b"0x5\r\nhello\r\n", "bad chunk size"),
        (b"\r\n", "bad chunk size"),
        (b"11111111111111111\r\n", "bad chunk size"),
        (b"5\r\nhelloXY", "missing CRLF"),
        (b"5\nhello\r\n", "chunk-size line"),
        (b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n", "Whitespace"),
        (b"5\r\nhello\r\n0\r\n folded\r\n\r\n", "obs-fold"),
    ],
)
def test_chunked_violations(data: bytes, words: str) -> None:
    """Malformed chunk sizes, missing CRLFs and bad trailers are 400."""
    with pytest.raises(ProtocolError) as info:
        _decode_all(data, 1000)
    assert info.value.status == 400
    assert words in info.value.message


def test_chunk_size_line_is_bounded() -> None:
    """A chunk-size line that never ends cannot grow the buffer without bound."""
    dec = ChunkedDecoder()
    buf = bytearray(b"5;" + b"x" * (MAX_CHUNK_LINE + 10))
    with pytest.raises(ProtocolError, match="too long"):
        dec.decode(buf)


def test_trailer_section_is_bounded() -> None:
    """Trailers past 8 KiB in total are refused."""
    dec = ChunkedDecoder()
    buf = bytearray(b"0\r\n" + b"X-T: 1234567890\r\n" * 1000)
    with pytest.raises(ProtocolError, match="trailer"):
        dec.decode(buf)


def test_incomplete_body_is_not_done() -> None:
    """A decoder waits for more input rather than guessing."""
    dec = ChunkedDecoder()
    buf = bytearray(b"5\r\nhel")
    assert dec.decode(buf) == b"hel"
    assert not dec.done

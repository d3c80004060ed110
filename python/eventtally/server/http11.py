"""A strict HTTP/1.1 request-head parser and chunked-body decoder (RFC 9112), for this server.

Written for eventtally instead of going through ``email.parser``: that parser is lenient in ways
that make request smuggling possible (``Transfer-Encoding : chunked`` and a non-ASCII header name
silently drop that line and every later one).

Guarantees:
- :func:`parse_head` accepts only a well-formed head: a request line ``method SP target SP
  HTTP/1.x``; header lines ``token ":" OWS value OWS`` with no whitespace before the colon, no
  obs-fold (a line starting with SP or HTAB), no bare CR or LF, no control characters in values and
  only token characters (ASCII) in names.  HTTP/1.1 needs exactly one ``Host``.
- Framing is unambiguous: at most one ``Content-Length`` (digits only) or one
  ``Transfer-Encoding: chunked`` (no other coding), never both.
- Every violation raises :class:`ProtocolError` with the status to answer (400; 414 for a long
  request line; 417 for an unknown expectation; 505 for another HTTP version).  The caller answers
  it and closes the connection: after a framing error nothing later on it can be trusted.
- :class:`ChunkedDecoder` decodes incrementally from a buffer, bounds every chunk-size line and the
  trailer section, validates trailer lines like header lines, and leaves any bytes after the body
  in the buffer (pipelined requests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_CHUNK_LINE",
    "ChunkedDecoder",
    "ProtocolError",
    "RequestHead",
    "parse_head",
]

#: Longest chunk-size line (size and extensions) accepted.
MAX_CHUNK_LINE = 4096
#: Longest trailer section accepted after the last chunk.
MAX_TRAILER_BYTES = 8192

# RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
# / "`" / "|" / "~" / DIGIT / ALPHA
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value: VCHAR, obs-text, SP and HTAB inside; every other control character is refused.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# request-target: visible ASCII only (RFC 9112 3.2; non-ASCII must be percent-encoded).
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ProtocolError(ValueError):
    """The request is not HTTP/1.1 as RFC 9112 allows; answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class RequestHead:
    """A parsed request head.  Header names are lower-cased; order and repeats are kept."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: The declared body length, or ``None`` (no ``Content-Length``).
    content_length: int | None = None
    chunked: bool = False
    #: Whether the connection may carry another request after this one.
    keep_alive: bool = True
    #: ``Expect: 100-continue`` was sent (HTTP/1.1 only).
    expect_continue: bool = False

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


def _split_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\r\n")
    for line in lines:
        if b"\r" in line:
            raise ProtocolError(400, "Bare CR in the request head")
        if b"\n" in line:
            raise ProtocolError(400, "Bare LF in the request head (lines end with CRLF)")
    return lines


def parse_field_line(line: bytes) -> tuple[str, str]:
    """One ``name: value`` line (a header or a trailer), strictly; names lower-cased."""
    if line[:1] in (b" ", b"\t"):
        raise ProtocolError(400, "Obsolete line folding (obs-fold) in a header")
    name, colon, value = line.partition(b":")
    if not colon:
        raise ProtocolError(400, "Header line without a colon")
    if not name:
        raise ProtocolError(400, "Empty header name")
    if _TOKEN.fullmatch(name) is None:
        if name[-1:] in (b" ", b"\t"):
            raise ProtocolError(400, "Whitespace between a header name and its colon")
        raise ProtocolError(400, "Invalid character in a header name")
    if _BAD_VALUE.search(value) is not None:
        raise ProtocolError(400, f"Control character in the value of header {name.decode()!r}")
    # latin-1 maps obs-text bytes one to one; the app treats values as opaque text.
    return name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")


def _parse_request_line(line: bytes, max_line: int) -> tuple[str, str, str]:
    if len(line) > max_line:
        raise ProtocolError(414, "Request line too long")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise ProtocolError(400, "Malformed request line")
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        raise ProtocolError(400, "Invalid method in the request line")
    if _TARGET.fullmatch(target) is None:
        raise ProtocolError(400, "Invalid request target")
    m = _VERSION.fullmatch(version)
    if m is None:
        raise ProtocolError(400, "Malformed HTTP version")
    if m.group(1) != b"1":
        raise ProtocolError(505, "HTTP version not supported (HTTP/1.0 and HTTP/1.1 only)")
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")


def parse_head(block: bytes, *, max_request_line: int = 8192) -> RequestHead:
    """Parse a request head: the bytes before the empty line (``CRLF CRLF`` excluded).

    Leading empty lines are ignored as RFC 9112 2.2 allows.
    """
    lines = _split_lines(block)
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise ProtocolError(400, "Empty request")
    method, target, version = _parse_request_line(lines[0], max_request_line)
    head = RequestHead(method, target, version)
    lengths: list[str] = []
    codings: list[str] = []
    hosts = 0
    connection: list[str] = []
    expect: list[str] = []
    for line in lines[1:]:
        name, value = parse_field_line(line)
        head.headers.append((name, value))
        if name == "content-length":
            lengths.append(value)
        elif name == "transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(","))
        elif name == "host":
            hosts += 1
        elif name == "connection":
            connection.extend(t.strip().lower() for t in value.split(","))
        elif name == "expect":
            expect.append(value.strip().lower())
    http11 = version == "HTTP/1.1"
    if http11 and hosts != 1:
        raise ProtocolError(400, "HTTP/1.1 requests need exactly one Host header")
    if codings:
        if lengths:
            raise ProtocolError(400, "Both Content-Length and Transfer-Encoding")
        if codings != ["chunked"]:
            raise ProtocolError(400, "Unsupported Transfer-Encoding (only chunked)")
        if not http11:
            raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
        head.chunked = True
    elif lengths:
        if len(lengths) != 1:
            raise ProtocolError(400, "More than one Content-Length header")
        value = lengths[0]
        if not value.isascii() or not value.isdigit() or len(value) > 18:
            raise ProtocolError(400, "Invalid Content-Length header")
        head.content_length = int(value)
    if "close" in connection:
        head.keep_alive = False
    elif not http11:
        head.keep_alive = "keep-alive" in connection
    if expect:
        if expect != ["100-continue"]:
            raise ProtocolError(417, "Unsupported expectation (only 100-continue)")
        head.expect_continue = http11
    return head


class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoding from a caller-owned buffer."""

    __slots__ = ("_left", "_state", "_trailer_bytes", "done", "trailers")

    def __init__(self) -> None:
        self._state = "size"  # size, data, data-crlf, trailer
        self._left = 0
        self._trailer_bytes = 0
        self.done = False
        self.trailers: list[tuple[str, str]] = []

    def _line(self, buf: bytearray, limit: int, what: str) -> bytes | None:
        end = buf.find(b"\r\n", 0, limit + 2)
        if end < 0:
            if len(buf) > limit + 1:
                raise ProtocolError(400, f"Malformed chunked body: {what} too long")
            return None
        line = bytes(buf[:end])
        del buf[: end + 2]
        if b"\r" in line or b"\n" in line:
            raise ProtocolError(400, f"Malformed chunked body: bare CR or LF in a {what}")
        return line

    def decode(self, buf: bytearray) -> bytes:
        """Consume what ``buf`` holds of the body; return the decoded bytes.

        Bytes after the body's end stay in ``buf``.  Raises :class:`ProtocolError` (400).
        """
        out: list[bytes] = []
        while not self.done:
            if self._state == "size":
                line = self._line(buf, MAX_CHUNK_LINE, "chunk-size line")
                if line is None:
                    break
                size_text = line.split(b";", 1)[0]
                if _HEX.fullmatch(size_text) is None:
                    raise ProtocolError(400, "Malformed chunked body: bad chunk size")
                self._left = int(size_text, 16)
                self._state = "data" if self._left else "trailer"
            elif self._state == "data":
                if not buf:
                    break
                n = min(self._left, len(buf))
                out.append(bytes(buf[:n]))
                del buf[:n]
                self._left -= n
                if not self._left:
                    self._state = "data-crlf"
            elif self._state == "data-crlf":
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise ProtocolError(400, "Malformed chunked body: missing CRLF after a chunk")
                del buf[:2]
                self._state = "size"
            else:
                left = MAX_TRAILER_BYTES - self._trailer_bytes
                line = self._line(buf, left, "trailer section")
                if line is None:
                    break
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > MAX_TRAILER_BYTES:
                    raise ProtocolError(400, "Malformed chunked body: trailer section too long")
                if not line:
                    self.done = True
                else:
                    self.trailers.append(parse_field_line(line))
        return b"".join(out)

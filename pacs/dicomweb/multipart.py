"""Reading a multipart/related body (RFC 2046 5.1, RFC 2387) one part at a time.

A STOW-RS request carries many DICOM files in one body, possibly gigabytes. `parts`
reads the stream in chunks, finds each delimiter even when a chunk edge cuts it,
and spools each part's body to a temporary file (in memory up to `spool_size`,
then on disk) before handing it over: one part at a time, never the whole body.

Django-free, so its tests run in milliseconds.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol

CRLF = b"\r\n"
MAX_BOUNDARY_LENGTH = 70  # RFC 2046 5.1.1
# A media type's parameters: name=token or name="quoted string" (RFC 9110 5.6.6).
_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class MultipartError(ValueError):
    """The body is not a well-formed multipart body; the message says where."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; name=value; …` as (lower-cased type, {lower-cased name: value})."""
    kind, _, rest = value.partition(";")
    params = {}
    for name, raw in _PARAMETER.findall(";" + rest if rest else ""):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name.lower()] = raw
    return kind.strip().lower(), params


@dataclass
class Part:
    """One body part: its headers (names lower-cased) and its body, read from the start.

    `truncated` says the body was longer than the parser's `max_part_size`: the rest
    was skipped and `body` is empty. The body is closed when the next part is read."""

    headers: dict[str, str]
    body: IO[bytes]
    size: int
    truncated: bool = False

    @property
    def content_type(self) -> str:
        return media_type(self.headers.get("content-type", ""))[0]


class _Scanner:
    """A read buffer over the stream. It starts with CRLF so that a body opening with
    `--boundary` (no preamble) matches the delimiter `CRLF--boundary` like any other."""

    def __init__(self, stream: Readable, chunk_size: int) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self.buffer = bytearray(CRLF)

    def fill(self) -> bool:
        """Read one more chunk; False at the end of the stream."""
        chunk = self._stream.read(self._chunk_size)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def has(self, count: int) -> bool:
        while len(self.buffer) < count:
            if not self.fill():
                return False
        return True

    def until(self, delimiter: bytes, sink: _LimitedSink | None) -> bool:
        """Move the bytes before `delimiter` to `sink` (None: drop them) and consume the
        delimiter; False when the stream ends first. Only the last len(delimiter) - 1
        bytes are kept back between reads: a delimiter split over two chunks."""
        keep = len(delimiter) - 1
        while True:
            index = self.buffer.find(delimiter)
            if index >= 0:
                self._pass(index, sink)
                del self.buffer[: index + len(delimiter)]
                return True
            if len(self.buffer) > keep:
                cut = len(self.buffer) - keep
                self._pass(cut, sink)
                del self.buffer[:cut]
            if not self.fill():
                return False

    def _pass(self, count: int, sink: _LimitedSink | None) -> None:
        """The first `count` bytes to `sink`, through a view (no copy of a part's worth
        of bytes); the view is released before the buffer is cut."""
        if sink is not None and count:
            with memoryview(self.buffer) as view:
                sink.write(view[:count])

    def line(self, limit: int) -> bytes:
        """One CRLF-terminated line, without its CRLF."""
        start = 0
        while True:
            index = self.buffer.find(CRLF, start)
            if index >= 0:
                line = bytes(self.buffer[:index])
                del self.buffer[: index + 2]
                return line
            if len(self.buffer) > limit:
                raise MultipartError(f"a part header line is longer than {limit} bytes")
            start = max(len(self.buffer) - 1, 0)
            if not self.fill():
                raise MultipartError("the body ends inside a part's headers")


class _LimitedSink:
    """Writes to the part's file until `limit` bytes, then only counts."""

    def __init__(self, file: IO[bytes], limit: int | None) -> None:
        self.file = file
        self.limit = limit
        self.size = 0
        self.truncated = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.size += len(data)
        if self.truncated:
            return len(data)
        if self.limit is not None and self.size > self.limit:
            self.truncated = True
            self.file.seek(0)
            self.file.truncate()
            return len(data)
        return self.file.write(data)


def parts(
    stream: Readable,
    boundary: str,
    *,
    chunk_size: int = 64 * 1024,
    spool_size: int = 1024 * 1024,
    spool_dir: str | None = None,
    max_part_size: int | None = None,
    max_header_size: int = 16 * 1024,
) -> Iterator[Part]:
    """The body parts of a multipart body read from `stream`, in order.

    The preamble and the epilogue are ignored. Raises MultipartError when the body
    has no delimiter, ends inside a part, or a delimiter line or header is malformed;
    the parts before the error have been yielded by then.
    """
    if not 0 < len(boundary) <= MAX_BOUNDARY_LENGTH:
        raise MultipartError(f"the boundary must be 1 to {MAX_BOUNDARY_LENGTH} characters")
    try:
        delimiter = CRLF + b"--" + boundary.encode("ascii")
    except UnicodeEncodeError as error:
        raise MultipartError("the boundary must be ASCII") from error
    scanner = _Scanner(stream, chunk_size)
    if not scanner.until(delimiter, None):
        raise MultipartError(f"the body holds no boundary --{boundary}")
    while True:
        if not scanner.has(2):
            raise MultipartError("the body ends after a boundary (no closing --)")
        if scanner.buffer[:2] == b"--":
            return  # the close delimiter; what follows is the epilogue
        # The rest of the delimiter line may only be transport padding (RFC 2046 5.1.1).
        if scanner.line(max_header_size).strip(b" \t"):
            raise MultipartError("a boundary is followed by other text on its line")
        headers = _headers(scanner, max_header_size)
        with tempfile.SpooledTemporaryFile(max_size=spool_size, dir=spool_dir) as body:
            sink = _LimitedSink(body, max_part_size)
            if not scanner.until(delimiter, sink):
                raise MultipartError("the body ends inside a part (no boundary after it)")
            body.seek(0)
            yield Part(headers, body, sink.size, sink.truncated)


def _headers(scanner: _Scanner, limit: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    total, name = 0, ""
    while True:
        line = scanner.line(limit)
        total += len(line) + 2
        if total > limit:
            raise MultipartError(f"a part's headers are longer than {limit} bytes")
        if not line:
            return headers
        text = line.decode("latin-1")
        if text[:1] in (" ", "\t") and name:  # an obsolete folded continuation line
            headers[name] += " " + text.strip()
            continue
        name, colon, value = text.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise MultipartError(f"malformed part header line {text[:80]!r}")
        headers[name] = value.strip()

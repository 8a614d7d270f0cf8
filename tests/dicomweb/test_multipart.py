"""The multipart/related reader behind STOW-RS, fed in chunks of every small size."""

import io
import itertools

import pytest

from pacs.dicomweb.multipart import MultipartError, media_type, parts

BOUNDARY = "0f3cf5c0-70e0-41ef"


class Trickle(io.RawIOBase):
    """A stream that hands out at most `sizes` bytes per read, in turn (a slow client)."""

    def __init__(self, data: bytes, sizes: tuple[int, ...]) -> None:
        self._data = memoryview(data)
        self._sizes = itertools.cycle(sizes)
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        count = min(size if size >= 0 else len(self._data), next(self._sizes))
        chunk, self._data = bytes(self._data[:count]), self._data[count:]
        self.consumed += len(chunk)
        return chunk


def body(*payloads: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for payload in payloads:
        out += f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload
    return out + f"\r\n--{BOUNDARY}--".encode() + epilogue


def read_all(stream, **options) -> list[tuple[dict[str, str], bytes]]:
    return [(part.headers, part.body.read()) for part in parts(stream, BOUNDARY, **options)]


# Payloads that look like the delimiter's beginning, at the edges of the parts.
PAYLOADS = (
    b"DICM" + bytes(range(256)) * 3,
    b"\r\n--0f3cf5c0-70e0-41e\r\n-",  # one character short of the delimiter
    b"",
    b"\r\r\n\n--",
)


def test_it_reads_every_part_whatever_the_chunk_size():
    data = body(*PAYLOADS, preamble=b"ignored preamble", epilogue=b"\r\nignored epilogue")
    for size in range(1, 8):
        got = read_all(Trickle(data, (size,)), chunk_size=size)
        assert [payload for _, payload in got] == list(PAYLOADS), size
        assert got[0][0] == {"content-type": "application/dicom"}
    uneven = Trickle(data, (1, 7, 3, 2, 5))
    assert [payload for _, payload in read_all(uneven, chunk_size=7)] == list(PAYLOADS)


def test_a_body_starting_with_the_boundary_and_parts_without_headers():
    data = (
        f"--{BOUNDARY}\r\n\r\nfirst\r\n--{BOUNDARY}  \t\r\n"
        f"content-type: application/dicom;\r\n transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n"
        f"second\r\n--{BOUNDARY}--\r\n"
    ).encode()
    got = read_all(Trickle(data, (3,)), chunk_size=3)
    assert got == [
        ({}, b"first"),
        (
            {"content-type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"},
            b"second",
        ),
    ]


def test_it_holds_one_part_at_a_time_and_spools_big_ones_to_disk():
    big = bytes(300_000)
    stream = Trickle(body(big, big, b"small"), (65536,))
    reader = parts(stream, BOUNDARY, spool_size=100_000)
    first = next(reader)
    assert first.size == len(big)
    assert first.body._rolled  # on disk, not in memory
    assert stream.consumed < len(big) + 65536  # the next part is still unread
    assert first.body.read() == big
    assert next(reader).size == len(big)
    assert first.body.closed
    assert next(reader).body.read() == b"small"


def test_a_part_over_the_size_limit_is_skipped_and_flagged():
    got = list(parts(io.BytesIO(body(b"x" * 100, b"ok")), BOUNDARY, max_part_size=50))
    assert [(part.truncated, part.size) for part in got] == [(True, 100), (False, 2)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"no boundary at all", "no boundary"),
        (f"--{BOUNDARY}\r\n\r\nunfinished".encode(), "ends inside a part"),
        (f"--{BOUNDARY}\r\nContent-Type: application/dicom".encode(), "inside a part's headers"),
        (f"--{BOUNDARY}\r\nnot a header\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "malformed"),
        (f"--{BOUNDARY}xyz\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "other text"),
        (f"--{BOUNDARY}\r\n\r\nx\r\n--{BOUNDARY}".encode(), "no closing"),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(data, message):
    with pytest.raises(MultipartError, match=message):
        read_all(Trickle(data, (2,)), chunk_size=2)


def test_media_types_with_quoted_and_unquoted_parameters():
    assert media_type('Multipart/Related; type="application/dicom"; boundary="a:b=c"') == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "a:b=c"},
    )
    assert media_type("multipart/related;type=application/dicom;boundary=xyz") == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "xyz"},
    )
    assert media_type("") == ("", {})

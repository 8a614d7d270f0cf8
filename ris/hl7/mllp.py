"""MLLP framing: HL7 v2 messages over a TCP byte stream.

HL7 Transport Specification MLLP Release 2, "Block Format" (also HL7 v2.5.1 Appendix C.4):
every message travels as <SB> payload <EB><CR>, with SB = VT (0x0B), EB = FS (0x1C) and
CR = 0x0D; the payload never holds SB or EB. TCP cuts the stream anywhere, so `Decoder`
is fed chunks as they arrive and hands back whole payloads. Django stays out.

How the decoder reads a stream that does not keep to the format (the spec says nothing):

- Bytes outside a frame (before an SB) are dropped and reported as `Skipped`; the CR or
  LF some senders put between frames shows up as `Skipped` with `blank` set.
- A frame ends at EB. The CR after it is consumed when it comes, never waited for: a
  sender that omits it (the next byte is SB, or nothing until it has our ACK) is still
  answered. Any other byte after EB is outside a frame.
- An SB inside a frame means the sender gave that frame up and started again: the
  unfinished bytes are dropped (`Skipped`, `unfinished` set) and a new frame begins.
- A frame longer than `max_size` is not buffered: its bytes are dropped as they come and
  it is reported as `Oversize` when its EB arrives, so that it is answered (with AR) in
  its place in the stream. One SB-to-EB frame therefore always yields exactly one event
  (payload or `Oversize`); memory stays below `max_size` plus one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"  # SB, VT
END_BLOCK = b"\x1c"  # EB, FS
CARRIAGE_RETURN = b"\x0d"

# The beginning of an oversize frame kept so its answer can name it (MSH-10).
HEAD_BYTES = 4096
_BLANK = b" \t\r\n"


def frame(payload: bytes) -> bytes:
    """`payload` in an MLLP block: <SB> payload <EB><CR>.

    ValueError if the payload holds SB or EB, which MLLP forbids in the content."""
    if START_BLOCK in payload or END_BLOCK in payload:
        raise ValueError("An MLLP payload must not contain the SB (0x0B) or EB (0x1C) byte.")
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


@dataclass(frozen=True)
class Oversize:
    """A frame of `size` bytes, more than the limit, dropped; `head` is its first
    HEAD_BYTES bytes."""

    size: int
    head: bytes


@dataclass(frozen=True)
class Skipped:
    """`count` bytes dropped: outside any frame, or (`unfinished`) a frame given up for a
    new SB. `blank`: only whitespace (CR/LF between frames), not worth a warning."""

    count: int
    blank: bool = False
    unfinished: bool = False


Event = bytes | Oversize | Skipped


class Decoder:
    """Incremental MLLP decoder: `feed(chunk)` returns the events the chunk completes, in
    stream order: a payload (bytes) per frame, `Oversize` or `Skipped`."""

    def __init__(self, max_size: int = 4 * 1024 * 1024) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self._buffer = bytearray()
        self._in_frame = False
        self._oversize: int | None = None  # in a frame too big: its bytes seen so far
        self._head = b""
        self._after_end = False  # the last byte was EB: a CR now belongs to the trailer

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held (or, if oversize, seen): lost if the
        connection ends now."""
        if not self._in_frame:
            return 0
        return len(self._buffer) if self._oversize is None else self._oversize

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        position, size = 0, len(data)
        while position < size:
            if self._after_end:
                self._after_end = False
                if data[position] == CARRIAGE_RETURN[0]:
                    position += 1
                    continue
            if not self._in_frame:
                start = data.find(START_BLOCK, position)
                end = size if start < 0 else start
                if end > position:
                    blank = not data[position:end].strip(_BLANK)
                    events.append(Skipped(end - position, blank=blank))
                if start < 0:
                    break
                self._in_frame = True
                position = start + 1
                continue
            stop = data.find(END_BLOCK, position)
            restart = data.find(START_BLOCK, position, size if stop < 0 else stop)
            end = restart if restart >= 0 else (stop if stop >= 0 else size)
            self._take(data, position, end)
            if restart >= 0:
                events.append(Skipped(self.pending + 1, unfinished=True))  # with its SB
                self._reset()
                self._in_frame = True
                position = restart + 1
            elif stop >= 0:
                if self._oversize is None:
                    events.append(bytes(self._buffer))
                else:
                    events.append(Oversize(self._oversize, self._head))
                self._reset()
                self._after_end = True
                position = stop + 1
            else:
                position = size
        return events

    def _take(self, data: bytes, start: int, end: int) -> None:
        """Add data[start:end] to the current frame, or only count it once too big."""
        length = end - start
        if self._oversize is None and len(self._buffer) + length > self.max_size:
            self._head = bytes(self._buffer[:HEAD_BYTES])
            self._oversize = len(self._buffer)
            self._buffer = bytearray()
        if self._oversize is None:
            self._buffer += memoryview(data)[start:end]
        else:
            self._oversize += length
            if len(self._head) < HEAD_BYTES:
                self._head += data[start : min(end, start + HEAD_BYTES - len(self._head))]

    def _reset(self) -> None:
        self._buffer = bytearray()
        self._in_frame = False
        self._oversize = None
        self._head = b""

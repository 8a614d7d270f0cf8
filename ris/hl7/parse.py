"""Reading HL7 v2 messages in ER7 (pipe) encoding.

Bytes become text in the character set MSH-18 names (HL7 v2.5.1 2.15.9.18: ASCII,
8859/1, UNICODE UTF-8), split into segments; `Segment.value` splits out one field,
repetition, component and subcomponent when asked and decodes the escape sequences of
2.7.4. Django stays out: these run in the listener for every message, and in tests
in microseconds.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

# Versions whose ADT and order messages we read (the fields we use kept their places).
SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})

# MSH-18 values (HL7 table 0211) and the Python codec of each; empty means ASCII, which
# real senders stretch to UTF-8 or Latin-1, so that case is decoded leniently.
CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "iso8859-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
}

# HL7 table 0357, the error codes an ERR segment carries.
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION_ID = 203
UNKNOWN_KEY_IDENTIFIER = 204
DUPLICATE_KEY_IDENTIFIER = 205
APPLICATION_RECORD_LOCKED = 206
APPLICATION_INTERNAL_ERROR = 207

_HEX = re.compile(r"[0-9A-Fa-f]+")


class Hl7Error(Exception):
    """A message that cannot be taken as it is: its reason, where (e.g. "PID-3"), the
    table 0357 error code, and the acknowledgement code it earns (AR: the envelope is not
    acceptable; AE: the content is in error). `replayable`: refused on receipt for now,
    but kept as failed to apply later (e.g. a cancel of an order that has not come yet)."""

    def __init__(
        self,
        reason: str,
        *,
        location: str = "",
        error_code: int = APPLICATION_INTERNAL_ERROR,
        ack_code: str = "AE",
        replayable: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.location = location
        self.error_code = error_code
        self.ack_code = ack_code
        self.replayable = replayable


@dataclass(frozen=True)
class Header:
    """MSH, as the listener needs it to file and acknowledge the message."""

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    sent_at: str = ""
    message_code: str = ""
    trigger_event: str = ""
    structure: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    accept_ack_type: str = ""
    application_ack_type: str = ""
    charset: str = ""

    @property
    def message_type(self) -> str:
        """ "ADT^A01"; "ACK" when the trigger is absent."""
        return "^".join(part for part in (self.message_code, self.trigger_event) if part)

    @property
    def enhanced_mode(self) -> bool:
        """Whether the sender asked for enhanced acknowledgement (MSH-15/16 valued)."""
        return bool(self.accept_ack_type or self.application_ack_type)


@dataclass
class Segment:
    """One segment: `value(3, component=4)` reads PID-3.4 of the first repetition.

    Split on demand, field by field: a message is read for a handful of fields (the
    listener reads MSH and PID on every message), so splitting all of it up front, as
    python-hl7 does, cost more than the rest of the receipt. The values read are those
    python-hl7's containers give (tests/hl7/test_parse.py compares the two).
    """

    name: str
    _text: str
    _message: Message = field(repr=False)
    _fields: list[str] | None = field(default=None, repr=False)

    def fields(self) -> list[str]:
        """The segment's fields, indexed as HL7 numbers them (0 is the name; for MSH, 1 is
        the field separator and 2 the encoding characters)."""
        if self._fields is None:
            header = self._message.header
            parts = self._text.split(header.field_separator)
            if self.name == "MSH":
                parts.insert(1, header.field_separator)
            self._fields = parts
        return self._fields

    def value(
        self, field_number: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
    ) -> str:
        """One value, escapes decoded; "" when absent (HL7 treats absent and empty alike
        for reading; `is_null` tells the explicit null "" apart)."""
        raw = self.raw(field_number, component, subcomponent, repetition)
        return "" if raw == '""' else self._message.unescape(raw)

    def raw(
        self, field_number: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
    ) -> str:
        """The value as sent, escapes and all."""
        fields = self.fields()
        if field_number >= len(fields):
            return ""
        text = fields[field_number]
        if self.name == "MSH" and field_number in (1, 2):
            # MSH-1 is the field separator itself, MSH-2 the encoding characters.
            return text
        component_separator, repetition_separator, _escape, subcomponent_separator = (
            self._message.header.encoding_characters
        )
        # A value with no separator in it is one value, whatever part of it is asked
        # for beyond the first (python-hl7 keeps it as a plain string at that level).
        if not (
            repetition_separator in text
            or component_separator in text
            or subcomponent_separator in text
        ):
            return text if repetition == 1 and component == 1 else ""
        repetitions = text.split(repetition_separator)
        if repetition > len(repetitions):
            return ""
        text = repetitions[repetition - 1]
        if not (component_separator in text or subcomponent_separator in text):
            return text if component == 1 and subcomponent == 1 else ""
        components = text.split(component_separator)
        if component > len(components):
            return ""
        subcomponents = components[component - 1].split(subcomponent_separator)
        return subcomponents[subcomponent - 1] if subcomponent <= len(subcomponents) else ""

    def repetitions(self, field_number: int) -> int:
        """How many repetitions the field has (0 when empty)."""
        fields = self.fields()
        if field_number >= len(fields) or not fields[field_number]:
            return 0
        if self.name == "MSH" and field_number in (1, 2):
            return 1
        return fields[field_number].count(self._message.header.encoding_characters[1]) + 1

    def is_null(self, field_number: int, component: int = 1) -> bool:
        """The explicit null "" (HL7 2.5.1 2.5.3: delete the value at the receiver)."""
        return self.raw(field_number, component) == '""'

    def __str__(self) -> str:
        return self._text


@dataclass
class Message:
    """A decoded message: its header and segments in order."""

    text: str
    header: Header
    segments: list[Segment]

    def segment(self, name: str) -> Segment | None:
        """The first segment of that name, or None."""
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def unescape(self, value: str) -> str:
        """Escape sequences of HL7 v2.5.1 2.7.4 decoded: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ become
        the delimiters, \\Xhh..\\ the bytes in the message's charset, \\.br\\ a line break;
        formatting (\\H\\ \\N\\, \\.sp\\ ...) and charset switches are dropped."""
        escape = self.header.encoding_characters[2:3] or "\\"
        if escape not in value:
            return value
        fs = self.header.field_separator
        cs, rs, _, ss = (self.header.encoding_characters + "^~\\&")[:4]
        delimiters = {"F": fs, "S": cs, "T": ss, "R": rs, "E": escape}
        out: list[str] = []
        rest = value
        while rest:
            start = rest.find(escape)
            if start < 0:
                out.append(rest)
                break
            end = rest.find(escape, start + 1)
            if end < 0:  # an unpaired escape character: keep it as text
                out.append(rest)
                break
            out.append(rest[:start])
            sequence = rest[start + 1 : end]
            rest = rest[end + 1 :]
            if sequence in delimiters:
                out.append(delimiters[sequence])
            elif sequence.startswith("X") and _HEX.fullmatch(sequence[1:] or "-"):
                hex_digits = sequence[1:]
                if len(hex_digits) % 2 == 0:
                    out.append(bytes.fromhex(hex_digits).decode(self.codec, errors="replace"))
            elif sequence == ".br":
                out.append("\n")
            # \H\ \N\ \.sp\ \.in\ \Cxxyy\ \Mxxyyzz\ \Zxx\: formatting and charset switches.
        return "".join(out)

    @property
    def codec(self) -> str:
        return CHARSETS.get(self.header.charset.upper(), "utf-8")


def normalize(raw: bytes) -> bytes:
    """Segments end in CR (2.5.1 2.8); senders that end them in LF or CRLF are read too,
    and a trailing CR or LF does not make an empty segment."""
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")


def decode(raw: bytes) -> tuple[str, str]:
    """The message's text and the MSH-18 it names, read from the MSH bytes before decoding
    (MSH itself is ASCII). A declared charset the bytes do not fit is an error; with none
    declared, UTF-8 is tried and then Latin-1, the two real senders use."""
    raw = normalize(raw)
    charset = ""
    if raw.startswith(b"MSH") and len(raw) > 3:
        separator = raw[3:4]
        msh = raw.split(b"\r", 1)[0].split(separator)
        if len(msh) > 17:
            charset = msh[17].split(b"^", 1)[0].decode("ascii", errors="replace").strip()
            # A repeated MSH-18 (several charsets): the first is the message's default.
            charset = charset.split("~", 1)[0]
    codec = CHARSETS.get(charset.upper())
    if charset and codec is None:
        raise Hl7Error(
            f"Character set {charset!r} (MSH-18) is not supported; "
            "send ASCII, 8859/1 or UNICODE UTF-8.",
            location="MSH-18",
            error_code=TABLE_VALUE_NOT_FOUND,
            ack_code="AR",
        )
    if codec is None or codec == "ascii":
        try:
            return raw.decode("utf-8"), charset
        except UnicodeDecodeError:
            return raw.decode("iso8859-1"), charset
    try:
        return raw.decode(codecs.lookup(codec).name), charset
    except UnicodeDecodeError as error:
        raise Hl7Error(
            f"The message is not valid {charset} (MSH-18): byte {error.start} cannot be read.",
            location="MSH-18",
            error_code=DATA_TYPE_ERROR,
            ack_code="AR",
        ) from error


def parse(raw: bytes) -> Message:
    """Decode and split a message; Hl7Error (AR) when it is not HL7 with an MSH first."""
    text, charset = decode(raw)
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Error(
            "Not an HL7 v2 message: it must begin with an MSH segment.",
            location="MSH",
            error_code=SEGMENT_SEQUENCE_ERROR,
            ack_code="AR",
        )
    field_separator = text[3]
    encoding = text[4:].split(field_separator, 1)[0]
    if field_separator.isalnum() or len(encoding) < 4 or len(set(encoding[:4])) < 4:
        raise Hl7Error(
            "MSH-1/MSH-2 must give the field separator and four distinct encoding "
            "characters, e.g. MSH|^~\\&.",
            location="MSH-2",
            error_code=DATA_TYPE_ERROR,
            ack_code="AR",
        )
    message = Message(text=text, header=Header(), segments=[])
    message.header = Header(field_separator=field_separator, encoding_characters=encoding[:4])
    for segment_text in text.split("\r"):
        name = segment_text.split(field_separator, 1)[0]
        if not name:
            continue
        message.segments.append(Segment(name=name, _text=segment_text, _message=message))
    msh = message.segments[0]
    message.header = Header(
        field_separator=field_separator,
        encoding_characters=encoding[:4],
        sending_application=msh.value(3),
        sending_facility=msh.value(4),
        receiving_application=msh.value(5),
        receiving_facility=msh.value(6),
        sent_at=msh.value(7),
        message_code=msh.value(9, 1).upper(),
        trigger_event=msh.value(9, 2).upper(),
        structure=msh.value(9, 3).upper(),
        control_id=msh.value(10),
        processing_id=msh.value(11),
        version=msh.value(12),
        accept_ack_type=msh.value(15).upper(),
        application_ack_type=msh.value(16).upper(),
        charset=charset,
    )
    return message

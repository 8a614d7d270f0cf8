"""Acknowledgements (HL7 v2.5.1 2.9): the ACK we answer every message with.

Original mode (MSH-15/16 empty): one ACK with AA, AE or AR. Enhanced mode: the accept
acknowledgement (CA, CE, CR) goes back on the connection when MSH-15 asks for it; the
application acknowledgement, if MSH-16 asks, is a message of its own sent later.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import re

from ris.hl7.parse import Header

# MSA-1 codes, HL7 table 0008.
ACCEPT = "AA"
ERROR = "AE"
REJECT = "AR"
COMMIT_ACCEPT = "CA"
COMMIT_ERROR = "CE"
COMMIT_REJECT = "CR"

_ENHANCED = {ACCEPT: COMMIT_ACCEPT, ERROR: COMMIT_ERROR, REJECT: COMMIT_REJECT}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+))?(?:\.(\d+))?(?:\.(\d+))?$")
_ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


def control_id() -> str:
    """A fresh message control id (MSH-10): 20 characters, as ST allowed in v2.3; 80
    random bits. From `random`, not `uuid4`: no system call on the listener's path for
    each ACK, and `random` is seeded again in each forked process."""
    return f"{random.getrandbits(80):020X}"


@functools.lru_cache(maxsize=8)
def _special(delimiters: str) -> re.Pattern[str]:
    return re.compile(f"[{re.escape(delimiters)}\r\n\x00-\x08\x0b-\x1f\x7f]")


def escape(text: str, header: Header | None = None) -> str:
    """Text made safe inside a field (2.7.4): delimiters become escape sequences and
    line breaks \\.br\\."""
    fs = header.field_separator if header else "|"
    cs, rs, esc, ss = (header.encoding_characters if header else "^~\\&")[:4]
    if not _special(fs + cs + rs + esc + ss).search(text):
        return text  # most values: nothing to escape
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((fs, "F"), (cs, "S"), (ss, "T"), (rs, "R")):
        out = out.replace(char, f"{esc}{code}{esc}")
    out = out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{esc}.br{esc}")
    # Other control characters (MLLP's VT and FS among them) as hexadecimal escapes.
    return _CONTROL.sub(lambda match: f"{esc}X{ord(match.group()):02X}{esc}", out)


def wanted(header: Header, code: str) -> bool:
    """Whether an acknowledgement goes back on the connection at all: always in
    original mode; in enhanced mode as MSH-15 says (AL, NE, ER, SU; empty means AL)."""
    if not header.enhanced_mode:
        return True
    accept = header.accept_ack_type or "AL"
    if accept == "NE":
        return False
    if accept == "ER":
        return code != ACCEPT
    if accept == "SU":
        return code == ACCEPT
    return True


def build(
    header: Header | None,
    code: str,
    *,
    reason: str = "",
    location: str = "",
    error_code: int = 0,
    our_application: str = "RADPACS",
    now: dt.datetime | None = None,
    enhanced: bool | None = None,
    message_control_id: str = "",
) -> str:
    """The ACK for a message whose header is `header` (None when even MSH could not be
    read). `code` is AA/AE/AR; in enhanced mode it becomes CA/CE/CR."""
    header = header or Header()
    if enhanced is None:
        enhanced = header.enhanced_mode
    msa_code = _ENHANCED.get(code, code) if enhanced else code
    version = header.version or "2.5.1"
    modern = _version_at_least(version, "2.4")
    trigger = header.trigger_event
    message_type = "ACK" if not trigger else (f"ACK^{trigger}^ACK" if modern else f"ACK^{trigger}")
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")
    fs = header.field_separator
    msh = fs.join(
        [
            "MSH",
            header.encoding_characters,
            escape(header.receiving_application or our_application, header),
            escape(header.receiving_facility, header),
            escape(header.sending_application, header),
            escape(header.sending_facility, header),
            stamp,
            "",
            message_type,
            message_control_id or control_id(),
            escape(header.processing_id or "P", header),
            escape(version, header),
        ]
    )
    if header.charset:
        msh += fs * 6 + escape(header.charset, header)
    msa = fs.join(["MSA", msa_code, escape(header.control_id, header)])
    if reason and not modern:
        msa += fs + escape(reason[:80], header)  # MSA-3, the text of versions before 2.4
    segments = [msh, msa]
    if code != ACCEPT or error_code:
        segments.append(_err(header, reason, location, error_code or 207, modern))
    return "\r".join(segments) + "\r"


def _err(header: Header, reason: str, location: str, error_code: int, modern: bool) -> str:
    fs = header.field_separator
    cs, _, _, ss = header.encoding_characters[:4]
    where = _location_parts(location)
    text = _ERROR_TEXT.get(error_code, "Application error")
    if not modern:
        # v2.3/2.4 ERR-1 (ELD): segment^sequence^field^code&text&table
        eld = cs.join([*where[:3], ss.join([str(error_code), text, "HL70357"])])
        return fs.join(["ERR", eld])
    erl = cs.join(where).rstrip(cs)
    code = cs.join([str(error_code), text, "HL70357"])
    severity = "E"
    fields = ["ERR", "", erl, code, severity, "", "", "", escape(reason, header)]
    return fs.join(fields)


def _location_parts(location: str) -> list[str]:
    """ "PID-3.1" → ["PID", "1", "3", "", "1"]: ERL segment, sequence, field, repetition,
    component."""
    match = _LOCATION.match(location or "")
    if not match:
        return ["", "", "", "", ""]
    segment, sequence, field, component, subcomponent = match.groups()
    parts = [segment, sequence or "1", field or "", "1" if field else "", component or ""]
    if subcomponent:
        parts.append(subcomponent)
    return parts


def _version_at_least(version: str, floor: str) -> bool:
    def key(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", text)[:3]) or (0,)

    return key(version) >= key(floor)

"""The ingest's header read for explicit VR little endian files, element by element.

Profiling C-STORE showed pydicom's header read and its DICOM JSON taking over half of
the archive's Python time per instance: every element becomes a RawDataElement, then a
DataElement, then a JSON dict. Yet the instances of one series repeat most of their
elements byte for byte (patient, study, equipment, geometry). So here the top-level
elements are walked straight from the bytes, and each element's JSON text is made by
pydicom itself (`convert_raw_data_element`, `DataElement.to_json_dict`) but only once
per distinct (character set, tag, VR, value bytes): the next slice of the series finds
most of its elements in the cache and converts only what differs.

The result must be the JSON and identity `parse.read_header` + `parse.instance_json`
give, and it is checked against them on pydicom's whole test corpus. Anything this
walk does not handle exactly the same way (implicit VR, big endian, deflate, an UN
element, odd lengths or order, a value pydicom cannot convert) returns None, and the
caller takes the full pydicom path, which accepts or refuses the file as before.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR

PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UR", b"UT", b"UV"}
)
SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Values up to this size never become a BulkDataURI (pydicom: more than 3/4 of the
# 1,024-byte base64 threshold), so their JSON does not depend on the instance.
CACHEABLE = 768
IDENTITY_TAGS = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
}
INTEGER_TAGS = {
    0x00200013: "InstanceNumber",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280008: "NumberOfFrames",
}
SPECIFIC_CHARACTER_SET = 0x00080005


class Unsupported(Exception):
    """Not for this walk: the full pydicom path decides."""


def _element_header(data: bytes, position: int, size: int) -> tuple[int, bytes, int, int]:
    """(tag, VR, value length, value start) of an explicit VR little endian element."""
    if position + 8 > size:
        raise Unsupported
    group, element = struct.unpack_from("<HH", data, position)
    vr = data[position + 4 : position + 6]
    if vr in SHORT_VRS:
        return (
            group << 16 | element,
            vr,
            struct.unpack_from("<H", data, position + 6)[0],
            position + 8,
        )
    if vr in LONG_VRS:
        if position + 12 > size:
            raise Unsupported
        return (
            group << 16 | element,
            vr,
            struct.unpack_from("<I", data, position + 8)[0],
            position + 12,
        )
    raise Unsupported  # UN, a delimiter or an unknown VR


def _item_end(data: bytes, position: int, size: int) -> int:
    """Where the elements of an undefined-length item end (at its delimiter)."""
    while True:
        if position + 8 > size:
            raise Unsupported
        group, element, length = struct.unpack_from("<HHI", data, position)
        if group << 16 | element == ITEM_END:
            return position
        _tag, vr, length, start = _element_header(data, position, size)
        if length == UNDEFINED:
            if vr != b"SQ":
                raise Unsupported
            position = _sequence_end(data, start, size) + 8
        elif start + length > size:
            raise Unsupported
        else:
            position = start + length


def _sequence_end(data: bytes, position: int, size: int) -> int:
    """Where the items of an undefined-length sequence end (at its delimiter)."""
    while True:
        if position + 8 > size:
            raise Unsupported
        group, element, length = struct.unpack_from("<HHI", data, position)
        tag = group << 16 | element
        if tag == SEQUENCE_END:
            return position
        if tag != ITEM:
            raise Unsupported
        position += 8
        if length == UNDEFINED:
            position = _item_end(data, position, size) + 8
        elif position + length > size:
            raise Unsupported
        else:
            position += length


@functools.lru_cache(maxsize=64)
def _encodings(character_set: bytes) -> Any:
    if not character_set:
        return default_encoding
    values = character_set.decode(default_encoding).rstrip(" \x00").split("\\")
    return convert_encodings(values[0] if len(values) == 1 else values)


def _element_json(
    character_set: bytes, tag: int, vr: bytes, value: bytes, offset: int, bulk_uri: str | None
) -> str:
    encoding = default_encoding if tag == SPECIFIC_CHARACTER_SET else _encodings(character_set)
    raw = RawDataElement(BaseTag(tag), vr.decode("ascii"), len(value), value, offset, False, True)
    element = convert_raw_data_element(raw, encoding=encoding, ds=None)
    if element.VR in AMBIGUOUS_VR:
        raise Unsupported  # pydicom corrects these with the dataset in hand
    document = element.to_json_dict(
        # As parse.instance_json names them: by the tag of the element, nested or not.
        bulk_data_element_handler=(
            (lambda element: f"{bulk_uri}/bulkdata/{element.tag:08X}") if bulk_uri else None
        ),
        bulk_data_threshold=1024,
    )
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


_cached_element_json = functools.lru_cache(maxsize=16384)(_element_json)


def read(data: bytes, bulk_uri_base: Callable[[str, str, str], str]) -> dict[str, Any] | None:
    """The identity, index values and DICOM JSON of an explicit VR little endian Part 10
    file, or None when the full pydicom path must read it. `bulk_uri_base(study,
    series, instance)` is where the instance's bulk data URIs start."""
    try:
        return _read(data, bulk_uri_base)
    except (Unsupported, struct.error):
        return None
    except Exception:  # pydicom could not convert a value: let the full path say why
        return None


def _read(data: bytes, bulk_uri_base: Callable[[str, str, str], str]) -> dict[str, Any] | None:
    size = len(data)
    if size < 144 or data[128:132] != b"DICM":
        return None
    # File meta: (0002,0000) first, giving where the group ends.
    tag, vr, length, start = _element_header(data, 132, size)
    if tag != 0x00020000 or vr != b"UL" or length != 4:
        return None
    meta_end = start + 4 + struct.unpack_from("<I", data, start)[0]
    position, transfer_syntax = start + 4, ""
    while position < meta_end:
        tag, vr, length, start = _element_header(data, position, size)
        if tag >> 16 != 0x0002 or length == UNDEFINED or start + length > meta_end:
            return None
        if tag == 0x00020010:
            transfer_syntax = data[start : start + length].decode("ascii").rstrip("\x00 ")
        position = start + length
    if position != meta_end or not transfer_syntax:
        return None
    syntax = UID(transfer_syntax)
    if not syntax.is_transfer_syntax or syntax == DeflatedExplicitVRLittleEndian:
        return None
    if syntax.is_implicit_VR or not syntax.is_little_endian:
        return None

    elements: list[tuple[int, bytes, int, int]] = []
    previous = -1
    while position < size:
        tag, vr, length, start = _element_header(data, position, size)
        if tag in PIXEL_DATA_TAGS:
            break
        if tag <= previous or tag >> 16 in (0x0002, 0xFFFE):
            return None
        if length == UNDEFINED:
            if vr != b"SQ":
                return None
            end = _sequence_end(data, start, size)
            position = end + 8
        else:
            end = start + length
            if end > size:
                return None
            position = end
        elements.append((tag, vr, start, end))
        previous = tag
    header_end = position

    values = {tag: data[start:end] for tag, _vr, start, end in elements if tag in IDENTITY_TAGS}
    identity = {
        name: values.get(tag, b"").decode("ascii", "replace").rstrip("\x00 ")
        for tag, name in IDENTITY_TAGS.items()
    }
    bulk_base = bulk_uri_base(
        identity["study_instance_uid"],
        identity["series_instance_uid"],
        identity["sop_instance_uid"],
    )
    character_set = b""
    fragments: list[str] = []
    integers: dict[str, int | None] = dict.fromkeys(INTEGER_TAGS.values())  # absent: None
    for tag, vr, start, end in elements:
        value = data[start:end]
        if tag == SPECIFIC_CHARACTER_SET:
            character_set = value
        if end - start <= CACHEABLE:
            text = _cached_element_json(character_set, tag, vr, value, 0, None)
        else:
            text = _element_json(character_set, tag, vr, value, start, bulk_base)
        fragments.append(f'"{tag:08X}":{text}')
        if tag in INTEGER_TAGS:
            found = json.loads(text).get("Value")
            integers[INTEGER_TAGS[tag]] = found[0] if found and len(found) == 1 else None
    return {
        "transfer_syntax_uid": transfer_syntax,
        "header_end": header_end,
        "identity": identity,
        "integers": integers,
        "fragments": fragments,
    }

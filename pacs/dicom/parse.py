"""Reading what the archive needs from a DICOM Part 10 file, once, without pixel data.

Django-free so it can be tested in milliseconds. `read_header` parses the header
(everything before Pixel Data), checks the identifying attributes, and checks that
the bytes after the header are complete (a truncated file is refused, not stored).
"""

from __future__ import annotations

import functools
import io
import json
import mmap
import re
import struct
from dataclasses import dataclass, field
from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from pacs.dicom import rawheader

PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
# Bulk data (pixel data, waveforms, large binary values) is not put in the metadata;
# a BulkDataURI pointing at the instance's bulkdata resource stands in its place.
BULK_DATA_THRESHOLD = 1024
BULK_DATA_URI_PREFIX = "{+bulkdata}"  # replaced by the DICOMweb door with its absolute base URL

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class DicomParseError(ValueError):
    """The bytes are not an acceptable DICOM instance; the message says why."""


@dataclass(frozen=True)
class Header:
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    pixel_data_vr: str | None = None
    parsed: Dataset | None = field(default=None, repr=False)
    # Read by `rawheader` without a Dataset: the file, parsed only if asked, and the
    # integers every instance needs.
    data: bytes | None = field(default=None, repr=False)
    integers: dict[str, int | None] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def dataset(self) -> Dataset:
        if self.parsed is not None:
            return self.parsed
        return pydicom.dcmread(stream_of(self.data or b""), stop_before_pixels=True)

    def text(self, keyword: str, limit: int = 64) -> str:
        """A string attribute as stored in the index ('' when absent), cut to the column size."""
        value = self.dataset.get(keyword)
        if value is None or value == "":
            return ""
        if isinstance(value, pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        return str(value).strip()[:limit]

    def integer(self, keyword: str) -> int | None:
        if keyword in self.integers:
            return self.integers[keyword]
        value = self.dataset.get(keyword)
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None


def _valid_uid(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(UID_PATTERN.match(value))


def stream_of(data: bytes | mmap.mmap) -> IO[bytes]:
    """`data` to read as a file from its start: a mapped file (a received instance
    staged on disk) is one already, without a copy into memory."""
    if isinstance(data, mmap.mmap):
        data.seek(0)
        return data  # type: ignore[return-value]  # read, seek and tell: enough for pydicom
    return io.BytesIO(data)


def read_header(data: bytes | mmap.mmap) -> Header:
    """Parse a Part 10 file up to Pixel Data and check it is whole and identifiable."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise DicomParseError("not a DICOM Part 10 file (no 'DICM' preamble)")
    stream = stream_of(data)
    try:
        dataset = pydicom.dcmread(stream, stop_before_pixels=True)
        header_end = stream.tell()
        deflated = dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        if not deflated:
            _check_declared_lengths(dataset, len(data))
        # Touch every element so a bad value fails here, not later in a handler.
        for _ in dataset.iterall():
            pass
    except (
        InvalidDicomError,
        EOFError,
        ValueError,
        KeyError,
        struct.error,
        OverflowError,
    ) as error:
        raise DicomParseError(f"unreadable DICOM header: {error}") from error
    except MemoryError as error:
        raise DicomParseError("DICOM header claims an impossible element length") from error

    meta = dataset.file_meta
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if not _valid_uid(transfer_syntax):
        raise DicomParseError("file meta has no valid Transfer Syntax UID (0002,0010)")
    identity = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = dataset.get(keyword)
        if not _valid_uid(str(value) if value is not None else None):
            raise DicomParseError(f"missing or invalid {keyword}")
        identity[keyword] = str(value)
    # A Media Storage SOP Instance UID that differs from the dataset's is common in legacy
    # files; the dataset's UID is the identity (the DIMSE door checks it against the request).
    pixel_vr = None
    if transfer_syntax != DeflatedExplicitVRLittleEndian:
        check_tail_complete(data, header_end, transfer_syntax)
        pixel_vr = _pixel_data_vr(data, header_end, transfer_syntax, dataset)
    elif "PixelData" in dataset or header_end < len(data):
        pixel_vr = "OB" if dataset.get("BitsAllocated", 16) <= 8 else "OW"
    return Header(
        parsed=dataset,
        transfer_syntax_uid=transfer_syntax,
        sop_class_uid=identity["SOPClassUID"],
        sop_instance_uid=identity["SOPInstanceUID"],
        study_instance_uid=identity["StudyInstanceUID"],
        series_instance_uid=identity["SeriesInstanceUID"],
        pixel_data_vr=pixel_vr,
    )


def _pixel_data_vr(
    data: bytes, offset: int, transfer_syntax: str, dataset: Dataset | None
) -> str | None:
    """VR of the Pixel Data element the header parse stopped at, if it is there."""
    if offset + 8 > len(data):
        return None
    endian = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    group, element = struct.unpack_from(f"{endian}HH", data, offset)
    if (group << 16 | element) not in PIXEL_DATA_TAGS:
        return None
    if transfer_syntax == ImplicitVRLittleEndian and dataset is not None:
        return "OB" if dataset.get("BitsAllocated", 16) <= 8 else "OW"
    return data[offset + 4 : offset + 6].decode("ascii", "replace")


def _check_declared_lengths(dataset: Dataset, size: int) -> None:
    """pydicom reads a short value silently when a length runs past the end of the
    bytes; refuse such a header (a truncated file, or a forged 2 GB length)."""
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)
        length, value_tell = getattr(raw, "length", None), getattr(raw, "value_tell", None)
        if length is None or value_tell is None or length == UNDEFINED:
            continue
        if value_tell + length > size:
            raise DicomParseError(
                f"element ({tag.group:04X},{tag.element:04X}) declares {length} bytes, "
                f"{max(size - value_tell, 0)} remain"
            )


_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
UNDEFINED = 0xFFFFFFFF


def check_tail_complete(data: bytes, offset: int, transfer_syntax: str) -> None:
    """Walk the top-level elements after the header (Pixel Data and anything after it)
    and refuse the file when a declared length runs past its end (PS3.5 7.1)."""
    little = transfer_syntax != ExplicitVRBigEndian
    implicit = transfer_syntax == ImplicitVRLittleEndian
    endian = "<" if little else ">"
    size = len(data)
    position = offset
    while position < size:
        if position + 8 > size:
            raise DicomParseError("truncated: incomplete element header at end of file")
        group, element = struct.unpack_from(f"{endian}HH", data, position)
        if implicit:
            (length,) = struct.unpack_from(f"{endian}I", data, position + 4)
            position += 8
        else:
            vr = data[position + 4 : position + 6]
            if vr in _LONG_VRS:
                if position + 12 > size:
                    raise DicomParseError("truncated: incomplete element header at end of file")
                (length,) = struct.unpack_from(f"{endian}I", data, position + 8)
                position += 12
            else:
                (length,) = struct.unpack_from(f"{endian}H", data, position + 6)
                position += 8
        if length == UNDEFINED:
            position = _skip_undefined_length(data, position, endian)
            continue
        if position + length > size:
            tag = f"({group:04X},{element:04X})"
            raise DicomParseError(
                f"truncated: element {tag} declares {length} bytes, {size - position} remain"
            )
        position += length


def _skip_undefined_length(data: bytes, position: int, endian: str) -> int:
    """Skip items up to the Sequence Delimitation Item (encapsulated pixel data, PS3.5 A.4)."""
    size = len(data)
    while position + 8 <= size:
        group, element, length = struct.unpack_from(f"{endian}HHI", data, position)
        position += 8
        if (group, element) == (0xFFFE, 0xE0DD):
            return position
        if (group, element) != (0xFFFE, 0xE000):
            raise DicomParseError("malformed encapsulated data: expected an item tag")
        if length == UNDEFINED:
            position = _skip_undefined_length(data, position, endian)
            continue
        if position + length > size:
            raise DicomParseError("truncated: an encapsulated fragment runs past end of file")
        position += length
    raise DicomParseError("truncated: no sequence delimiter at end of encapsulated data")


def _bulk_base(study: str, series: str, instance: str) -> str:
    return f"{BULK_DATA_URI_PREFIX}/studies/{study}/series/{series}/instances/{instance}"


def read_instance(data: bytes) -> tuple[Header, str]:
    """`read_header` and `instance_json` in one: through `rawheader` (elements the
    series already had are not converted again) when it can read the file, else
    through pydicom. Same checks, same results, same errors."""
    fast = rawheader.read(data, _bulk_base)
    if fast is None:
        header = read_header(data)
        return header, instance_json(header)
    identity, syntax = fast["identity"], fast["transfer_syntax_uid"]
    if not (_valid_uid(syntax) and all(_valid_uid(uid) for uid in identity.values())):
        header = read_header(data)  # refuses it, saying which
        return header, instance_json(header)
    check_tail_complete(data, fast["header_end"], syntax)
    pixel_vr = _pixel_data_vr(data, fast["header_end"], syntax, None)
    header = Header(
        transfer_syntax_uid=syntax,
        pixel_data_vr=pixel_vr,
        data=data,
        integers=fast["integers"],
        **identity,
    )
    fragments = fast["fragments"]
    if pixel_vr:
        base = _bulk_base(
            *(
                identity[key]
                for key in ("study_instance_uid", "series_instance_uid", "sop_instance_uid")
            )
        )
        pixel = {"vr": pixel_vr, "BulkDataURI": f"{base}/bulkdata/7FE00010"}
        fragments = [*fragments, f'"7FE00010":{json.dumps(pixel, separators=(",", ":"))}']
    return header, "{" + ",".join(fragments) + "}"


def instance_json(header: Header) -> str:
    """The instance's DICOM JSON (PS3.18 F.2), bulk data as BulkDataURIs, as compact text.

    URIs start with BULK_DATA_URI_PREFIX; the DICOMweb door substitutes its absolute
    base, so the stored text is independent of the host and path prefix it is served on.
    """
    study, series, sop = (
        header.study_instance_uid,
        header.series_instance_uid,
        header.sop_instance_uid,
    )
    base = f"{BULK_DATA_URI_PREFIX}/studies/{study}/series/{series}/instances/{sop}"

    def bulk_uri(element: pydicom.DataElement) -> str:
        return f"{base}/bulkdata/{element.tag:08X}"

    try:
        document = header.dataset.to_json_dict(
            bulk_data_threshold=BULK_DATA_THRESHOLD, bulk_data_element_handler=bulk_uri
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise DicomParseError(f"cannot express the header as DICOM JSON: {error}") from error
    if header.pixel_data_vr:
        document["7FE00010"] = {
            "vr": header.pixel_data_vr,
            "BulkDataURI": f"{base}/bulkdata/7FE00010",
        }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

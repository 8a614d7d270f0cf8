"""Pixel data and other bulk data of a stored Part 10 file, one frame at a time.

Django-free. `open_pixels` parses the header (everything before Pixel Data) and finds
where the Pixel Data value starts; a frame is then read by offset (native data,
PS3.5 8.1.1) or through the offset tables and fragments (encapsulated data, PS3.5
A.4), and decoded alone: asking for one frame of a 120-frame cine reads and decodes
that frame only.

Two representations of a frame:

- `stored_frame`: as stored. The compressed bitstream of an encapsulated syntax, or
  the native bytes (little endian) of an uncompressed one.
- `native_frame`: decoded, little endian, Rows x Columns x Samples per Pixel x Bits
  Allocated / 8 bytes (bit-packed when Bits Allocated is 1), in the stored Planar
  Configuration and Photometric Interpretation, except YBR_FULL_422 (JPEG baseline),
  which comes as RGB, and YBR_ICT/YBR_RCT (JPEG 2000), which the decoder turns into RGB.

Big endian, deflated and bit-packed (Bits Allocated 1) data cannot be read by
offset; such files are read whole and their frames are always given decoded.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.pixels import get_decoder, pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

PIXEL_DATA = 0x7FE00010
# What a frame decoder needs to know besides the bytes (PS3.3 C.7.6.3).
_IMAGE_PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PlanarConfiguration",
)


class PixelDataError(ValueError):
    """The file has no usable pixel data, or a frame cannot be read or decoded."""


@dataclass
class PixelFile:
    """An open stored file: its header, and where its Pixel Data value starts."""

    dataset: Dataset  # the header, without Pixel Data
    transfer_syntax: UID
    number_of_frames: int
    handle: BinaryIO
    value_start: int = 0  # first byte of the Pixel Data value (the offset table if encapsulated)
    frame_length: int = 0  # bytes per native frame
    whole: Dataset | None = None  # the file read whole, when frames cannot be read by offset

    @property
    def encapsulated(self) -> bool:
        return self.whole is None and self.transfer_syntax.is_encapsulated

    @property
    def stored_syntax(self) -> str:
        """The transfer syntax of `stored_frame` bytes: the file's for compressed data,
        explicit VR little endian for native data (its bytes are little endian)."""
        return self.transfer_syntax if self.encapsulated else ExplicitVRLittleEndian

    @property
    def photometric_interpretation(self) -> str:
        return str(self.dataset.get("PhotometricInterpretation", "MONOCHROME2"))

    def check_index(self, index: int) -> None:
        if not 0 <= index < self.number_of_frames:
            raise PixelDataError(f"frame {index + 1} out of 1..{self.number_of_frames}")

    def stored_frame(self, index: int) -> bytes:
        """Frame `index` (from 0) as stored: compressed bitstream or native bytes."""
        self.check_index(index)
        if self.encapsulated:
            self.handle.seek(self.value_start)
            try:
                return get_frame(
                    self.handle,
                    index,
                    extended_offsets=self._extended_offsets(),
                    number_of_frames=self.number_of_frames,
                )
            except (ValueError, struct.error, EOFError) as error:
                raise PixelDataError(f"cannot find frame {index + 1}: {error}") from error
        if self.whole is not None:
            return self.native_frame(index)
        self.handle.seek(self.value_start + index * self.frame_length)
        data = self.handle.read(self.frame_length)
        if len(data) != self.frame_length:
            raise PixelDataError(f"frame {index + 1} is cut short in the stored file")
        return data

    def native_frame(self, index: int) -> bytes:
        """Frame `index` decoded, as little endian bytes (see the module docstring)."""
        if not self.encapsulated and self.whole is None:
            return self.stored_frame(index)
        pixels = self.frame_array(index, as_rgb=self.photometric_interpretation == "YBR_FULL_422")
        return self._native_bytes(pixels)

    def all_native_frames(self) -> bytes:
        """The whole Pixel Data value decoded (little endian)."""
        if self._bits_allocated == 1:  # frames need not end on a byte: pack them together
            arrays = [self.frame_array(i).ravel() for i in range(self.number_of_frames)]
            return pack_bits(np.concatenate(arrays))
        return b"".join(self.native_frame(i) for i in range(self.number_of_frames))

    def frame_array(self, index: int, *, as_rgb: bool = True) -> np.ndarray:
        """Frame `index` decoded alone: (rows, columns) or (rows, columns, samples).
        `as_rgb` converts YBR colour to RGB, as pydicom does."""
        self.check_index(index)
        try:
            if self.whole is not None:
                return pydicom.pixels.pixel_array(self.whole, index=index, as_rgb=as_rgb)
            single = self._single_frame_dataset(self.stored_frame(index))
            pixels, _ = get_decoder(single.file_meta.TransferSyntaxUID).as_array(
                single, index=0, as_rgb=as_rgb
            )
        except PixelDataError:
            raise
        except Exception as error:  # decoder plugins raise many types for bad data
            raise PixelDataError(f"cannot decode frame {index + 1}: {error}") from error
        return pixels

    @property
    def _bits_allocated(self) -> int:
        return int(self.dataset.get("BitsAllocated", 8) or 8)

    def _native_bytes(self, pixels: np.ndarray) -> bytes:
        if self._bits_allocated == 1:
            return pack_bits(pixels)
        samples = int(self.dataset.get("SamplesPerPixel", 1) or 1)
        if samples > 1 and int(self.dataset.get("PlanarConfiguration", 0) or 0) == 1:
            pixels = pixels.transpose(2, 0, 1)  # colour-by-plane, as the header says
        return pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()

    def _extended_offsets(self) -> tuple[bytes, bytes] | None:
        table = self.dataset.get("ExtendedOffsetTable")
        lengths = self.dataset.get("ExtendedOffsetTableLengths")
        if table and lengths:
            return bytes(table), bytes(lengths)
        return None

    def _single_frame_dataset(self, frame: bytes) -> Dataset:
        single = Dataset()
        single.file_meta = FileMetaDataset()
        single.file_meta.TransferSyntaxUID = self.stored_syntax
        for keyword in _IMAGE_PIXEL_KEYWORDS:
            if keyword in self.dataset:
                setattr(single, keyword, self.dataset[keyword].value)
        single.NumberOfFrames = 1
        single.PixelData = encapsulate([frame]) if self.encapsulated else frame
        return single


def open_pixels(source: bytes | BinaryIO) -> PixelFile:
    """Parse the header of a Part 10 file and find its Pixel Data. The handle must stay
    open while frames are read."""
    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        dataset = pydicom.dcmread(handle, stop_before_pixels=True)
        header_end = handle.tell()
    except Exception as error:  # pydicom raises many types for broken files
        raise PixelDataError(f"unreadable DICOM: {error}") from error
    syntax = UID(str(dataset.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
    frames = _number_of_frames(dataset)
    if not all(keyword in dataset for keyword in ("Rows", "Columns", "BitsAllocated")):
        raise PixelDataError("no pixel data (no image pixel module)")
    frame_length = _native_frame_length(dataset)
    by_offset = syntax.is_encapsulated or (
        syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and frame_length
    )
    if not by_offset:  # big endian, deflated, bit-packed
        handle.seek(0)
        try:
            whole = pydicom.dcmread(handle)
        except Exception as error:
            raise PixelDataError(f"unreadable DICOM: {error}") from error
        if "PixelData" not in whole:
            raise PixelDataError("no pixel data")
        return PixelFile(dataset, syntax, frames, handle, whole=whole)
    handle.seek(header_end)
    head = handle.read(8)
    if len(head) < 8 or struct.unpack("<HH", head[:4]) != (0x7FE0, 0x0010):
        raise PixelDataError("no pixel data")
    explicit = syntax != ImplicitVRLittleEndian
    start = header_end + (12 if explicit else 8)
    return PixelFile(dataset, syntax, frames, handle, start, frame_length or 0)


def _native_frame_length(dataset: Dataset) -> int | None:
    """Bytes per frame of native data; None when frames do not end on a byte."""
    try:
        bits = int(dataset.Rows) * int(dataset.Columns) * int(dataset.BitsAllocated)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        return None
    if str(dataset.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # two chroma samples per two pixels (PS3.3 C.7.6.3.1.2)
    bits *= samples
    return bits // 8 if bits and bits % 8 == 0 and dataset.BitsAllocated % 8 == 0 else None


def _number_of_frames(dataset: Dataset) -> int:
    try:
        return max(int(dataset.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def element_value(source: BinaryIO, tag: int) -> bytes | None:
    """The value bytes (little endian) of the element `tag` other than Pixel Data: at the
    top level, else the first one nested in a sequence; None when the file has none."""
    try:
        dataset = pydicom.dcmread(source, stop_before_pixels=tag < PIXEL_DATA)
        element = dataset.get_item(tag) if tag in dataset else None
        if element is None:
            element = next((e for e in dataset.iterall() if e.tag == tag), None)
        if element is None:
            return None
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, True
        write_data_element(out, element)
    except Exception as error:  # pydicom raises many types for broken files
        raise PixelDataError(
            f"cannot read ({tag >> 16:04X},{tag & 0xFFFF:04X}): {error}"
        ) from error
    return out.getvalue()[8:]  # after the implicit VR tag and length

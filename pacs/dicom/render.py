"""Rendering a DICOM frame to an 8-bit picture: thumbnails and WADO-RS /rendered.

Order of operations per PS3.4 N.2 (grayscale pipeline): modality LUT (rescale),
VOI LUT (window), presentation (MONOCHROME1 inverted). Colour images are taken as
RGB (pydicom converts YBR); palette colour goes through its lookup table.

Only the asked frame is read and decoded (`pixeldata.PixelFile`) and the picture is
encoded by Pillow. Windowing is done in float32 numpy; for a native grayscale frame
with a known window, it is done once per possible stored value instead, into a lookup
table (`_display_table`) that the frame's bytes index: a 512 x 512 CT frame renders
in about a millisecond.
"""

from __future__ import annotations

import functools
import io
from typing import NamedTuple

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import ExplicitVRLittleEndian

from pacs.dicom.pixeldata import PixelDataError, PixelFile, open_pixels

WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")


class RenderError(PixelDataError):
    """The pixel data cannot be decoded or is not an image."""


class Window(NamedTuple):
    """A VOI window (PS3.3 C.11.2.1.2): center, width and function."""

    center: float
    width: float
    function: str = "linear"


def frame_pixels(dataset: Dataset, frame: int = 0) -> np.ndarray:
    """One frame's pixels of a dataset read whole (decoded when compressed)."""
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for missing decoders/bad data
        raise RenderError(f"cannot decode pixel data: {error}") from error
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        if not 0 <= frame < frames:
            raise RenderError(f"frame {frame + 1} out of 1..{frames}")
        pixels = pixels[frame]
    if pixels.ndim not in (2, 3) or (samples == 1 and pixels.ndim != 2):
        raise RenderError("not a 2-D image")
    return pixels


def to_8bit(
    dataset: Dataset,
    pixels: np.ndarray,
    window: Window | tuple[float, float] | None = None,
) -> np.ndarray:
    """Display values 0..255: grayscale through rescale and window, colour as RGB.

    Without a window, the file's first Window Center/Width (and VOI LUT Function) or
    VOI LUT is used, else the 0.5..99.5 percentile range of the frame."""
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, dataset)
        peak = float(rgb.max()) or 1.0
        return (rgb.astype(np.float32) * (255.0 / peak if peak > 255 else 1.0)).astype(np.uint8)
    if pixels.ndim == 3:  # RGB (pydicom has already converted YBR)
        if pixels.dtype != np.uint8:
            peak = float(pixels.max()) or 1.0
            return (pixels.astype(np.float32) * (255.0 / peak)).astype(np.uint8)
        return pixels
    values = _modality_values(dataset, pixels)
    if window is None:
        window = _file_window(dataset)
    if window is None and "VOILUTSequence" in dataset:
        values = apply_voi_lut(values, dataset, index=0).astype(np.float32)
        low, high = float(values.min()), float(values.max())
        window = Window((low + high) / 2, max(high - low, 1.0), "linear-exact")
    if window is None:
        low, high = np.percentile(values, (0.5, 99.5))
        window = Window((low + high) / 2, max(float(high - low), 1.0), "linear-exact")
    display = _apply_window(values, Window(*window))
    if photometric == "MONOCHROME1":
        display = 255 - display
    return display


def _modality_values(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    """Stored values through the modality LUT, as float32 (rescale done in numpy)."""
    if "ModalityLUTSequence" in dataset:
        return apply_modality_lut(pixels, dataset).astype(np.float32)
    values = pixels.astype(np.float32)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    if slope != 1:
        values *= slope
    if intercept:
        values += intercept
    return values


def _file_window(dataset: Dataset) -> Window | None:
    """The file's first window, when it has a usable one."""
    values = []
    for keyword in ("WindowCenter", "WindowWidth"):
        value = dataset.get(keyword)
        if isinstance(value, MultiValue | list | tuple):
            value = value[0] if len(value) else None
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            return None
    function = str(dataset.get("VOILUTFunction", "") or "LINEAR").lower().replace("_", "-")
    if values[1] <= 0 or function not in WINDOW_FUNCTIONS:
        return None
    return Window(values[0], values[1], function)


def _apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """The VOI LUT functions of PS3.3 C.11.2.1.2 onto 0..255."""
    center, width = float(window.center), float(window.width)
    if window.function == "sigmoid":
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
    elif window.function == "linear-exact":
        scaled = (values - center) / max(width, 1e-6) + 0.5
    elif width <= 1:  # linear with width 1 is a threshold
        scaled = (values > center - 0.5).astype(np.float32)
    else:
        scaled = (values - (center - 0.5)) / (width - 1) + 0.5
    np.clip(scaled, 0.0, 1.0, out=scaled)
    scaled *= 255.0
    return (scaled + 0.5).astype(np.uint8)


def display_frame(
    pixels: PixelFile, frame: int = 0, window: Window | tuple[float, float] | None = None
) -> np.ndarray:
    """Frame `frame` (from 0) of an open file as display values 0..255 (`to_8bit`)."""
    window = _file_window(pixels.dataset) if window is None else Window(*window)
    table = _display_table(pixels, window)
    if table is not None:
        codes = np.frombuffer(pixels.stored_frame(frame), dtype="<u2" if table.size > 256 else "u1")
        rows, columns = int(pixels.dataset.Rows), int(pixels.dataset.Columns)
        return np.take(table, codes).reshape(rows, columns)
    array = pixels.frame_array(frame)
    samples = int(pixels.dataset.get("SamplesPerPixel", 1) or 1)
    if array.ndim not in (2, 3) or (samples == 1 and array.ndim != 2):
        raise RenderError("not a 2-D image")
    return to_8bit(pixels.dataset, array, window)


# What `to_8bit` reads of a grayscale header besides the window, and the decoder
# besides the bytes: a display table is made once per distinct set of these.
_TABLE_KEYWORDS = (
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "RescaleSlope",
    "RescaleIntercept",
)


def _display_table(pixels: PixelFile, window: Window | None) -> np.ndarray | None:
    """The display value of every possible stored value (indexed by the value's bits as
    unsigned), when the frame can be shown through one: native (read by offset), one
    sample of 8 or 16 bits, a window known, no modality LUT; else None."""
    dataset = pixels.dataset
    if window is None or pixels.encapsulated or pixels.whole is not None:
        return None
    if "ModalityLUTSequence" in dataset or int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    if str(dataset.get("PhotometricInterpretation", "")) not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    if dataset.get("BitsAllocated") not in (8, 16):
        return None
    pixel_count = int(dataset.get("Rows") or 0) * int(dataset.get("Columns") or 0)
    if not pixel_count or pixels.frame_length != pixel_count * dataset.BitsAllocated // 8:
        return None
    try:
        key = tuple(_hashable(dataset.get(keyword)) for keyword in _TABLE_KEYWORDS)
        return _table(key, (float(window.center), float(window.width), window.function))
    except (TypeError, ValueError, RenderError):
        return None  # odd values: the frame's own path decides


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, MultiValue | list) else value


@functools.lru_cache(maxsize=64)
def _table(key: tuple, window: tuple[float, float, str]) -> np.ndarray:
    """Every stored value (0..2**BitsAllocated - 1, as bits) decoded as pydicom decodes a
    frame (unused bits, sign) and put through `to_8bit`: the same display values."""
    header = Dataset()
    for keyword, value in zip(_TABLE_KEYWORDS, key, strict=True):
        if value is not None:
            setattr(header, keyword, value)
    bits = int(header.BitsAllocated)
    header.Rows, header.Columns = (256, 256) if bits == 16 else (16, 16)
    header.SamplesPerPixel = 1
    header.NumberOfFrames = 1
    header.PixelData = np.arange(1 << bits, dtype=f"<u{bits // 8}").tobytes()
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    values, _ = get_decoder(ExplicitVRLittleEndian).as_array(header, index=0)
    table = to_8bit(header, values, Window(*window)).ravel()
    table.flags.writeable = False
    return table


def fit(size: tuple[int, int], viewport: tuple[int, int]) -> tuple[int, int]:
    """`size` scaled to fit in `viewport`, aspect kept (PS3.18 8.3.5.1.3)."""
    width, height = size
    scale = min(viewport[0] / width, viewport[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_frame(
    pixels: PixelFile,
    frame: int = 0,
    *,
    size: int | None = None,
    viewport: tuple[int, int] | None = None,
    window: Window | tuple[float, float] | None = None,
    image_format: str = "PNG",
    quality: int = 90,
) -> bytes:
    """Frame `frame` (from 0) of an open file as PNG, JPEG or GIF bytes: shrunk within
    size x size, or scaled (up or down) to fit the viewport."""
    picture = Image.fromarray(display_frame(pixels, frame, window))
    if viewport:
        target = fit(picture.size, viewport)
        if target != picture.size:
            shrink = target[0] < picture.size[0]
            resample = Image.Resampling.LANCZOS if shrink else Image.Resampling.BILINEAR
            picture = picture.resize(target, resample, reducing_gap=3.0 if shrink else None)
    elif size:
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    kind = image_format.upper()
    if kind == "JPEG":
        picture.save(out, "JPEG", quality=quality)
    elif kind == "GIF":
        picture.save(out, "GIF")
    else:
        picture.save(out, "PNG", compress_level=3)
    return out.getvalue()


def render(
    data: bytes,
    *,
    frame: int = 0,
    size: int | None = None,
    viewport: tuple[int, int] | None = None,
    window: Window | tuple[float, float] | None = None,
    image_format: str = "PNG",
    quality: int = 90,
) -> bytes:
    """A frame of a Part 10 file as PNG or JPEG bytes (see `render_frame`)."""
    try:
        return render_frame(
            open_pixels(data),
            frame,
            size=size,
            viewport=viewport,
            window=window,
            image_format=image_format,
            quality=quality,
        )
    except RenderError:
        raise
    except PixelDataError as error:
        raise RenderError(str(error)) from error

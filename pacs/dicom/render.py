"""Rendering a DICOM frame to an 8-bit picture: thumbnails, and later /rendered.

Order of operations per PS3.4 N.2 (grayscale pipeline): modality LUT (rescale),
VOI LUT (window), presentation (MONOCHROME1 inverted). Colour images are taken as
RGB (pydicom converts YBR); palette colour goes through its lookup table.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut


class RenderError(ValueError):
    """The pixel data cannot be decoded or is not an image."""


def frame_pixels(dataset: Dataset, frame: int = 0) -> np.ndarray:
    """One frame's pixels as stored (decoded when compressed)."""
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
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Display values 0..255: grayscale through rescale and window, colour as RGB."""
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, dataset)
        peak = float(rgb.max()) or 1.0
        return (rgb.astype(np.float64) * (255.0 / peak if peak > 255 else 1.0)).astype(np.uint8)
    if pixels.ndim == 3:  # RGB (pydicom has already converted YBR)
        if pixels.dtype != np.uint8:
            peak = float(pixels.max()) or 1.0
            return (pixels.astype(np.float64) * 255.0 / peak).astype(np.uint8)
        return pixels
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    if window is not None:
        center, width = window
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        values = apply_voi_lut(values, dataset, index=0).astype(np.float64)
        center, width = None, None
    else:
        low, high = np.percentile(values, (0.5, 99.5))
        center, width = (low + high) / 2, max(high - low, 1.0)
    if center is not None and width is not None:
        low, high = center - width / 2, center + width / 2
        scaled = (values - low) / max(high - low, 1e-6)
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / max(high - low, 1e-6)
    display = (np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    if photometric == "MONOCHROME1":
        display = 255 - display
    return display


def render(
    data: bytes,
    *,
    frame: int = 0,
    size: int | None = None,
    window: tuple[float, float] | None = None,
    image_format: str = "PNG",
    quality: int = 90,
) -> bytes:
    """A frame of a Part 10 file as PNG or JPEG bytes, fitted within size x size."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:
        raise RenderError(f"unreadable DICOM: {error}") from error
    if "PixelData" not in dataset:
        raise RenderError("no pixel data")
    picture = Image.fromarray(to_8bit(dataset, frame_pixels(dataset, frame), window))
    if size:
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if image_format.upper() == "JPEG":
        picture.convert("RGB" if picture.mode != "L" else "L").save(out, "JPEG", quality=quality)
    else:
        picture.save(out, "PNG", optimize=False)
    return out.getvalue()

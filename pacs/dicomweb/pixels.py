"""What a WADO-RS pixel request asks for (PS3.18 8.3.5, 8.7.3, 8.7.4): frame lists, bulk
data tags, media types and transfer syntaxes, rendering parameters. Django-free.

Frames and pixel bulk data (PS3.18 8.7.3.5) are answered multipart/related, one part
per frame, each part labelled `Content-Type: <type>; transfer-syntax=<UID>`:

- `type="application/octet-stream"` without transfer-syntax, or with explicit VR little
  endian: decoded frames (native little endian).
- `transfer-syntax=*`, `type="*/*"` (dicomweb-client) or the stored syntax: frames as
  stored; a compressed frame keeps its bitstream, an uncompressed one is native bytes.
- `type="image/jpeg"`, `image/jls`, `image/jp2` … : as stored, when stored so.

A request without an Accept header, or `*/*` alone, gets the standard's default:
application/octet-stream, explicit VR little endian (decoded).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pacs.dicom.render import WINDOW_FUNCTIONS, Window

OCTET_STREAM = "application/octet-stream"
ANY = "*"
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Compressed frame media types and the stored syntaxes they carry (PS3.18 Table 8.7.3-5);
# the first name of a syntax is the one used when the client leaves the choice to us.
IMAGE_TYPES: dict[str, frozenset[str]] = {
    "image/jpeg": frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}),
    "image/jls": frozenset({JPEGLSLossless, JPEGLSNearLossless}),
    "image/x-jls": frozenset({JPEGLSLossless, JPEGLSNearLossless}),
    "image/jp2": frozenset({JPEG2000Lossless, JPEG2000}),
    "image/j2c": frozenset({JPEG2000Lossless, JPEG2000}),
    "image/jpx": frozenset({JPEG2000MCLossless, JPEG2000MC}),
    "image/jphc": frozenset({HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}),
    "image/dicom-rle": frozenset({RLELossless}),
    "image/x-dicom-rle": frozenset({RLELossless}),
}
RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")
PILLOW_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
MAX_VIEWPORT = 4096
MAX_FRAMES_PER_REQUEST = 10_000


class PixelRequestError(ValueError):
    """A request we refuse: `status` 400 (malformed) or 406 (no acceptable media type)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class MediaRange:
    kind: str
    params: dict[str, str]
    q: float


def media_ranges(accept: str) -> list[MediaRange]:
    """The Accept header's media ranges, best first (by q, then in order); q=0 dropped.
    Parameter values may be quoted or not (Cornerstone3D sends them unquoted)."""
    ranges = []
    for text in _split_outside_quotes(accept, ","):
        kind, *params = _split_outside_quotes(text, ";")
        if not kind:
            continue
        parsed = {}
        for param in params:
            name, _, value = param.partition("=")
            parsed[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(parsed.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append(MediaRange(kind.lower(), parsed, q))
    return sorted(ranges, key=lambda r: -r.q)  # stable: equal q keep their order


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    pieces, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            pieces.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    pieces.append("".join(current).strip())
    return [piece for piece in pieces if piece]


@dataclass(frozen=True)
class Delivery:
    """How frames go out: decoded (native little endian) or as stored, in parts of
    `media_type`."""

    media_type: str
    decoded: bool

    def part_syntax(self, stored_syntax: str) -> str:
        """The transfer-syntax parameter of each part; `stored_syntax` is the syntax of
        the stored frame bytes (explicit VR little endian for native data)."""
        return ExplicitVRLittleEndian if self.decoded else stored_syntax


def natural_type(stored_syntax: str) -> str:
    """The media type of frames stored in `stored_syntax`."""
    for media_type, syntaxes in IMAGE_TYPES.items():
        if stored_syntax in syntaxes:
            return media_type
    return OCTET_STREAM


def frame_delivery(accept: str, stored_syntax: str) -> Delivery:
    """How to send the frames of an instance stored in `stored_syntax`; 406 when the
    Accept header allows nothing we can give (PS3.18 8.7.3.5)."""
    compressed = UID(stored_syntax).is_encapsulated
    default = Delivery(OCTET_STREAM, decoded=True)
    ranges = media_ranges(accept)
    if not ranges:
        return default
    for media_range in ranges:
        if media_range.kind == "*/*":
            return default
        if media_range.kind not in ("multipart/related", "multipart/*"):
            continue
        part = media_range.params.get("type", OCTET_STREAM).lower()
        syntax = media_range.params.get("transfer-syntax")
        as_stored = syntax in (None, ANY, stored_syntax) or (
            not compressed and syntax in UNCOMPRESSED
        )
        if part == OCTET_STREAM:
            if syntax is None or syntax in UNCOMPRESSED:
                return default
            if as_stored:
                return Delivery(OCTET_STREAM, decoded=not compressed)
        elif part in ("*/*", "*"):
            if syntax in UNCOMPRESSED and compressed:
                return default
            if as_stored:
                return Delivery(natural_type(stored_syntax), decoded=not compressed)
        elif part == "image/*":
            if compressed and as_stored and natural_type(stored_syntax) != OCTET_STREAM:
                return Delivery(natural_type(stored_syntax), decoded=False)
        elif part in IMAGE_TYPES and stored_syntax in IMAGE_TYPES[part] and as_stored:
            return Delivery(part, decoded=False)
    offer = f'multipart/related; type="{OCTET_STREAM}" (decoded, or transfer-syntax=* as stored)'
    if compressed and natural_type(stored_syntax) != OCTET_STREAM:
        offer += f' or type="{natural_type(stored_syntax)}" (as stored, {stored_syntax})'
    raise PixelRequestError(406, f"frames of this instance are served as {offer}")


def bulk_delivery(accept: str) -> Delivery:
    """How to send a bulk data value other than pixel data: application/octet-stream."""
    try:
        return frame_delivery(accept, ExplicitVRLittleEndian)
    except PixelRequestError as error:
        raise PixelRequestError(
            406, f'bulk data is served as multipart/related; type="{OCTET_STREAM}"'
        ) from error


def frame_numbers(text: str) -> list[int]:
    """A frame list ('1', '1,3,5'), 1-based, in the order asked; 400 when malformed."""
    pieces = text.split(",")
    if len(pieces) > MAX_FRAMES_PER_REQUEST:
        raise PixelRequestError(400, f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    numbers = []
    for piece in pieces:
        piece = piece.strip()
        if not piece.isdigit() or int(piece) < 1:
            raise PixelRequestError(
                400, f"frame numbers are positive integers separated by commas, not {text!r}"
            )
        numbers.append(int(piece))
    return numbers


def check_frames(numbers: list[int], number_of_frames: int) -> None:
    beyond = [n for n in numbers if n > number_of_frames]
    if beyond:
        raise PixelRequestError(
            400, f"frame {beyond[0]} does not exist: the instance has {number_of_frames}"
        )


def bulk_tag(text: str) -> int:
    """A bulk data tag as in our BulkDataURIs: 8 hex digits (group, element)."""
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        raise PixelRequestError(400, f"a bulk data tag is 8 hex digits, not {text!r}")
    return int(text, 16)


def rendered_type(accept: str, *, default: str = "image/jpeg") -> str:
    """The rendered media type to answer (PS3.18 8.7.4): image/jpeg (default), image/png
    or image/gif; 406 otherwise."""
    ranges = media_ranges(accept)
    if not ranges:
        return default
    for media_range in ranges:
        if media_range.kind in RENDERED_TYPES:
            return media_range.kind
        if media_range.kind in ("*/*", "image/*"):
            return default
    raise PixelRequestError(
        406, "rendered images and thumbnails are served as image/jpeg, image/png or image/gif"
    )


@dataclass(frozen=True)
class RenderOptions:
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def render_options(params: Mapping[str, str], *, thumbnail: bool = False) -> RenderOptions:
    """The rendering query parameters (PS3.18 8.3.5.1): window, viewport, quality; a
    thumbnail takes viewport only. Others are ignored; malformed ones are a 400."""
    viewport = _viewport(params["viewport"]) if params.get("viewport") else None
    if thumbnail:
        return RenderOptions(viewport=viewport)
    window = _window(params["window"]) if params.get("window") else None
    quality = 90
    if params.get("quality"):
        text = params["quality"].strip()
        if not text.isdigit() or not 1 <= int(text) <= 100:
            raise PixelRequestError(400, f"quality is an integer 1..100, not {text!r}")
        quality = int(text)
    return RenderOptions(window, viewport, quality)


def _viewport(text: str) -> tuple[int, int]:
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) == 6:
        raise PixelRequestError(400, "viewport source regions (sx,sy,sw,sh) are not supported")
    if len(pieces) != 2 or not all(piece.isdigit() for piece in pieces):
        raise PixelRequestError(400, f"viewport is vw,vh (positive integers), not {text!r}")
    width, height = int(pieces[0]), int(pieces[1])
    if not (1 <= width <= MAX_VIEWPORT and 1 <= height <= MAX_VIEWPORT):
        raise PixelRequestError(400, f"viewport sides are 1..{MAX_VIEWPORT} pixels")
    return width, height


def _window(text: str) -> Window:
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) not in (2, 3):
        raise PixelRequestError(400, f"window is center,width[,function], not {text!r}")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError:
        raise PixelRequestError(400, f"window center and width are numbers, not {text!r}") from None
    function = pieces[2].lower().replace("_", "-") if len(pieces) == 3 else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise PixelRequestError(
            400, f"window function is one of {', '.join(WINDOW_FUNCTIONS)}, not {pieces[2]!r}"
        )
    if not (width >= 1 if function == "linear" else width > 0) or not all(
        abs(value) < 1e9 for value in (center, width)
    ):
        raise PixelRequestError(400, "window width must be at least 1 (linear) or above 0")
    return Window(center, width, function)

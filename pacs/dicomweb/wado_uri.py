"""WADO-URI (PS3.18 9): `?requestType=WADO&studyUID=…` for older clients.

One instance per request, named by its three UIDs: the Part 10 file
(`contentType=application/dicom`, PS3.18 9.4) or a rendered frame (`image/jpeg`,
the default for images, or `image/png`; PS3.18 9.5). Rendering reads only the asked
frame (`pacs.dicom.pixeldata`) and maps it to 8 bits as `pacs.dicom.render` does
(modality LUT, window, MONOCHROME1); `region` crops before the `rows`/`columns`
viewport scaling, which keeps the aspect ratio. `annotation`,
`charset` and presentation states are ignored; `anonymize` is refused.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse, QueryDict
from django.urls import URLPattern, path
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from accounts import audit
from pacs import storage
from pacs.dicom.parse import UID_PATTERN
from pacs.dicom.pixeldata import PixelDataError, open_pixels
from pacs.dicom.render import RenderError, display_frame
from pacs.dicomweb import wado
from pacs.dicomweb.access import DicomWebError, Scope
from pacs.dicomweb.pixels import media_ranges
from pacs.dicomweb.views import _audit, dicomweb_view

DICOM = "application/dicom"
JPEG = "image/jpeg"
PNG = "image/png"
MAX_VIEWPORT = 4096  # rows or columns of a rendered picture


@dataclass(frozen=True)
class Rendering:
    """How to render: all checked, so the view can answer 400 before any work."""

    frame_number: int = 1
    rows: int | None = None
    columns: int | None = None
    region: tuple[float, float, float, float] | None = None
    window: tuple[float, float] | None = None
    quality: int = 90


@dicomweb_view()
def retrieve(request: HttpRequest, scope: Scope) -> HttpResponse:
    params = request.GET
    if params.get("requestType") != "WADO":
        raise DicomWebError(400, "requestType=WADO is required")
    uids = [_uid(params, name) for name in ("studyUID", "seriesUID", "objectUID")]
    if params.get("anonymize", "").lower() == "yes":
        raise DicomWebError(400, "anonymize=yes is not supported")
    wanted = _content_type(params.get("contentType", ""))
    syntax = _uid(params, "transferSyntax", required=False) or ExplicitVRLittleEndian
    rendering = _rendering(params)
    instance = (
        wado.instances(wado.Target(*uids), scope)
        .select_related("series__study")
        .defer("metadata_json")
        .first()
    )
    if instance is None:
        raise DicomWebError(404, "no such instance (or not yours to see)")
    if wanted is None:  # PS3.18: image/jpeg for images; a non-image goes as a file
        wanted = JPEG if instance.rows else DICOM
    _audit(request, scope, audit.Action.VIEW, study=instance.series.study, resource="wado-uri")
    if wanted == DICOM:
        return HttpResponse(wado.instance_bytes(instance, syntax), content_type=DICOM)
    try:
        picture = render(storage.read(instance.storage_key), rendering, wanted)
    except RenderError as error:
        raise DicomWebError(400, f"cannot render this instance: {error}") from error
    return HttpResponse(picture, content_type=wanted)


urlpatterns: list[URLPattern] = [path("wado", retrieve, name="wado-uri")]


def _uid(params: QueryDict, name: str, *, required: bool = True) -> str:
    value = params.get(name, "").strip()
    if not value:
        if required:
            raise DicomWebError(400, f"{name} is required")
        return ""
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise DicomWebError(400, f"{name} is not a valid UID")
    return value


def _content_type(value: str) -> str | None:
    """The media type to answer with (None: the default), from a contentType list
    (`image/png, image/jpeg;q=0.5`); 406 when none is served here."""
    if not value.strip():
        return None
    for media_range in media_ranges(value):
        kind = media_range.kind
        if kind in (DICOM, JPEG, PNG):
            return kind
        if kind == "image/*":
            return JPEG
        if kind == "*/*":
            return None
    raise DicomWebError(406, f"contentType {value}: this server gives {DICOM}, {JPEG} or {PNG}")


def _rendering(params: QueryDict) -> Rendering:
    frame_number = _integer(params, "frameNumber", 1, None) or 1
    rows = _integer(params, "rows", 1, MAX_VIEWPORT)
    columns = _integer(params, "columns", 1, MAX_VIEWPORT)
    quality = _integer(params, "imageQuality", 1, 100) or 90
    center, width = params.get("windowCenter", ""), params.get("windowWidth", "")
    window = None
    if center or width:
        if not (center and width):
            raise DicomWebError(400, "windowCenter and windowWidth go together")
        window = (_decimal("windowCenter", center), _decimal("windowWidth", width))
        if window[1] <= 0:
            raise DicomWebError(400, "windowWidth must be positive")
    region = None
    if params.get("region"):
        values = [_decimal("region", value) for value in params["region"].split(",")]
        if len(values) != 4:
            raise DicomWebError(400, "region is xmin,ymin,xmax,ymax")
        xmin, ymin, xmax, ymax = values
        if not (0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1):
            raise DicomWebError(400, "region values lie in 0.0..1.0 with min < max")
        region = (xmin, ymin, xmax, ymax)
    return Rendering(frame_number, rows, columns, region, window, quality)


def _integer(params: QueryDict, name: str, low: int, high: int | None) -> int | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError as error:
        raise DicomWebError(400, f"{name} must be an integer") from error
    if number < low or (high is not None and number > high):
        raise DicomWebError(400, f"{name} must lie in {low}..{high or ''}")
    return number


def _decimal(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise DicomWebError(400, f"{name} must be decimal numbers") from error
    if number != number or number in (float("inf"), float("-inf")):
        raise DicomWebError(400, f"{name} must be finite")
    return number


def render(data: bytes, rendering: Rendering, content_type: str) -> bytes:
    """One frame as JPEG or PNG: window, then region, then the viewport (PS3.18 9.5.2).
    Only that frame is read and decoded (`pacs.dicom.pixeldata`)."""
    try:
        pixels = open_pixels(data)
        if rendering.frame_number > pixels.number_of_frames:
            raise RenderError(
                f"frameNumber {rendering.frame_number} out of 1..{pixels.number_of_frames}"
            )
        picture = Image.fromarray(
            display_frame(pixels, rendering.frame_number - 1, rendering.window)
        )
    except RenderError:
        raise
    except PixelDataError as error:
        raise RenderError(str(error)) from error
    if rendering.region is not None:
        xmin, ymin, xmax, ymax = rendering.region
        width, height = picture.size
        box = (round(xmin * width), round(ymin * height), round(xmax * width), round(ymax * height))
        picture = picture.crop((box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1)))
    if rendering.rows or rendering.columns:  # each a maximum; the aspect ratio is kept
        width, height = picture.size
        scale = min(
            rendering.columns / width if rendering.columns else float("inf"),
            rendering.rows / height if rendering.rows else float("inf"),
        )
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if content_type == JPEG:
        picture.convert("L" if picture.mode == "L" else "RGB").save(
            out, "JPEG", quality=rendering.quality
        )
    else:
        picture.save(out, "PNG")
    return out.getvalue()

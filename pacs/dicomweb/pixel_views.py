"""WADO-RS frames, bulk data, rendered images and thumbnails (PS3.18 10.4).

Thin views: the scoped instance (404 when unknown or not the caller's), the request
checked by `pixels` (400 malformed, 406 no acceptable media type) before any file is
opened, then one frame read and decoded or rendered by `pacs.dicom`, and an audit
record. Study and series /rendered and /thumbnail show a representative image: the
middle instance of the (first image) series, its middle frame.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from PIL import Image

from pacs import storage
from pacs.dicom import render
from pacs.dicom.pixeldata import PIXEL_DATA, PixelDataError, PixelFile, element_value, open_pixels
from pacs.dicomweb import pixels, wado
from pacs.dicomweb.access import DicomWebError, Scope
from pacs.dicomweb.views import audit_pixels, dicomweb_view
from pacs.models import Instance, Series
from pacs.services import THUMBNAIL_SIZE

logger = logging.getLogger(__name__)

STUDY = "studies/<str:study>"
SERIES = f"{STUDY}/series/<str:series>"
INSTANCE = f"{SERIES}/instances/<str:instance>"
FRAMES = f"{INSTANCE}/frames/<str:frames>"


def _refusals(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """PixelRequestError (decided by `pixels`) as the DicomWebError `dicomweb_view` answers."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(*args, **kwargs)
        except pixels.PixelRequestError as error:
            raise DicomWebError(error.status, error.message) from error

    return wrapped


def _instance(scope: Scope, target: wado.Target) -> Instance:
    row = wado.instance_for_pixels(target, scope)
    if row is None:
        raise DicomWebError(404, "no such instance (or not yours to see)")
    return row


def _representative(scope: Scope, target: wado.Target) -> Instance:
    """The middle image of a series, or of a study's first series that has images."""
    rows = wado.instances(target, scope).select_related("series")
    images = rows.exclude(rows=None).annotate(study_pk=F("series__study_id"))
    first = images.first()
    if first is None:
        if rows.exists():
            raise DicomWebError(406, f"this {target.level} has no images to render")
        raise DicomWebError(404, f"no such {target.level} (or not yours to see)")
    images = images.filter(series_id=first.series_id)
    return images[images.count() // 2]


@contextmanager
def _pixel_file(instance: Instance) -> Iterator[PixelFile]:
    """The instance's stored file, open; a missing file is a 404, bad pixel data a 406."""
    try:
        handle = storage.open_file(instance.storage_key)
    except OSError as error:
        logger.error("stored file %s of %s unreadable: %s", instance.storage_key, instance, error)
        raise DicomWebError(404, "the stored file of this instance is missing") from error
    with handle:
        try:
            yield open_pixels(handle)
        except PixelDataError as error:
            raise DicomWebError(406, f"pixel data not available: {error}") from error


def _multipart(parts: list[tuple[bytes, dict[str, str]]], media_type: str) -> HttpResponse:
    boundary = wado.new_boundary()
    return HttpResponse(
        b"".join(wado.multipart(iter(parts), boundary)),
        content_type=f'multipart/related; type="{media_type}"; boundary={boundary}',
    )


# ------------------------------------------------------------------ frames, bulk data


@dicomweb_view()
@_refusals
def frames(
    request: HttpRequest, scope: Scope, study: str, series: str, instance: str, frames: str
) -> HttpResponse:
    numbers = pixels.frame_numbers(frames)
    row = _instance(scope, wado.Target(study, series, instance))
    delivery = pixels.frame_delivery(request.headers.get("Accept", ""), row.transfer_syntax_uid)
    pixels.check_frames(numbers, row.number_of_frames)
    with _pixel_file(row) as pixel_file:
        pixels.check_frames(numbers, pixel_file.number_of_frames)
        read = pixel_file.native_frame if delivery.decoded else pixel_file.stored_frame
        content_type = (
            f"{delivery.media_type}; transfer-syntax="
            f"{delivery.part_syntax(pixel_file.stored_syntax)}"
        )
        parts = [(read(number - 1), {"Content-Type": content_type}) for number in numbers]
    audit_pixels(request, scope, row.study_pk, "frames")
    return _multipart(parts, delivery.media_type)


@dicomweb_view()
@_refusals
def bulkdata(
    request: HttpRequest, scope: Scope, study: str, series: str, instance: str, tag: str
) -> HttpResponse:
    number = pixels.bulk_tag(tag)
    row = _instance(scope, wado.Target(study, series, instance))
    accept = request.headers.get("Accept", "")
    if number == PIXEL_DATA:
        delivery = pixels.frame_delivery(accept, row.transfer_syntax_uid)
        with _pixel_file(row) as pixel_file:
            content_type = (
                f"{delivery.media_type}; transfer-syntax="
                f"{delivery.part_syntax(pixel_file.stored_syntax)}"
            )
            if delivery.decoded or not pixel_file.encapsulated:
                values = [pixel_file.all_native_frames()]
            else:  # compressed as stored: one part per frame (PS3.18 8.7.3.3.2)
                values = [pixel_file.stored_frame(i) for i in range(pixel_file.number_of_frames)]
        parts = [(value, {"Content-Type": content_type}) for value in values]
    else:
        delivery = pixels.bulk_delivery(accept)
        try:
            with storage.open_file(row.storage_key) as handle:
                value = element_value(handle, number)
        except (OSError, PixelDataError) as error:
            raise DicomWebError(404, f"bulk data not available: {error}") from error
        if value is None:
            raise DicomWebError(404, f"this instance has no element {tag.upper()}")
        parts = [(value, {"Content-Type": pixels.OCTET_STREAM})]
    audit_pixels(request, scope, row.study_pk, "bulkdata")
    return _multipart(parts, delivery.media_type)


# ------------------------------------------------------------------ rendered, thumbnail


def _frame_index(frames: str | None, row: Instance, representative: bool) -> int:
    """The 0-based frame to show: the one asked, else the first (middle for a study or
    series, as the series thumbnail)."""
    if frames is None:
        return row.number_of_frames // 2 if representative else 0
    numbers = pixels.frame_numbers(frames)
    if len(numbers) != 1:
        raise DicomWebError(400, "one frame at a time is rendered")
    pixels.check_frames(numbers, row.number_of_frames)
    return numbers[0] - 1


def _show(
    request: HttpRequest,
    scope: Scope,
    target: wado.Target,
    frames: str | None = None,
    *,
    thumbnail: bool = False,
) -> HttpResponse:
    options = pixels.render_options(request.GET, thumbnail=thumbnail)
    representative = target.level != "instance"
    row = _representative(scope, target) if representative else _instance(scope, target)
    frame = _frame_index(frames, row, representative)
    accept = request.headers.get("Accept", "")
    stored = row.series.thumbnail_key if thumbnail and representative else ""
    media_type = pixels.rendered_type(accept, default="image/png" if stored else "image/jpeg")
    body = None
    if stored and options.viewport is None:
        body = _stored_thumbnail(row.series, media_type)
    if body is None:
        size = THUMBNAIL_SIZE if thumbnail and options.viewport is None else None
        with _pixel_file(row) as pixel_file:
            try:
                body = render.render_frame(
                    pixel_file,
                    frame,
                    size=size,
                    viewport=options.viewport,
                    window=options.window,
                    image_format=pixels.PILLOW_FORMATS[media_type],
                    quality=options.quality,
                )
            except PixelDataError as error:
                raise DicomWebError(406, f"cannot render this instance: {error}") from error
    resource = "thumbnail" if thumbnail else "rendered"
    audit_pixels(request, scope, row.study_pk, resource)
    return HttpResponse(body, content_type=media_type)


def _stored_thumbnail(series: Series, media_type: str) -> bytes | None:
    """The series thumbnail made at ingest (PNG), in `media_type`; None when gone."""
    try:
        png = storage.read(series.thumbnail_key)
    except OSError:
        return None
    if media_type == "image/png":
        return png
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, pixels.PILLOW_FORMATS[media_type])
    return out.getvalue()


def _show_view(*, thumbnail: bool) -> Callable[..., HttpResponse]:
    @dicomweb_view()
    @_refusals
    def view(
        request: HttpRequest,
        scope: Scope,
        study: str,
        series: str = "",
        instance: str = "",
        frames: str | None = None,
    ) -> HttpResponse:
        target = wado.Target(study, series, instance)
        return _show(request, scope, target, frames, thumbnail=thumbnail)

    return view


rendered = _show_view(thumbnail=False)
thumbnail = _show_view(thumbnail=True)

urlpatterns: list[URLPattern] = [
    path(FRAMES, frames, name="frames"),
    path(f"{INSTANCE}/bulkdata/<str:tag>", bulkdata, name="bulkdata"),
    path(f"{STUDY}/rendered", rendered, name="study-rendered"),
    path(f"{SERIES}/rendered", rendered, name="series-rendered"),
    path(f"{INSTANCE}/rendered", rendered, name="instance-rendered"),
    path(f"{FRAMES}/rendered", rendered, name="frames-rendered"),
    path(f"{STUDY}/thumbnail", thumbnail, name="study-thumbnail"),
    path(f"{SERIES}/thumbnail", thumbnail, name="series-thumbnail"),
    path(f"{INSTANCE}/thumbnail", thumbnail, name="instance-thumbnail"),
    path(f"{FRAMES}/thumbnail", thumbnail, name="frames-thumbnail"),
]

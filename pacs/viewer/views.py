"""The viewer page, and the JSON API that keeps each user's annotations.

The page hands the JavaScript its start-up configuration; images then come only
through DICOMweb. The API is plain JSON over the session, with the CSRF token as any
form; it answers 401 rather than redirecting a script to the login form.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from accounts import audit
from accounts.middleware import CONTENT_SECURITY_POLICY
from accounts.models import User
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import capabilities_for
from pacs.dicom.parse import UID_PATTERN
from pacs.models import Annotation, Study
from pacs.viewer import selectors, services

# The Cornerstone3D tools whose annotations the viewer may save.
TOOLS = frozenset(
    {
        "Length",
        "Angle",
        "CobbAngle",
        "Bidirectional",
        "RectangleROI",
        "EllipticalROI",
        "CircleROI",
        "Probe",
        "ArrowAnnotate",
        "PlanarFreehandROI",
    }
)
MAX_DATA_BYTES = 64 * 1024
NO_SUCH_STUDY = "No study with this Study Instance UID is archived."
NOT_YOURS = (
    "You may not open this study: it belongs to another facility, "
    "or to a referral that is not yours."
)
# Any UUID: reversed and cut off to give the per-annotation URL prefix.
_SOME_UID = uuid.UUID(int=0)

View = Callable[..., HttpResponse]

# Cornerstone3D writes style attributes on its SVG measurements and may compile codec
# WebAssembly on the page: the viewer relaxes only these two directives of the site's CSP.
# The reading page shows it in a frame beside the report: framing by our own pages only.
VIEWER_CONTENT_SECURITY_POLICY = (
    CONTENT_SECURITY_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    .replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")
    .replace("frame-ancestors 'none'", "frame-ancestors 'self'")
)


class ApiError(Exception):
    """A request the API refuses: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _study_for(user: User, study_instance_uid: str) -> Study:
    """The study asked for: 404 when no facility holds the UID, 403 when it is not theirs."""
    study = selectors.viewable_study(user=user, study_instance_uid=study_instance_uid)
    if study is not None:
        return study
    if selectors.study_exists(study_instance_uid=study_instance_uid):
        raise PermissionDenied(NOT_YOURS)
    raise Http404(NO_SUCH_STUDY)


# The page


@require_GET
@xframe_options_sameorigin
@capability_required(Capability.VIEW_IMAGES)
def study_page(request: HttpRequest, study_instance_uid: str) -> HttpResponse:
    """The viewer for one study; opening it is a read of the study, so it is audited."""
    try:
        study = _study_for(request.user, study_instance_uid)
    except PermissionDenied as refusal:
        # Django's own 403 page gives no reason; this one says why.
        return HttpResponseForbidden(str(refusal), content_type="text/plain; charset=utf-8")
    priors = list(selectors.prior_studies(user=request.user, study=study))
    audit.record_request(
        request,
        action=audit.Action.VIEW,
        door=audit.Door.PAGE,
        obj=study,
        detail={"priors": [prior.pk for prior in priors]},
    )
    response = render(
        request,
        "pacs/viewer.html",
        {"study": study, "viewer_config": viewer_config(request, study, priors)},
    )
    response.headers["Content-Security-Policy"] = VIEWER_CONTENT_SECURITY_POLICY
    return response


def viewer_config(request: HttpRequest, study: Study, priors: list[Study]) -> dict[str, Any]:
    """What the JavaScript reads at start (camelCase for it). URLs come from reverse(), so
    they carry the path prefix (SCRIPT_NAME) a proxy mounts the site under."""
    dicomweb_root = request.build_absolute_uri(reverse("dicomweb:studies"))
    one_annotation = reverse("viewer:annotation", kwargs={"uid": _SOME_UID})
    return {
        "studyInstanceUID": study.study_instance_uid,
        "dicomWebRoot": dicomweb_root.removesuffix("/studies"),
        "annotationsUrl": reverse("viewer:study_annotations", args=[study.study_instance_uid]),
        "annotationsBase": one_annotation.removesuffix(f"{_SOME_UID}/"),
        "csrfToken": get_token(request),
        "patient": {
            "name": study.patient_name,
            "id": study.dicom_patient_id,
            "birthDate": study.patient_birth_date,
            "sex": study.patient_sex,
        },
        "study": {
            "date": study.study_date,
            "time": study.study_time,
            "description": study.study_description,
            "accessionNumber": study.accession_number,
            "modalities": study.modalities_in_study,
        },
        "priors": [
            {
                "studyInstanceUID": prior.study_instance_uid,
                "studyDate": prior.study_date,
                "studyDescription": prior.study_description,
                "modalities": prior.modalities_in_study,
                "numberOfInstances": prior.number_of_instances,
                "url": reverse("viewer:study", args=[prior.study_instance_uid]),
            }
            for prior in priors
        ],
        "user": request.user.get_username(),
        "backUrl": reverse("pacs:study_list"),
        "canAnnotate": True,
    }


# The annotations API


def _json_api(*methods: str) -> Callable[[View], View]:
    """Session-authenticated JSON: 401/403/404/405 and bad input as {"error": ...}."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return _error(401, "log in to use the viewer")
            if request.method not in methods:
                response = _error(405, f"{request.method} is not allowed here")
                response["Allow"] = ", ".join(methods)
                return response
            if Capability.VIEW_IMAGES not in capabilities_for(request.user):
                return _error(403, f"Your role does not allow this ({Capability.VIEW_IMAGES}).")
            try:
                return view(request, *args, **kwargs)
            except ApiError as error:
                return _error(error.status, error.message)
            except PermissionDenied as error:
                return _error(403, str(error))
            except Http404 as error:
                return _error(404, str(error))

        # Login is checked above: a script gets a 401, not the login form.
        return login_not_required(wrapped)

    return decorator


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _record(annotation: Annotation) -> dict[str, Any]:
    return {
        "uid": str(annotation.uid),
        "seriesInstanceUID": annotation.series_instance_uid,
        "sopInstanceUID": annotation.sop_instance_uid,
        "frameNumber": annotation.frame_number,
        "toolName": annotation.tool_name,
        "data": annotation.data,
        "updatedAt": annotation.updated_at.isoformat(),
    }


@_json_api("GET")
def study_annotations(request: HttpRequest, study_instance_uid: str) -> HttpResponse:
    """The requesting user's annotations on the study, oldest first."""
    study = _study_for(request.user, study_instance_uid)
    annotations = list(selectors.annotations_of(user=request.user, study=study))
    audit.record_list(
        request,
        objects=annotations,
        object_type="annotation",
        query={"study_instance_uid": study.study_instance_uid},
    )
    return JsonResponse({"annotations": [_record(annotation) for annotation in annotations]})


@_json_api("PUT", "DELETE")
def annotation_detail(request: HttpRequest, uid: uuid.UUID) -> HttpResponse:
    """PUT creates (201) or updates (200) the user's annotation; DELETE removes it (204).
    Another user's annotation is refused without a word of its content."""
    existing = selectors.annotation_by_uid(uid)
    if existing is not None and existing.user_id != request.user.pk:
        raise ApiError(403, "This annotation belongs to another user.")
    if request.method == "DELETE":
        return _delete(request, existing)
    return _save(request, uid, existing)


def _delete(request: HttpRequest, existing: Annotation | None) -> HttpResponse:
    if existing is None:
        raise ApiError(404, "No annotation with this UID.")
    if not selectors.study_is_visible(user=request.user, study=existing.study):
        raise PermissionDenied(NOT_YOURS)
    services.delete_annotation(
        annotation=existing, user=request.user, remote_addr=audit.client_address(request)
    )
    return HttpResponse(status=204)


def _save(request: HttpRequest, uid: uuid.UUID, existing: Annotation | None) -> HttpResponse:
    fields = _annotation_input(request, uid)
    if existing is None:
        study = _study_for(request.user, fields.study_instance_uid)
    else:
        # The study it was drawn on, even when a newer copy of the UID arrived since.
        study = existing.study
        if study.study_instance_uid != fields.study_instance_uid:
            raise ApiError(400, "An annotation cannot move to another study.")
        if not selectors.study_is_visible(user=request.user, study=study):
            raise PermissionDenied(NOT_YOURS)
    instance = selectors.instance_in_study(
        study=study,
        series_instance_uid=fields.series_instance_uid,
        sop_instance_uid=fields.sop_instance_uid,
    )
    if instance is None:
        if not selectors.series_in_study(
            study=study, series_instance_uid=fields.series_instance_uid
        ):
            raise ApiError(400, "seriesInstanceUID is not a series of this study.")
        raise ApiError(400, "sopInstanceUID is not an instance of that series of this study.")
    if fields.frame_number is not None and fields.frame_number > instance.number_of_frames:
        raise ApiError(
            400, f"frameNumber is beyond the instance's {instance.number_of_frames} frame(s)."
        )
    try:
        saved, created = services.save_annotation(
            uid=uid,
            user=request.user,
            study=study,
            series_instance_uid=fields.series_instance_uid,
            sop_instance_uid=fields.sop_instance_uid,
            frame_number=fields.frame_number,
            tool_name=fields.tool_name,
            data=fields.data,
            remote_addr=audit.client_address(request),
        )
    except services.AnnotationError as error:
        raise ApiError(409, str(error)) from error
    return JsonResponse(_record(saved), status=201 if created else 200)


# Reading the PUT body


@dataclass(frozen=True)
class AnnotationInput:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frame_number: int | None
    tool_name: str
    data: dict[str, Any]


def _annotation_input(request: HttpRequest, uid: uuid.UUID) -> AnnotationInput:
    """The body checked field by field; anything PostgreSQL would refuse is a 400 here."""
    payload = _json_body(request)
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object.")
    if "uid" in payload and payload["uid"] != str(uid):
        raise ApiError(400, "uid in the body differs from the UID in the URL.")
    study_instance_uid = _uid(payload, "studyInstanceUID")
    series_instance_uid = _uid(payload, "seriesInstanceUID")
    sop_instance_uid = _uid(payload, "sopInstanceUID")
    frame_number = payload.get("frameNumber")  # absent (undefined in JavaScript) is null
    if frame_number is not None and (
        isinstance(frame_number, bool) or not isinstance(frame_number, int) or frame_number < 1
    ):
        raise ApiError(400, "frameNumber must be a whole number from 1, or null.")
    tool_name = _field(payload, "toolName", str)
    if tool_name not in TOOLS:
        raise ApiError(400, f"toolName must be one of {', '.join(sorted(TOOLS))}.")
    return AnnotationInput(
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        frame_number=frame_number,
        tool_name=tool_name,
        data=_data(_field(payload, "data", dict)),
    )


def _json_body(request: HttpRequest) -> Any:
    try:
        body = request.body
    except RequestDataTooBig as error:
        raise ApiError(413, "The request body is too large.") from error
    try:
        return json.loads(body, parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8; nesting beyond reason
        raise ApiError(400, "The body is not valid JSON.") from error


def _not_a_number(name: str) -> Any:
    """NaN and Infinity: Python reads them, JSON (and PostgreSQL's jsonb) does not."""
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise ValueError(f"{text} is out of range")
    return value


def _field(payload: dict[str, Any], key: str, kind: type) -> Any:
    if key not in payload:
        raise ApiError(400, f"{key} is missing.")
    value = payload[key]
    if not isinstance(value, kind):
        name = {str: "a string", dict: "an object"}.get(kind, kind.__name__)
        raise ApiError(400, f"{key} must be {name}.")
    return value


def _uid(payload: dict[str, Any], key: str) -> str:
    value: str = _field(payload, key, str)
    if len(value) > 64 or not UID_PATTERN.fullmatch(value):
        raise ApiError(400, f"{key} is not a DICOM UID (digits and dots, at most 64 characters).")
    return value


def _data(data: dict[str, Any]) -> dict[str, Any]:
    """The tool's payload is opaque, but bounded, and only what jsonb can hold."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:  # a lone surrogate such as "\ud800"
        raise ApiError(400, "data holds text that is not valid Unicode.") from error
    except RecursionError as error:
        raise ApiError(400, "data is nested too deeply.") from error
    if size > MAX_DATA_BYTES:
        raise ApiError(400, f"data is larger than 64 KB ({size} bytes serialized).")
    if _holds_nul(data):
        raise ApiError(400, "data holds a NUL character, which cannot be stored.")
    return data


def _holds_nul(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False

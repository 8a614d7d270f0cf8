"""DICOMweb endpoints (PS3.18) under /dicom-web/: thin views over qido and wado.

Every view is wrapped by `dicomweb_view`: authentication (token or session, 401
otherwise), the caller's scope, errors as 4xx with a message (never a 500 for a bad
request), and CORS for the origins allowed in settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.gzip import gzip_page

from accounts import audit
from pacs.dicomweb import qido, stow, wado
from pacs.dicomweb.access import DicomWebError, Scope, authenticate, scope_for
from pacs.dicomweb.pixels import media_ranges
from pacs.models import Instance, Study

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
View = Callable[..., HttpResponse]


def dicomweb_view(methods: tuple[str, ...] = ("GET",)) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @csrf_exempt  # token clients have no CSRF token; sessions are checked in authenticate()
        @login_not_required  # authenticated here, answering 401 rather than a login redirect
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method == "OPTIONS":
                response = HttpResponse(status=204)
                response["Allow"] = ", ".join((*methods, "OPTIONS"))
                return _cors(request, response, methods)
            try:
                if request.method not in methods:
                    raise DicomWebError(405, f"{request.method} is not supported here")
                response = view(request, _scope(request), *args, **kwargs)
            except DicomWebError as error:
                response = _error(error)
            return _cors(request, response, methods)

        return wrapped

    return decorator


def _scope(request: HttpRequest) -> Scope:
    """The caller's scope: a user's (token or session), else the studies of the share
    links this browser opened (a second opinion without an account)."""
    try:
        return scope_for(authenticate(request))
    except DicomWebError as error:
        if error.status != 401 or request.method not in ("GET", "HEAD"):
            raise
        from ris.reporting.shares import dicomweb_scope

        scope = dicomweb_scope(request)
        if scope is None:
            raise
        return scope


def _error(error: DicomWebError) -> HttpResponse:
    response = HttpResponse(error.message + "\n", status=error.status, content_type="text/plain")
    for name, value in error.headers.items():
        response[name] = value
    return response


def _cors(request: HttpRequest, response: HttpResponse, methods: tuple[str, ...]) -> HttpResponse:
    origin = request.headers.get("Origin")
    allowed = settings.DICOMWEB_CORS_ORIGINS
    if origin and ("*" in allowed or origin in allowed):
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Credentials"] = "true"
        response["Access-Control-Allow-Methods"] = ", ".join((*methods, "OPTIONS"))
        response["Access-Control-Allow-Headers"] = "Authorization, Accept, Content-Type"
        response["Access-Control-Expose-Headers"] = "ETag, Warning, Content-Location"
        response["Access-Control-Max-Age"] = "600"
        patch_vary_headers(response, ["Origin"])
    return response


def base_url(request: HttpRequest) -> str:
    """The DICOMweb root as the client reached it (scheme, host, port, path prefix)."""
    return request.build_absolute_uri(request.META.get("SCRIPT_NAME", "") + "/dicom-web")


def _accepts_json(request: HttpRequest) -> None:
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return
    for media_range in media_ranges(accept):
        if media_range.kind in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return
    raise DicomWebError(406, f"this resource is served as {DICOM_JSON}")


def _audit(
    request: HttpRequest, scope: Scope, action: str, *, study: Study | None = None, **detail: Any
) -> None:
    audit.record(
        action=action,
        door=audit.Door.DICOMWEB,
        user=None if scope.actor else scope.user,
        actor=scope.actor,
        obj=study,
        object_type="study",
        remote_addr=audit.client_address(request),
        path=request.get_full_path(),
        detail=detail,
    )


# A viewer fetches a series frame by frame: one audit event per user, study and kind of
# pixel resource in this window says the same as one per frame, without 500 rows a series.
PIXEL_AUDIT_WINDOW = 300  # seconds


def audit_pixels(request: HttpRequest, scope: Scope, study_id: int, resource: str) -> None:
    """Audit a pixel read (frames, rendered, thumbnail, bulk data) of a study: the first
    of each window is recorded, and says the window covers the reads that follow."""
    who = hashlib.sha256(scope.actor.encode()).hexdigest()[:16] if scope.actor else scope.user.pk
    key = f"dicomweb-audit:{who}:{study_id}:{resource}"
    if not cache.add(key, 1, timeout=PIXEL_AUDIT_WINDOW):
        return
    _audit(
        request,
        scope,
        audit.Action.VIEW,
        study=Study.objects.get(pk=study_id),
        resource=resource,
        covers_seconds=PIXEL_AUDIT_WINDOW,
    )


# ------------------------------------------------------------------------ QIDO-RS


def _search(request: HttpRequest, scope: Scope, search: qido.Search) -> HttpResponse:
    _accepts_json(request)
    results = qido.search(search, request.GET, scope)
    root = base_url(request)
    documents = []
    for match in results.matches:
        document = match.to_json_dict()
        document["00081190"] = {"vr": "UR", "Value": [_retrieve_url(root, document)]}
        documents.append(document)
    response = HttpResponse(
        json.dumps(documents, ensure_ascii=False, separators=(",", ":")),
        content_type=DICOM_JSON,
    )
    if results.more:
        response["Warning"] = (
            f'299 {request.get_host()} "There are additional results that can be requested"'
        )
    _audit(
        request,
        scope,
        audit.Action.LIST,
        level=search.level,
        query=request.GET.dict(),
        matches=len(documents),
    )
    return response


def _retrieve_url(root: str, document: dict) -> str:
    def uid(tag: str) -> str:
        return (document.get(tag, {}).get("Value") or [""])[0]

    url = f"{root}/studies/{uid('0020000D')}"
    if uid("0020000E"):
        url += f"/series/{uid('0020000E')}"
        if uid("00080018"):
            url += f"/instances/{uid('00080018')}"
    return url


@dicomweb_view(("GET", "POST"))
def studies(request: HttpRequest, scope: Scope) -> HttpResponse:
    if request.method == "POST":
        return stow.store(request, scope, study_uid="")
    return _search(request, scope, qido.Search("STUDY"))


@dicomweb_view()
def all_series(request: HttpRequest, scope: Scope) -> HttpResponse:
    return _search(request, scope, qido.Search("SERIES"))


@dicomweb_view()
def all_instances(request: HttpRequest, scope: Scope) -> HttpResponse:
    return _search(request, scope, qido.Search("IMAGE"))


@dicomweb_view()
def study_series(request: HttpRequest, scope: Scope, study: str) -> HttpResponse:
    return _search(request, scope, qido.Search("SERIES", study_uid=study))


@dicomweb_view()
def study_instances(request: HttpRequest, scope: Scope, study: str) -> HttpResponse:
    return _search(request, scope, qido.Search("IMAGE", study_uid=study))


@dicomweb_view()
def series_instances(request: HttpRequest, scope: Scope, study: str, series: str) -> HttpResponse:
    return _search(request, scope, qido.Search("IMAGE", study_uid=study, series_uid=series))


# ------------------------------------------------------------------------ WADO-RS


def _study_row(target: wado.Target, scope: Scope) -> Study:
    rows = wado.instances(target, scope)
    first = rows.select_related("series__study").first()
    if first is None:
        raise DicomWebError(404, f"no such {target.level} (or not yours to see)")
    return first.series.study


@gzip_page
def _metadata(request: HttpRequest, scope: Scope, target: wado.Target) -> HttpResponse:
    _accepts_json(request)
    root = base_url(request)
    rows = wado.instances(target, scope)
    etag = wado.metadata_etag(rows, root)
    if etag is None:
        raise DicomWebError(404, f"no such {target.level} (or not yours to see)")
    study = _study_row(target, scope)
    _audit(request, scope, audit.Action.VIEW, study=study, resource="metadata")
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(wado.metadata(rows, root), content_type=DICOM_JSON)
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


def _retrieve(request: HttpRequest, scope: Scope, target: wado.Target) -> HttpResponse:
    syntax = wado.wanted_syntax(request.headers.get("Accept", ""))
    rows = list(wado.instances(target, scope).defer("metadata_json"))
    if not rows:
        raise DicomWebError(404, f"no such {target.level} (or not yours to see)")
    wado.check_syntax(rows, syntax)  # refuse before the 200 goes out
    study = _study_row(target, scope)
    _audit(request, scope, audit.Action.VIEW, study=study, resource="instances", count=len(rows))
    boundary = wado.new_boundary()
    as_stored = all(syntax in (wado.ANY_SYNTAX, row.transfer_syntax_uid) for row in rows)

    def headers(instance: Instance) -> dict[str, str]:
        part_syntax = instance.transfer_syntax_uid if syntax == wado.ANY_SYNTAX else syntax
        return {"Content-Type": f"application/dicom; transfer-syntax={part_syntax}"}

    def parts() -> Iterator[tuple[bytes, dict[str, str]]]:
        for instance in rows:
            data = wado.instance_bytes(instance, syntax)
            if as_stored and len(data) != instance.size:  # the length is already promised
                raise wado.StoredFileChanged(instance.storage_key, instance.size, len(data))
            yield data, headers(instance)

    response = StreamingHttpResponse(
        wado.multipart(parts(), boundary),
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )
    if as_stored:
        # A body of known length goes out as it is; without one, gunicorn frames each
        # piece as a chunk and so copies every file once more.
        sizes = ((row.size, headers(row)) for row in rows)
        response["Content-Length"] = str(wado.multipart_length(sizes, boundary))
    return response


@dicomweb_view(("GET", "POST"))
def study(request: HttpRequest, scope: Scope, study: str) -> HttpResponse:
    if request.method == "POST":
        return stow.store(request, scope, study_uid=study)
    return _retrieve(request, scope, wado.Target(study))


@dicomweb_view()
def series(request: HttpRequest, scope: Scope, study: str, series: str) -> HttpResponse:
    return _retrieve(request, scope, wado.Target(study, series))


@dicomweb_view()
def instance(
    request: HttpRequest, scope: Scope, study: str, series: str, instance: str
) -> HttpResponse:
    return _retrieve(request, scope, wado.Target(study, series, instance))


@dicomweb_view()
def study_metadata(request: HttpRequest, scope: Scope, study: str) -> HttpResponse:
    return _metadata(request, scope, wado.Target(study))


@dicomweb_view()
def series_metadata(request: HttpRequest, scope: Scope, study: str, series: str) -> HttpResponse:
    return _metadata(request, scope, wado.Target(study, series))


@dicomweb_view()
def instance_metadata(
    request: HttpRequest, scope: Scope, study: str, series: str, instance: str
) -> HttpResponse:
    return _metadata(request, scope, wado.Target(study, series, instance))

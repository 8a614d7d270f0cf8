import logging

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from accounts import audit
from accounts.models import Facility
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from pacs import selectors, services, storage

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 2 * 1024**3


@require_GET
@capability_required(Capability.VIEW_IMAGES)
def study_list(request: HttpRequest) -> HttpResponse:
    unmatched = request.GET.get("unmatched") == "1"
    query = request.GET.get("q", "")
    studies = selectors.study_list(user=request.user, unmatched=unmatched, query=query)
    page = Paginator(studies, 50).get_page(request.GET.get("page"))
    audit.record_list(
        request, objects=list(page), object_type="study", query={"q": query, "unmatched": unmatched}
    )
    return render(
        request, "pacs/study_list.html", {"page": page, "unmatched": unmatched, "query": query}
    )


@require_http_methods(["GET", "POST"])
@capability_required(Capability.UPLOAD_IMAGES)
def upload(request: HttpRequest) -> HttpResponse:
    """The page sends one file per request, so each file has its own progress bar and result."""
    facilities = Facility.objects.filter(
        pk__in=facility_ids_for(request.user, Capability.UPLOAD_IMAGES)
    )
    if request.method == "GET":
        return render(request, "pacs/upload.html", {"facilities": facilities})
    facility = facilities.filter(code=request.POST.get("facility", "")).first()
    upload_file = request.FILES.get("file")
    if facility is None:
        return JsonResponse({"error": "choose one of your facilities"}, status=400)
    if upload_file is None:
        return JsonResponse({"error": "no file in the request (field 'file')"}, status=400)
    if upload_file.size > MAX_UPLOAD_BYTES:
        return JsonResponse({"error": "file larger than 2 GB"}, status=413)
    try:
        with storage.received(upload_file, upload_file.size) as (data, staged):
            result = services.ingest(
                data,
                facility=facility,
                door=audit.Door.PAGE,
                user=request.user,
                actor=request.user.get_username(),
                remote_addr=audit.client_address(request),
                staged=staged,
            )
    except services.IngestError as error:
        return JsonResponse({"error": error.reason}, status=error.http_status)
    except OSError:
        logger.exception("cannot stage an uploaded file")
        unavailable = "archive storage is unavailable; try again later"
        return JsonResponse({"error": unavailable}, status=503)
    return JsonResponse(
        {"outcome": result.outcome.value, "sop_instance_uid": result.sop_instance_uid},
        status=201 if result.outcome == services.IngestOutcome.STORED else 200,
    )

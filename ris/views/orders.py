from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from pacs import selectors as pacs_selectors
from ris import selectors
from ris.models import Order


@require_GET
@capability_required(Capability.VIEW_ORDERS)
def order_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    if status not in Order.Status.values:
        status = ""
    page = Paginator(selectors.order_list(user=request.user, status=status), 50).get_page(
        request.GET.get("page")
    )
    audit.record_list(request, objects=list(page), object_type="order", query={"status": status})
    return render(
        request,
        "ris/order_list.html",
        {"page": page, "status": status, "statuses": Order.Status.choices},
    )


@require_GET
@capability_required(Capability.VIEW_ORDERS)
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(
        selectors.order_list(user=request.user).prefetch_related(
            "appointments__room", "status_changes__user"
        ),
        pk=pk,
    )
    audit.record_request(request, action=audit.Action.VIEW, obj=order)
    studies = pacs_selectors.studies_visible_to(request.user).filter(order=order)
    return render(request, "ris/order_detail.html", {"order": order, "studies": studies})


@require_GET
@capability_required(Capability.READ_STUDIES)
def reading_list(request: HttpRequest) -> HttpResponse:
    orders = list(selectors.reading_list(user=request.user)[:200])
    audit.record_list(request, objects=orders, object_type="order", query={"list": "reading"})
    return render(request, "ris/reading_list.html", {"orders": orders})

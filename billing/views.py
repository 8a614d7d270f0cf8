from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.permissions import capability_required
from accounts.roles import Capability
from billing import selectors


@require_GET
@capability_required(Capability.VIEW_BILLING)
def fee_list(request: HttpRequest) -> HttpResponse:
    code = request.GET.get("code", "").strip()
    page = Paginator(selectors.fee_schedule(user=request.user, code=code), 100).get_page(
        request.GET.get("page")
    )
    return render(request, "billing/fee_list.html", {"page": page, "code": code})

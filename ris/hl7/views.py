"""The HL7 message log for facility administrators: what the interfaces received and
sent, why a message failed, and replaying it once the cause is fixed.

Every page needs MANAGE_FACILITY and shows the administrator's facilities' messages
only (another facility's message is a 404). Messages carry patient data, so every page
showing them is audited as a read; a replay is audited as a change.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from ris.hl7 import outbox, selectors, services, validation
from ris.hl7.forms import InboundFilterForm, OutboundFilterForm, ReplayForm
from ris.hl7.models import InboundMessage, OutboundMessage
from ris.services import RisError

In = InboundMessage.Status
Out = OutboundMessage.Status

PAGE_SIZE = 50
# The error queue: what needs someone to look at it.
ERROR_STATUSES = (In.FAILED, In.REJECTED)
# Offered for replay. A rejected message or a duplicate the service refuses, with its
# reason; a processed one the view refuses: applying it again would apply it twice.
REPLAYABLE = frozenset({In.FAILED, In.RECEIVED, In.IGNORED})

# Status badges in the colours the other pages use: waiting yellow, done green,
# will retry orange, needing a person red; duplicate and ignored plain grey.
INBOUND_BADGE = {
    In.RECEIVED: "status-arrived",
    In.PROCESSED: "status-completed",
    In.FAILED: "status-cancelled",
    In.REJECTED: "status-cancelled",
}
OUTBOUND_BADGE = {
    Out.PENDING: "status-arrived",
    Out.SENT: "status-completed",
    Out.FAILED: "status-in_progress",
    Out.DEAD: "status-cancelled",
}


# ---- received --------------------------------------------------------------------------


@require_GET
@capability_required(Capability.MANAGE_FACILITY)
def message_list(request: HttpRequest, errors: bool = False) -> HttpResponse:
    """The log of messages received, newest first; `errors`: the error queue, failed and
    rejected messages only."""
    form = InboundFilterForm(request.GET)
    filters = form.filters()
    chosen = list(ERROR_STATUSES) if errors else filters.pop("statuses", [])
    filters.pop("statuses", None)
    found = selectors.inbound_message_search(user=request.user, **filters)
    counts = selectors.status_counts(found)
    if chosen:
        found = found.filter(status__in=chosen)
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    shown = list(page)
    _audit_list(request, shown, filters | {"statuses": chosen})
    rows = [
        {
            "message": message,
            "badge": INBOUND_BADGE.get(message.status, ""),
            "replayable": message.status in REPLAYABLE,
        }
        for message in shown
    ]
    return render(
        request,
        "hl7/message_list.html",
        {
            "form": form,
            "page": page,
            "rows": rows,
            "errors": errors,
            "quick": _quick_filters(request, counts, chosen, errors),
            "failed_ids": [m.pk for m in shown if m.status == In.FAILED],
            "many": len({m.facility_id for m in shown}) > 1,
            "here": request.get_full_path(),
        },
    )


@require_GET
@capability_required(Capability.MANAGE_FACILITY)
def message_detail(request: HttpRequest, pk: int) -> HttpResponse:
    message = _visible_message(request, pk)
    audit.record_request(
        request,
        action=audit.Action.VIEW,
        obj=message,
        patient_ids=selectors.message_patient_ids([message]),
    )
    return render(
        request,
        "hl7/message_detail.html",
        {
            "message": message,
            "badge": INBOUND_BADGE.get(message.status, ""),
            "replayable": message.status in REPLAYABLE,
            "view": selectors.message_view(bytes(message.raw) or message.text),
            "ack_lines": _lines(message.ack),
            "warnings": validation.structure_warnings(message.text) if message.text else [],
        },
    )


@require_POST
@capability_required(Capability.MANAGE_FACILITY)
def message_replay(request: HttpRequest, pk: int) -> HttpResponse:
    message = _visible_message(request, pk)
    _replay(request, message)
    return redirect("hl7:message_detail", pk=message.pk)


@require_POST
@capability_required(Capability.MANAGE_FACILITY)
def message_replay_many(request: HttpRequest) -> HttpResponse:
    """Replay the messages ticked on the list, oldest first (one patient's messages
    apply in the order they arrived), each on its own."""
    visible = selectors.inbound_messages(user=request.user).only(
        "id", "facility_id", "status", "message_type", "control_id"
    )
    form = ReplayForm(request.POST, messages=visible)
    if form.is_valid():
        for message in form.cleaned_data["ids"]:
            _replay(request, message)
    else:
        for error in form.errors.get("ids", []):
            messages.error(request, error)
    return redirect(_back(request))


# ---- sent ------------------------------------------------------------------------------


@require_GET
@capability_required(Capability.MANAGE_FACILITY)
def outbound_list(request: HttpRequest) -> HttpResponse:
    form = OutboundFilterForm(request.GET)
    filters = form.filters()
    chosen = filters.pop("statuses", [])
    found = selectors.outbound_message_search(user=request.user, **filters)
    counts = selectors.status_counts(found)
    if chosen:
        found = found.filter(status__in=chosen)
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    shown = list(page)
    audit.record_request(
        request,
        action=audit.Action.LIST,
        object_type="outboundmessage",
        detail={"query": _jsonable(filters | {"statuses": chosen}), "ids": [m.pk for m in shown]},
        patient_ids=[m.patient_id for m in shown if m.patient_id],
    )
    quick = [
        {
            "label": "All",
            "count": sum(counts.values()),
            "url": _query(request, status=None),
            "current": not chosen,
        },
        *(
            {
                "label": label,
                "count": counts.get(value, 0),
                "url": _query(request, status=value),
                "current": chosen == [value],
            }
            for value, label in Out.choices
        ),
    ]
    rows = [{"message": m, "badge": OUTBOUND_BADGE.get(m.status, "")} for m in shown]
    return render(
        request,
        "hl7/outbound_list.html",
        {
            "form": form,
            "page": page,
            "rows": rows,
            "quick": quick,
            "many": len({m.facility_id for m in shown}) > 1,
        },
    )


@require_GET
@capability_required(Capability.MANAGE_FACILITY)
def outbound_detail(request: HttpRequest, pk: int) -> HttpResponse:
    message = selectors.outbound_message_detail(user=request.user, pk=pk)
    if message is None:
        raise Http404("No such message.")
    audit.record_request(request, action=audit.Action.VIEW, obj=message)
    return render(
        request,
        "hl7/outbound_detail.html",
        {
            "message": message,
            "badge": OUTBOUND_BADGE.get(message.status, ""),
            "view": selectors.message_view(message.text),
            "ack_lines": _lines(message.ack),
            "resendable": message.status in (Out.FAILED, Out.DEAD),
        },
    )


@require_POST
@capability_required(Capability.MANAGE_FACILITY)
def outbound_resend(request: HttpRequest, pk: int) -> HttpResponse:
    """Send a dead or failed message again now (after the partner fixed its side)."""
    message = selectors.outbound_message_detail(user=request.user, pk=pk)
    if message is None:
        raise Http404("No such message.")
    before = message.status
    try:
        row = outbox.message_resend(message=message)
    except RisError as error:
        messages.error(request, f"{message.message_type} {message.control_id}: {error}")
    else:
        audit.record_request(
            request, action=audit.Action.UPDATE, obj=row, detail={"resend": [before, row.status]}
        )
        messages.success(request, f"{row.message_type} {row.control_id} queued to send again.")
    return redirect("hl7:outbound_detail", pk=message.pk)


# ---- helpers ---------------------------------------------------------------------------


def _visible_message(request: HttpRequest, pk: int) -> InboundMessage:
    message = selectors.inbound_message_detail(user=request.user, pk=pk)
    if message is None:
        raise Http404("No such message.")
    return message


def _replay(request: HttpRequest, message: InboundMessage) -> None:
    """Apply one message again and say how it went; audited as a change by this user."""
    label = f"{message.message_type or 'Message'} {message.control_id or f'#{message.pk}'}"
    if message.status == In.PROCESSED:
        messages.error(
            request, f"{label} was processed already: replaying it would apply it twice."
        )
        return
    before = message.status
    try:
        row = services.message_replay(message=message)
    except RisError as error:
        messages.error(request, f"{label}: {error}")
        return
    audit.record_request(
        request,
        action=audit.Action.UPDATE,
        obj=row,
        detail={
            "replay": {"from": before, "to": row.status},
            "outcome": row.outcome,
            "error": row.error,
        },
        patient_ids=selectors.message_patient_ids([row]),
    )
    if row.status == In.PROCESSED:
        messages.success(request, f"{label} replayed: {row.outcome or 'processed'}.")
    elif row.status == In.IGNORED:
        messages.info(request, f"{label} replayed, nothing to do: {row.outcome}")
    else:
        where = f" ({row.error_location})" if row.error_location else ""
        messages.error(request, f"{label} failed again{where}: {row.error}")


def _audit_list(request: HttpRequest, shown: list[InboundMessage], query: dict[str, Any]) -> None:
    audit.record_request(
        request,
        action=audit.Action.LIST,
        object_type="inboundmessage",
        detail={"query": _jsonable(query), "ids": [m.pk for m in shown]},
        patient_ids=selectors.message_patient_ids(shown),
    )


def _quick_filters(
    request: HttpRequest, counts: dict[str, int], chosen: list[str], errors: bool
) -> list[dict[str, Any]]:
    """Links to the list by status, with how many messages each holds under the other
    filters; and the error queue."""
    listing = reverse("hl7:message_list")
    in_errors = sum(counts.get(status, 0) for status in ERROR_STATUSES)
    return [
        {
            "label": "All",
            "count": sum(counts.values()),
            "url": listing + _query(request, status=None),
            "current": not chosen,
        },
        {
            "label": "Error queue",
            "count": in_errors,
            "url": reverse("hl7:message_errors") + _query(request, status=None),
            "current": errors,
        },
        *(
            {
                "label": label,
                "count": counts.get(value, 0),
                "url": listing + _query(request, status=value),
                "current": not errors and chosen == [value],
            }
            for value, label in In.choices
        ),
    ]


def _query(request: HttpRequest, **changes: str | None) -> str:
    """The current query string with `changes` made (None: removed), back on page 1."""
    query = request.GET.copy()
    query.pop("page", None)
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return f"?{query.urlencode()}" if query else "?"


def _back(request: HttpRequest) -> str:
    """Where a replay POST came from (a page of this site), else the list."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("hl7:message_list")


def _lines(text: str) -> list[str]:
    """A message's segments, one a line (they end in CR, some senders' in LF)."""
    return [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line]


def _jsonable(query: dict[str, Any]) -> dict[str, Any]:
    return {
        key: str(value) if hasattr(value, "isoformat") else value for key, value in query.items()
    }

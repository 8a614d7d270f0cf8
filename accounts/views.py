from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts import audit
from accounts.models import AuditEvent, Notification
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.selectors import audit_event_search, facilities_for


class LoginView(auth_views.LoginView):
    """Django's login, with each success and failure written to the audit trail."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_valid(form)
        audit.record_request(self.request, action=audit.Action.LOGIN)
        return response

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        audit.record(
            action=audit.Action.LOGIN_FAILED,
            door=audit.Door.PAGE,
            actor=(form.data.get("username") or "")[:150] or "anonymous",
            remote_addr=audit.client_address(self.request),
            path=self.request.path,
        )
        return super().form_invalid(form)


class LogoutView(auth_views.LogoutView):
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            audit.record_request(request, action=audit.Action.LOGOUT)
        return super().post(request, *args, **kwargs)


@require_GET
@login_not_required
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        # The front door of the service is the login form itself.
        return LoginView.as_view()(request)
    memberships = request.user.memberships.select_related("facility").order_by(
        "facility__name", "role"
    )
    return render(
        request,
        "accounts/home.html",
        {"memberships": memberships, "facilities": facilities_for(request.user)},
    )


class AuditSearchForm(forms.Form):
    actor = forms.CharField(required=False, label="User / AE / sender")
    action = forms.ChoiceField(required=False, choices=[("", "any"), *AuditEvent.Action.choices])
    door = forms.ChoiceField(required=False, choices=[("", "any"), *AuditEvent.Door.choices])
    object_type = forms.ChoiceField(
        required=False,
        label="Object",
        choices=[
            ("", "any"),
            ("patient", "Patient"),
            ("order", "Order"),
            ("appointment", "Appointment"),
            ("study", "Study"),
            ("report", "Report"),
            ("procedure", "Procedure"),
            ("room", "Room"),
            ("inboundmessage", "HL7 message received"),
            ("outboundmessage", "HL7 message sent"),
        ],
    )
    object_id = forms.CharField(required=False, label="Object id")
    patient_id = forms.IntegerField(required=False, min_value=1, label="Patient id")
    remote_addr = forms.GenericIPAddressField(required=False, label="From address")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


@require_GET
@capability_required(Capability.VIEW_AUDIT)
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditSearchForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    events = audit_event_search(
        user=request.user, **{k: v for k, v in filters.items() if v not in ("", None)}
    )
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(request, "accounts/audit_log.html", {"form": form, "page": page})


@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    """The user's notifications, unread first."""
    notes = Notification.objects.filter(user=request.user).order_by("-read_at", "-created_at")[:200]
    return render(request, "accounts/notifications.html", {"notifications": notes})


@require_POST
def notification_open(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark a notification read and go to what it is about (a page of ours only)."""
    note = get_object_or_404(Notification, pk=pk, user=request.user)
    if note.read_at is None:
        Notification.objects.filter(pk=note.pk).update(read_at=timezone.now())
    if note.url and url_has_allowed_host_and_scheme(note.url, allowed_hosts=None):
        return redirect(note.url)
    return redirect("accounts:notifications")

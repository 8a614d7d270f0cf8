from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest, HttpResponse
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from accounts import audit
from accounts.models import AuditEvent, Facility, Membership, User


class AuditedAdmin(admin.ModelAdmin):
    """Admin pages of patient data: opening a record or a list is audited (door: admin)."""

    audit_object_type = ""

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        obj = self.get_object(request, object_id)
        if obj is not None and request.method == "GET":
            audit.record_request(request, action=audit.Action.VIEW, door=audit.Door.ADMIN, obj=obj)
        return response

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            audit.record_list(
                request,
                objects=list(changelist.result_list),
                object_type=self.model._meta.model_name or "",
                door=audit.Door.ADMIN,
                query=dict(request.GET),
            )
        return response

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit.record_request(
            request,
            action=audit.Action.UPDATE if change else audit.Action.CREATE,
            door=audit.Door.ADMIN,
            obj=obj,
            detail={"changed": form.changed_data},
        )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    inlines = [MembershipInline]
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Provider", {"fields": ("title", "npi")}),
    )
    list_display = ("username", "first_name", "last_name", "email", "is_active", "is_staff")


@admin.register(Facility)
class FacilityAdmin(admin.ModelAdmin):
    list_display = ("name", "code", "mrn_issuer", "timezone", "is_active")
    search_fields = ("name", "code")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is append-only."""

    list_display = ("at", "actor", "action", "door", "object_type", "object_id", "remote_addr")
    list_filter = ("action", "door", "object_type")
    search_fields = ("actor", "object_id", "object_repr")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _platform_operators_only(request: HttpRequest) -> bool:
    """The admin site bypasses facility scoping, so it is for the platform operator only."""
    return request.user.is_active and request.user.is_superuser


admin.site.has_permission = _platform_operators_only
admin.site.site_header = "RadPACS administration"


# API tokens are stored as their digest and shown once by `manage.py issue_api_token`:
# a token added here would be one nobody knows. The admin lists and revokes them.
admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    list_display = ("user", "created")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from accounts.admin import AuditedAdmin
from pacs.models import Annotation, DicomNode


@admin.register(DicomNode)
class DicomNodeAdmin(admin.ModelAdmin):
    list_display = ("ae_title", "host", "port", "facility", "may_store", "may_query", "is_active")
    list_filter = ("facility", "is_active")
    search_fields = ("ae_title", "host", "description")


@admin.register(Annotation)
class AnnotationAdmin(AuditedAdmin):
    """View only: annotations are the readers' own work, written and deleted in the viewer
    (where each change is audited)."""

    list_display = ("updated_at", "user", "tool_name", "study", "sop_instance_uid", "facility")
    list_filter = ("facility", "tool_name")
    list_select_related = ("user", "study", "facility")
    search_fields = ("uid", "user__username", "study__study_instance_uid", "sop_instance_uid")
    date_hierarchy = "updated_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

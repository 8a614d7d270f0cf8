from django.contrib import admin

from pacs.models import DicomNode


@admin.register(DicomNode)
class DicomNodeAdmin(admin.ModelAdmin):
    list_display = ("ae_title", "host", "port", "facility", "may_store", "may_query", "is_active")
    list_filter = ("facility", "is_active")
    search_fields = ("ae_title", "host", "description")

from django.contrib import admin

from accounts.admin import AuditedAdmin
from ris.models import Appointment, Order, Patient, Procedure, Room, RoomClosure, RoomHours


@admin.register(Patient)
class PatientAdmin(AuditedAdmin):
    list_display = ("family_name", "given_name", "mrn", "mrn_issuer", "birth_date", "facility")
    list_filter = ("facility", "sex")
    search_fields = ("family_name", "given_name", "mrn")


@admin.register(Procedure)
class ProcedureAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "modality", "duration_minutes", "facility", "is_active")
    list_filter = ("facility", "modality", "is_active")
    search_fields = ("code", "name")


class RoomHoursInline(admin.TabularInline):
    model = RoomHours
    extra = 1
    help_text = "Several rows on one weekday make a split day; the gaps are breaks."


class RoomClosureInline(admin.TabularInline):
    model = RoomClosure
    extra = 1


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("name", "modality", "ae_title", "facility", "is_active")
    list_filter = ("facility", "modality")
    filter_horizontal = ("procedures",)
    inlines = [RoomHoursInline, RoomClosureInline]


@admin.register(Order)
class OrderAdmin(AuditedAdmin):
    list_display = ("accession_number", "patient", "procedure", "status", "priority", "facility")
    list_filter = ("facility", "status", "priority")
    search_fields = ("accession_number", "placer_order_number", "patient__family_name")
    raw_id_fields = ("patient", "procedure", "referring_physician")
    readonly_fields = ("accession_number",)


@admin.register(Appointment)
class AppointmentAdmin(AuditedAdmin):
    list_display = ("starts_at", "room", "order", "is_walk_in", "is_cancelled", "facility")
    list_filter = ("facility", "room", "is_cancelled", "is_walk_in")
    raw_id_fields = ("order", "moved_from")

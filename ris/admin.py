from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from accounts import audit
from accounts.admin import AuditedAdmin
from billing.models import Payer
from ris.models import (
    Appointment,
    Order,
    Patient,
    PatientContact,
    PatientIdentifier,
    PatientInsurance,
    Procedure,
    Room,
    RoomClosure,
    RoomHours,
)


class PatientIdentifierInline(admin.TabularInline):
    model = PatientIdentifier
    fields = ("type_code", "value", "issuer")
    extra = 0


class PatientContactInline(admin.TabularInline):
    model = PatientContact
    extra = 0


class PatientInsuranceInline(admin.TabularInline):
    model = PatientInsurance
    extra = 0

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "payer":
            # Payers of the patient's facility only; on a new patient, of any.
            patient_id = (
                request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            )
            patient = Patient.objects.filter(pk=patient_id).first() if patient_id else None
            if patient is not None:
                kwargs["queryset"] = Payer.objects.filter(facility=patient.facility)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Patient)
class PatientAdmin(AuditedAdmin):
    list_display = ("family_name", "given_name", "mrn", "mrn_issuer", "birth_date", "facility")
    list_filter = ("facility", "sex")
    search_fields = ("family_name", "given_name", "mrn", "identifiers__value")
    readonly_fields = ("merged_into",)
    inlines = (PatientIdentifierInline, PatientContactInline, PatientInsuranceInline)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Identifiers carry the patient's facility (their uniqueness is per facility);
        each changed list is audited like the patient row."""
        for inline_form in formset.forms:
            if isinstance(inline_form.instance, PatientIdentifier):
                inline_form.instance.facility_id = form.instance.facility_id
        super().save_formset(request, form, formset, change)
        if formset.has_changed():
            audit.record_request(
                request,
                action=audit.Action.UPDATE,
                door=audit.Door.ADMIN,
                obj=form.instance,
                detail={formset.prefix: "changed in the admin site"},
            )


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

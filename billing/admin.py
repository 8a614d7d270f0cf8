from django.contrib import admin

from billing.models import FeeScheduleEntry, Payer


@admin.register(Payer)
class PayerAdmin(admin.ModelAdmin):
    list_display = ("name", "payer_identifier", "facility", "is_active")
    list_filter = ("facility",)


@admin.register(FeeScheduleEntry)
class FeeScheduleEntryAdmin(admin.ModelAdmin):
    list_display = (
        "procedure_code",
        "payer",
        "global_price",
        "professional_price",
        "technical_price",
        "effective_from",
        "effective_to",
        "facility",
    )
    list_filter = ("facility", "payer")
    search_fields = ("procedure_code",)

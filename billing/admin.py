from django.contrib import admin

from billing.models import BillingProfile, FeeScheduleEntry, Payer


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


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = ("facility", "tax_id", "sender_id", "receiver_id", "receiver_name")

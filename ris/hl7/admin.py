from django.contrib import admin

from ris.hl7.models import Partner


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    """The HIS systems we exchange HL7 with. Messages themselves are read and replayed on
    the message log pages (/hl7/messages/), where reading them is audited."""

    list_display = (
        "name",
        "facility",
        "application",
        "application_facility",
        "host",
        "port",
        "sends_results",
        "sends_order_status",
        "announces_orders",
        "posts_charges",
        "is_active",
    )
    list_filter = ("facility", "is_active")
    search_fields = ("name", "application", "application_facility", "host")

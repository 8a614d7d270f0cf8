"""Navigation built from the user's capabilities, so each role sees its own menu."""

from django.http import HttpRequest
from django.urls import reverse

from accounts.models import Notification
from accounts.roles import Capability
from accounts.scoping import capabilities_for

# (label, url name, capability needed; None: any logged-in user)
NAVIGATION: list[tuple[str, str, str | None]] = [
    ("Home", "home", None),
    ("Today", "ris:schedule_day", Capability.VIEW_SCHEDULE),
    ("Patients", "ris:patient_list", Capability.VIEW_PATIENTS),
    ("Orders", "ris:order_list", Capability.VIEW_ORDERS),
    ("Reading worklist", "reporting:worklist", Capability.READ_STUDIES),
    ("Critical results", "reporting:critical_list", Capability.READ_STUDIES),
    ("Results", "reporting:results", Capability.VIEW_REPORTS),
    ("Studies", "pacs:study_list", Capability.VIEW_IMAGES),
    ("Upload images", "pacs:upload", Capability.UPLOAD_IMAGES),
    ("Charges", "billing:charge_list", Capability.VIEW_BILLING),
    ("Fee schedule", "billing:fee_list", Capability.VIEW_BILLING),
    ("Revenue", "billing:dashboard", Capability.VIEW_BILLING),
    ("Audit trail", "accounts:audit_log", Capability.VIEW_AUDIT),
    ("Rooms", "ris:room_list", Capability.MANAGE_FACILITY),
    ("Procedures", "ris:procedure_list", Capability.MANAGE_FACILITY),
    ("HL7 messages", "hl7:message_list", Capability.MANAGE_FACILITY),
    ("Turnaround", "reporting:turnaround", Capability.MANAGE_FACILITY),
]


def navigation(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": []}
    caps = capabilities_for(user)
    items = [
        {"label": label, "url": reverse(name), "active": request.path == reverse(name)}
        for label, name, cap in NAVIGATION
        if cap is None or cap in caps
    ]
    unread = Notification.objects.filter(user=user, read_at__isnull=True).count()
    return {"nav_items": items, "user_capabilities": caps, "unread_notifications": unread}

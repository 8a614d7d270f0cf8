from django.db.models import QuerySet

from accounts.models import User
from accounts.roles import Capability
from billing.models import FeeScheduleEntry


def fee_schedule(*, user: User, code: str = "") -> QuerySet[FeeScheduleEntry]:
    fees = FeeScheduleEntry.objects.visible_to(user, Capability.VIEW_BILLING).select_related(
        "payer", "facility"
    )
    return fees.filter(procedure_code__istartswith=code) if code else fees

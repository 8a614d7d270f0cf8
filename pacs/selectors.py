"""Read queries of the archive, scoped to what the asking user may see."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from accounts.models import User
from accounts.roles import Capability, Role, capabilities_of
from accounts.scoping import roles_by_facility
from pacs.models import Study


def studies_visible_to(user: User) -> QuerySet[Study]:
    """Studies of the user's facilities; at a facility where the user is only a referring
    physician, just the studies of the orders they referred."""
    full, referred = set(), set()
    for facility_id, roles in roles_by_facility(user).items():
        if Capability.VIEW_IMAGES not in capabilities_of(roles):
            continue
        staff = roles - {Role.REFERRING_PHYSICIAN}
        if Capability.VIEW_IMAGES in capabilities_of(staff):
            full.add(facility_id)
        else:
            referred.add(facility_id)
    if not full and not referred:
        return Study.objects.none()
    return Study.objects.filter(
        Q(facility_id__in=full) | Q(facility_id__in=referred, order__referring_physician=user)
    )


def study_list(*, user: User, unmatched: bool = False, query: str = "") -> QuerySet[Study]:
    studies = studies_visible_to(user).select_related("patient", "order", "facility")
    if unmatched:
        studies = studies.filter(patient__isnull=True)
    query = query.strip()
    if query:
        studies = studies.filter(
            Q(patient_name__icontains=query)
            | Q(dicom_patient_id=query)
            | Q(accession_number=query)
            | Q(study_instance_uid=query)
        )
    return studies.order_by("-received_at")

"""Roles a user holds at a facility, and what each role may do.

Capabilities are plain strings checked by views, API permissions and the
navigation; one table here is the whole policy, so it can be read and audited.
"""

from django.db import models


class Role(models.TextChoices):
    FRONT_DESK = "front_desk", "Front desk"
    TECHNOLOGIST = "technologist", "Technologist"
    RADIOLOGIST = "radiologist", "Radiologist"
    REFERRING_PHYSICIAN = "referring_physician", "Referring physician"
    BILLING = "billing", "Billing"
    ADMIN = "admin", "Facility administrator"


class Capability(models.TextChoices):
    VIEW_PATIENTS = "view_patients", "View patients"
    EDIT_PATIENTS = "edit_patients", "Register and edit patients"
    VIEW_ORDERS = "view_orders", "View orders"
    EDIT_ORDERS = "edit_orders", "Create and change orders"
    VIEW_SCHEDULE = "view_schedule", "View the schedule"
    EDIT_SCHEDULE = "edit_schedule", "Book, move and cancel appointments"
    PERFORM_EXAMS = "perform_exams", "Start and complete exams"
    VIEW_IMAGES = "view_images", "View images"
    UPLOAD_IMAGES = "upload_images", "Upload and reconcile images"
    READ_STUDIES = "read_studies", "Read studies and write reports"
    SIGN_REPORTS = "sign_reports", "Sign reports"
    VIEW_REPORTS = "view_reports", "View final reports"
    VIEW_BILLING = "view_billing", "View charges and fee schedules"
    EDIT_BILLING = "edit_billing", "Edit charges, fee schedules and export claims"
    VIEW_AUDIT = "view_audit", "Search the audit trail"
    MANAGE_FACILITY = "manage_facility", "Manage users, rooms and DICOM peers"


C = Capability

ROLE_CAPABILITIES: dict[str, frozenset[str]] = {
    Role.FRONT_DESK: frozenset(
        {C.VIEW_PATIENTS, C.EDIT_PATIENTS, C.VIEW_ORDERS, C.EDIT_ORDERS}
        | {C.VIEW_SCHEDULE, C.EDIT_SCHEDULE, C.VIEW_IMAGES, C.UPLOAD_IMAGES}
    ),
    Role.TECHNOLOGIST: frozenset(
        {C.VIEW_PATIENTS, C.VIEW_ORDERS, C.VIEW_SCHEDULE, C.PERFORM_EXAMS}
        | {C.VIEW_IMAGES, C.UPLOAD_IMAGES}
    ),
    Role.RADIOLOGIST: frozenset(
        {C.VIEW_PATIENTS, C.VIEW_ORDERS, C.VIEW_SCHEDULE, C.VIEW_IMAGES}
        | {C.READ_STUDIES, C.SIGN_REPORTS, C.VIEW_REPORTS}
    ),
    # Referring physicians see their own patients' results only (narrowed per patient
    # by the reporting issue's selectors); they never see the schedule or billing.
    Role.REFERRING_PHYSICIAN: frozenset({C.VIEW_IMAGES, C.VIEW_REPORTS}),
    Role.BILLING: frozenset({C.VIEW_PATIENTS, C.VIEW_ORDERS, C.VIEW_BILLING, C.EDIT_BILLING}),
    Role.ADMIN: frozenset({C.VIEW_AUDIT, C.MANAGE_FACILITY, C.VIEW_SCHEDULE, C.VIEW_BILLING}),
}


def capabilities_of(roles: set[str] | frozenset[str]) -> frozenset[str]:
    caps: set[str] = set()
    for role in roles:
        caps |= ROLE_CAPABILITIES.get(role, frozenset())
    return frozenset(caps)

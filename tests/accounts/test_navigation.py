import pytest
from django.urls import reverse

from accounts.roles import Role
from tests.factories import client_for, member

pytestmark = pytest.mark.django_db

EXPECTED_MENU = {
    Role.FRONT_DESK: ["Home", "Today", "Patients", "Orders", "Studies", "Upload images"],
    Role.TECHNOLOGIST: ["Home", "Today", "Patients", "Orders", "Studies", "Upload images"],
    Role.RADIOLOGIST: [
        "Home",
        "Today",
        "Patients",
        "Orders",
        "Reading worklist",
        "Critical results",
        "Results",
        "Studies",
    ],
    Role.REFERRING_PHYSICIAN: ["Home", "Results", "Studies"],
    Role.BILLING: ["Home", "Patients", "Orders", "Charges", "Fee schedule", "Revenue"],
    Role.ADMIN: [
        "Home",
        "Today",
        "Charges",
        "Fee schedule",
        "Revenue",
        "Audit trail",
        "Rooms",
        "Procedures",
        "HL7 messages",
        "Turnaround",
    ],
}


@pytest.mark.parametrize("role", list(EXPECTED_MENU))
def test_each_role_gets_its_own_menu_and_every_entry_opens(role, facility_a):
    client = client_for(member(facility_a, role))
    response = client.get(reverse("home"))
    items = response.context["nav_items"]
    assert [item["label"] for item in items] == EXPECTED_MENU[role]
    for item in items:
        assert client.get(item["url"]).status_code == 200, item


def test_pages_are_laid_out_for_phones_and_tablets(clerk):
    html = client_for(clerk).get(reverse("home")).content.decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert 'id="nav-toggle"' in html

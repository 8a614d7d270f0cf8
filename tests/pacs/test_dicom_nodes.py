import pytest
from django.core.exceptions import ValidationError

from accounts.roles import Role
from pacs.dicom.vocabulary import validate_ae_title
from tests.factories import DicomNodeFactory, client_for, member

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("title", ["RADPACS", "CT_1", "A", "SIXTEEN_CHARS_OK"])
def test_valid_ae_titles_pass(title):
    validate_ae_title(title)


@pytest.mark.parametrize(
    "title", ["", "   ", "SEVENTEEN_CHARS_X", "BACK\\SLASH", " LEADING", "TAB\tX", "ÜMLAUT"]
)
def test_invalid_ae_titles_are_refused_with_a_reason(title):
    with pytest.raises(ValidationError):
        validate_ae_title(title)


def test_a_node_with_a_bad_ae_title_does_not_validate(facility_a):
    node = DicomNodeFactory.build(facility=facility_a, ae_title="BAD\\AE")
    with pytest.raises(ValidationError, match="backslash"):
        node.full_clean()


def test_facility_admins_list_their_dicom_nodes_through_the_api(facility_a):
    DicomNodeFactory(facility=facility_a, ae_title="NORTH_WS")
    admin = member(facility_a, Role.ADMIN)
    response = client_for(admin).get("/api/v1/dicom-nodes/")
    assert [n["ae_title"] for n in response.json()["results"]] == ["NORTH_WS"]
    clerk = member(facility_a, Role.FRONT_DESK)
    assert client_for(clerk).get("/api/v1/dicom-nodes/").status_code == 403

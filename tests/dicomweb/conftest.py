"""A live server and dicomweb-client (a real DICOMweb client written by others) logged
in with a token, over an archive holding two studies of facility A and one of B."""

from dataclasses import dataclass

import pytest
from dicomweb_client import DICOMwebClient
from django.core.cache import cache

from accounts.models import User
from accounts.roles import Role
from pacs import services
from pacs.dicom import synthetic
from pacs.models import Study
from tests.factories import api_token, member


@dataclass
class Archive:
    first: synthetic.StudySpec  # facility A: 2 series (3 + 2 CT slices)
    second: synthetic.StudySpec  # facility A: 1 series of 2
    other: synthetic.StudySpec  # facility B: 1 series of 1
    sent: dict[str, list[bytes]]


def _ingest(spec: synthetic.StudySpec, facility, series_sizes: tuple[int, ...]) -> list[bytes]:
    files = []
    for number, size in enumerate(series_sizes, start=1):
        for data in synthetic.ct_series(
            spec, slices=size, series_number=number, rows=32, columns=32
        ):
            services.ingest(data, facility=facility, door="dimse")
            files.append(data)
    return files


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Pixel-read audit windows live in the cache: each test starts with none open."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def archive(facility_a, facility_b, image_store) -> Archive:
    first = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="P1", patient_name="Smith^John"),
        accession_number="ACC1",
        study_date="20240115",
        description="CT CHEST",
    )
    second = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="P2", patient_name="Müller^Jürgen"),
        accession_number="ACC2",
        study_date="20240302",
        description="CT HEAD",
    )
    other = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="P9", patient_name="Other^Olga"),
        accession_number="ACC9",
        study_date="20240115",
    )
    sent = {
        "first": _ingest(first, facility_a, (3, 2)),
        "second": _ingest(second, facility_a, (2,)),
        "other": _ingest(other, facility_b, (1,)),
    }
    for study in Study.objects.all():
        services.study_refresh(study.pk)
    return Archive(first, second, other, sent)


def token_for(user: User) -> str:
    return api_token(user)


def client_as(live_server, user: User | None, **headers: str) -> DICOMwebClient:
    if user is not None:
        headers = {"Authorization": f"Bearer {token_for(user)}", **headers}
    return DICOMwebClient(url=f"{live_server.url}/dicom-web", headers=headers)


@pytest.fixture
def reader(facility_a) -> User:
    return member(facility_a, Role.RADIOLOGIST, username="reader")


@pytest.fixture
def dicomweb(live_server, reader, archive) -> DICOMwebClient:
    """dicomweb-client as facility A's radiologist."""
    return client_as(live_server, reader)

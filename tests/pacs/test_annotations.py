import json
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.roles import Role
from pacs.models import Annotation, Instance, Study
from pacs.viewer import services
from tests.factories import PatientFactory, client_for, member
from tests.pacs.test_viewer_page import archived_study, config_of, viewer_url

pytestmark = [
    pytest.mark.django_db,
    # The viewer never reads image files: one image store (disk) is enough here.
    pytest.mark.parametrize("image_store", ["disk"], indirect=True),
]

# What Cornerstone3D keeps for a Length measurement, more or less: opaque to the server.
LENGTH = {
    "metadata": {"toolName": "Length", "FrameOfReferenceUID": "1.2.3"},
    "data": {
        "handles": {"points": [[-10.5, 3.25, -1.25], [20.0, 3.25, -1.25]]},
        "label": "ant. wall",
        "cachedStats": {},
    },
}


@pytest.fixture
def study(facility_a) -> Study:
    PatientFactory(facility=facility_a, mrn="P1")
    return archived_study(facility_a, "P1", slices=2)


def body_for(study: Study, **changes) -> dict:
    """A valid PUT body for the study's first image, with `changes`."""
    instance = Instance.objects.filter(series__study=study).select_related("series").first()
    body = {
        "studyInstanceUID": study.study_instance_uid,
        "seriesInstanceUID": instance.series.series_instance_uid,
        "sopInstanceUID": instance.sop_instance_uid,
        "frameNumber": None,
        "toolName": "Length",
        "data": LENGTH,
    }
    return {**body, **changes}


def annotation_url(uid: uuid.UUID | str) -> str:
    return reverse("viewer:annotation", args=[uid])


def list_url(study: Study) -> str:
    return reverse("viewer:study_annotations", args=[study.study_instance_uid])


def put(client: Client, uid: uuid.UUID | str, body: dict | str, **extra):
    text = body if isinstance(body, str) else json.dumps(body)
    return client.put(annotation_url(uid), text, content_type="application/json", **extra)


def test_a_reader_saves_updates_lists_and_deletes_their_annotation(radiologist, study):
    client = client_for(radiologist)
    uid = uuid.uuid4()

    created = put(client, uid, body_for(study))
    assert created.status_code == 201
    record = created.json()
    assert record["uid"] == str(uid)
    assert record["toolName"] == "Length"
    assert record["data"] == LENGTH
    assert record["frameNumber"] is None
    assert record["updatedAt"]

    moved = {**LENGTH, "data": {**LENGTH["data"], "label": "post. wall"}}
    updated = put(client, uid, body_for(study, data=moved, frameNumber=1))
    assert updated.status_code == 200
    assert (updated.json()["data"], updated.json()["frameNumber"]) == (moved, 1)

    listed = client.get(list_url(study)).json()["annotations"]
    assert listed == [updated.json()]
    assert set(listed[0]) == {
        "uid",
        "seriesInstanceUID",
        "sopInstanceUID",
        "frameNumber",
        "toolName",
        "data",
        "updatedAt",
    }

    assert client.delete(annotation_url(uid)).status_code == 204
    assert client.get(list_url(study)).json() == {"annotations": []}
    assert client.delete(annotation_url(uid)).status_code == 404


def test_a_missing_frame_number_is_null(radiologist, study):
    """JSON.stringify drops a key whose value is undefined."""
    body = body_for(study)
    del body["frameNumber"]
    response = put(client_for(radiologist), uuid.uuid4(), body)
    assert response.status_code == 201
    assert response.json()["frameNumber"] is None


def test_annotations_are_private_to_the_reader_who_drew_them(radiologist, facility_a, study):
    colleague = member(facility_a, Role.RADIOLOGIST)
    uid = uuid.uuid4()
    put(client_for(radiologist), uid, body_for(study))
    theirs = client_for(colleague)

    assert theirs.get(list_url(study)).json() == {"annotations": []}
    overwrite = put(theirs, uid, body_for(study, data={"scribble": True}))
    assert overwrite.status_code == 403
    assert "ant. wall" not in overwrite.content.decode()
    assert theirs.delete(annotation_url(uid)).status_code == 403
    assert Annotation.objects.get(uid=uid).data == LENGTH


def test_a_study_the_user_may_not_see_is_refused_and_an_unknown_one_not_found(
    outsider, radiologist, study
):
    client = client_for(outsider)
    assert client.get(list_url(study)).status_code == 403
    refused = put(client, uuid.uuid4(), body_for(study))
    assert refused.status_code == 403
    assert "another facility" in refused.json()["error"]

    unknown = reverse("viewer:study_annotations", args=["1.2.3.4"])
    assert client_for(radiologist).get(unknown).status_code == 404
    missing = put(client_for(radiologist), uuid.uuid4(), body_for(study, studyInstanceUID="1.2.3"))
    assert missing.status_code == 404
    assert not Annotation.objects.exists()


def test_an_annotation_cannot_move_to_another_study(radiologist, facility_a, study):
    client = client_for(radiologist)
    uid = uuid.uuid4()
    put(client, uid, body_for(study))
    other = archived_study(facility_a, "P1")
    response = put(client, uid, body_for(other))
    assert response.status_code == 400
    assert "another study" in response.json()["error"]
    assert Annotation.objects.get(uid=uid).study == study


def _without(body: dict, key: str) -> dict:
    return {name: value for name, value in body.items() if name != key}


def _with_data_text(body: dict, text: str) -> str:
    """The body as JSON text whose data is `text`, for what json.dumps would not write."""
    return json.dumps({**body, "data": {"x": 0}}).replace('{"x": 0}', text)


@pytest.mark.parametrize(
    ("make_body", "reason"),
    [
        pytest.param(lambda ok: "{not json", "not valid JSON", id="not-json"),
        pytest.param(lambda ok: "[1, 2]", "must be a JSON object", id="not-an-object"),
        pytest.param(lambda ok: _without(ok, "toolName"), "toolName is missing", id="no-tool"),
        pytest.param(lambda ok: _without(ok, "data"), "data is missing", id="no-data"),
        pytest.param(
            lambda ok: {**ok, "sopInstanceUID": 42}, "must be a string", id="uid-not-a-string"
        ),
        pytest.param(
            lambda ok: {**ok, "seriesInstanceUID": "1.2.abc"}, "not a DICOM UID", id="bad-uid"
        ),
        pytest.param(
            lambda ok: {**ok, "studyInstanceUID": "1." + "2" * 63}, "at most 64", id="long-uid"
        ),
        pytest.param(
            lambda ok: {**ok, "sopInstanceUID": "1.2.3\n"}, "not a DICOM UID", id="uid-newline"
        ),
        pytest.param(lambda ok: {**ok, "frameNumber": "1"}, "frameNumber", id="frame-text"),
        pytest.param(lambda ok: {**ok, "frameNumber": True}, "frameNumber", id="frame-bool"),
        pytest.param(lambda ok: {**ok, "frameNumber": 0}, "frameNumber", id="frame-zero"),
        pytest.param(lambda ok: {**ok, "frameNumber": 2}, "beyond", id="frame-beyond"),
        pytest.param(lambda ok: {**ok, "toolName": "Eraser"}, "toolName must be one of", id="tool"),
        pytest.param(lambda ok: {**ok, "data": [1, 2]}, "data must be an object", id="data-list"),
        pytest.param(
            lambda ok: {**ok, "data": {"text": "x" * 70_000}}, "larger than 64 KB", id="data-big"
        ),
        pytest.param(lambda ok: {**ok, "data": {"text": "a\x00b"}}, "NUL", id="data-nul"),
        pytest.param(lambda ok: {**ok, "data": {"\x00": 1}}, "NUL", id="data-nul-key"),
        pytest.param(
            lambda ok: {**ok, "data": {"text": "\ud800"}}, "not valid Unicode", id="surrogate"
        ),
        pytest.param(lambda ok: _with_data_text(ok, '{"mean": NaN}'), "not valid", id="nan"),
        pytest.param(lambda ok: _with_data_text(ok, '{"area": 1e400}'), "not valid", id="inf"),
        pytest.param(
            lambda ok: _with_data_text(ok, '{"a":' * 50_000 + "1" + "}" * 50_000),
            "not valid JSON",
            id="deep",
        ),
        pytest.param(
            lambda ok: {**ok, "seriesInstanceUID": "1.2.3"}, "not a series", id="other-series"
        ),
        pytest.param(
            lambda ok: {**ok, "sopInstanceUID": "1.2.3"}, "not an instance", id="other-sop"
        ),
        pytest.param(lambda ok: {**ok, "uid": "not-the-url-uid"}, "differs", id="uid-mismatch"),
    ],
)
def test_each_invalid_body_is_a_400_with_the_reason(radiologist, study, make_body, reason):
    response = put(client_for(radiologist), uuid.uuid4(), make_body(body_for(study)))
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert not Annotation.objects.exists()


def test_an_image_of_another_study_is_not_in_this_one(radiologist, facility_a, study):
    elsewhere = body_for(archived_study(facility_a, "P1"))
    mixed = body_for(study, sopInstanceUID=elsewhere["sopInstanceUID"])
    response = put(client_for(radiologist), uuid.uuid4(), mixed)
    assert response.status_code == 400
    assert "not an instance" in response.json()["error"]


def test_a_body_beyond_the_upload_limit_is_refused(radiologist, study, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    body = body_for(study, data={"text": "x" * 200_000})
    response = put(client_for(radiologist), uuid.uuid4(), body)
    assert response.status_code == 413
    assert "too large" in response.json()["error"]


def test_wrong_methods_are_405_with_the_allowed_ones(radiologist, study):
    client = client_for(radiologist)
    on_list = client.post(list_url(study))
    assert (on_list.status_code, on_list["Allow"]) == (405, "GET")
    on_one = client.get(annotation_url(uuid.uuid4()))
    assert (on_one.status_code, on_one["Allow"]) == (405, "PUT, DELETE")
    assert client.patch(annotation_url(uuid.uuid4())).status_code == 405


def test_a_script_without_a_session_gets_a_401_not_the_login_form(study):
    response = Client().get(list_url(study))
    assert response.status_code == 401
    assert response.json() == {"error": "log in to use the viewer"}


def test_a_role_without_images_cannot_use_the_api(biller, study):
    assert client_for(biller).get(list_url(study)).status_code == 403
    assert put(client_for(biller), uuid.uuid4(), body_for(study)).status_code == 403


def test_writes_need_the_csrf_token_the_page_hands_out(radiologist, study):
    client = Client(enforce_csrf_checks=True)
    client.force_login(radiologist)
    uid = uuid.uuid4()

    assert put(client, uid, body_for(study)).status_code == 403
    assert not Annotation.objects.exists()

    token = config_of(client.get(viewer_url(study)))["csrfToken"]
    assert put(client, uid, body_for(study), HTTP_X_CSRFTOKEN=token).status_code == 201
    assert client.delete(annotation_url(uid)).status_code == 403
    assert client.delete(annotation_url(uid), HTTP_X_CSRFTOKEN=token).status_code == 204


def test_each_write_is_audited_with_the_reader_and_what_changed(radiologist, facility_a, study):
    client = client_for(radiologist)
    uid = uuid.uuid4()
    put(client, uid, body_for(study), REMOTE_ADDR="10.1.2.3")
    put(client, uid, body_for(study, data={"moved": True}))
    annotation_id = str(Annotation.objects.get(uid=uid).pk)
    client.delete(annotation_url(uid))

    events = AuditEvent.objects.filter(object_type="annotation").exclude(action="list")
    assert [event.action for event in events.order_by("at", "pk")] == [
        "create",
        "update",
        "delete",
    ]
    for event in events:
        assert (event.user, event.door, event.object_id) == (radiologist, "page", annotation_id)
        assert (event.facility_id, event.patient_id) == (facility_a.pk, study.patient_id)
        assert event.detail["uid"] == str(uid)
        assert event.detail["study_instance_uid"] == study.study_instance_uid
    assert events.get(action="create").remote_addr == "10.1.2.3"
    assert events.get(action="update").detail["changed"] == ["data"]


def test_listing_the_annotations_is_audited(radiologist, study):
    client = client_for(radiologist)
    put(client, uuid.uuid4(), body_for(study))
    client.get(list_url(study))
    event = AuditEvent.objects.get(object_type="annotation", action="list")
    assert event.user == radiologist
    assert event.detail["query"] == {"study_instance_uid": study.study_instance_uid}
    assert list(event.patients.values_list("patient_id", flat=True)) == [study.patient_id]


def test_the_service_refuses_a_uid_another_reader_saved_meanwhile(radiologist, facility_a, study):
    """The view checks the owner first; the service checks again under the row lock."""
    colleague = member(facility_a, Role.RADIOLOGIST)
    body = body_for(study)
    fields = {
        "study": study,
        "series_instance_uid": body["seriesInstanceUID"],
        "sop_instance_uid": body["sopInstanceUID"],
        "frame_number": None,
        "tool_name": "Probe",
        "data": {},
    }
    uid = uuid.uuid4()
    services.save_annotation(uid=uid, user=radiologist, **fields)
    with pytest.raises(services.AnnotationError):
        services.save_annotation(uid=uid, user=colleague, **fields)
    assert Annotation.objects.get(uid=uid).user == radiologist

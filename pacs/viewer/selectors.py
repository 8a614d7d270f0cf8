"""Read queries of the viewer: which study a user may open, its priors, their annotations."""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet

from accounts.models import User
from pacs.models import Annotation, Instance, Series, Study
from pacs.selectors import studies_visible_to


def viewable_study(*, user: User, study_instance_uid: str) -> Study | None:
    """The study with this UID the user may see; the UID is unique per facility only, so
    when several facilities of theirs hold it, the one received last."""
    return (
        studies_visible_to(user)
        .filter(study_instance_uid=study_instance_uid)
        .select_related("facility")
        .order_by("-received_at", "-pk")
        .first()
    )


def study_is_visible(*, user: User, study: Study) -> bool:
    return studies_visible_to(user).filter(pk=study.pk).exists()


def study_exists(*, study_instance_uid: str) -> bool:
    """Whether any facility holds the UID, so an invisible study answers 403, not 404."""
    return Study.objects.filter(study_instance_uid=study_instance_uid).exists()


def prior_studies(*, user: User, study: Study) -> QuerySet[Study]:
    """The same patient's other studies the user may see, newest first.

    Same patient means the same RIS patient once the study is matched; before that,
    the same Patient ID and issuer at the same facility (none without a Patient ID).
    """
    if study.patient_id is not None:
        same_patient = Q(patient_id=study.patient_id)
    elif study.dicom_patient_id:
        same_patient = Q(
            facility_id=study.facility_id,
            dicom_patient_id=study.dicom_patient_id,
            issuer_of_patient_id=study.issuer_of_patient_id,
        )
    else:
        return Study.objects.none()
    return (
        studies_visible_to(user)
        .filter(same_patient)
        .exclude(pk=study.pk)
        .order_by("-study_date", "-study_time", "-received_at", "-pk")
    )


def annotations_of(*, user: User, study: Study) -> QuerySet[Annotation]:
    """The user's own annotations on the study: nobody sees another reader's drawings."""
    return (
        Annotation.objects.filter(study=study, user=user)
        .select_related("study")
        .order_by("created_at", "pk")
    )


def annotation_by_uid(uid: uuid.UUID) -> Annotation | None:
    """The annotation with this UID whoever drew it; the caller decides what to reveal."""
    return Annotation.objects.filter(uid=uid).select_related("study").first()


def series_in_study(*, study: Study, series_instance_uid: str) -> bool:
    return Series.objects.filter(study=study, series_instance_uid=series_instance_uid).exists()


def instance_in_study(
    *, study: Study, series_instance_uid: str, sop_instance_uid: str
) -> Instance | None:
    """The instance of the study's series, or None when the study has no such image."""
    return (
        Instance.objects.filter(
            series__study=study,
            series__series_instance_uid=series_instance_uid,
            sop_instance_uid=sop_instance_uid,
        )
        .only("pk", "number_of_frames")
        .first()
    )

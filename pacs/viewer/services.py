"""Writes of the viewer: a user's annotations, each change audited in its transaction."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, transaction

from accounts import audit
from accounts.models import User
from pacs.models import Annotation, Study


class AnnotationError(Exception):
    """A save refused because another request changed the annotation meanwhile."""


@transaction.atomic
def save_annotation(
    *,
    uid: uuid.UUID,
    user: User,
    study: Study,
    series_instance_uid: str,
    sop_instance_uid: str,
    frame_number: int | None,
    tool_name: str,
    data: dict[str, Any],
    door: str = audit.Door.PAGE,
    remote_addr: str | None = None,
) -> tuple[Annotation, bool]:
    """Create the annotation, or update it when the user saved it before; True if created.

    The view has checked the owner and the study; they are checked again under the
    row lock, for a request that got in between.
    """
    annotation = Annotation.objects.select_for_update().filter(uid=uid).first()
    created = annotation is None
    if annotation is None:
        annotation = Annotation(uid=uid, user=user, facility_id=study.facility_id)
    elif annotation.user_id != user.pk:
        raise AnnotationError("another user saved an annotation with this UID")
    elif annotation.study_id != study.pk:
        raise AnnotationError("an annotation cannot move to another study")
    annotation.study = study
    values: dict[str, Any] = {
        "series_instance_uid": series_instance_uid,
        "sop_instance_uid": sop_instance_uid,
        "frame_number": frame_number,
        "tool_name": tool_name,
        "data": data,
    }
    changed = [name for name, value in values.items() if getattr(annotation, name, None) != value]
    for name, value in values.items():
        setattr(annotation, name, value)
    if created:
        try:
            with transaction.atomic():
                annotation.save(force_insert=True)
        except IntegrityError as error:  # the same UID inserted by a concurrent request
            raise AnnotationError("the annotation was saved meanwhile; save it again") from error
    else:
        annotation.save()
    audit.record(
        action=audit.Action.CREATE if created else audit.Action.UPDATE,
        door=door,
        user=user,
        obj=annotation,
        remote_addr=remote_addr,
        detail={
            "uid": str(uid),
            "study_instance_uid": study.study_instance_uid,
            "sop_instance_uid": sop_instance_uid,
            "tool_name": tool_name,
            **({} if created else {"changed": changed}),
        },
    )
    return annotation, created


@transaction.atomic
def delete_annotation(
    *,
    annotation: Annotation,
    user: User,
    door: str = audit.Door.PAGE,
    remote_addr: str | None = None,
) -> None:
    """Delete the user's annotation; the audit row is written first, while it has an id."""
    audit.record(
        action=audit.Action.DELETE,
        door=door,
        user=user,
        obj=annotation,
        remote_addr=remote_addr,
        detail={
            "uid": str(annotation.uid),
            "study_instance_uid": annotation.study.study_instance_uid,
            "sop_instance_uid": annotation.sop_instance_uid,
            "tool_name": annotation.tool_name,
        },
    )
    annotation.delete()

"""Celery adapters of reporting: take ids, call a service, retry on failure."""

from celery import shared_task

from ris.reporting import delivery


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=8)
def store_report_object(self, version_id: int) -> None:  # type: ignore[no-untyped-def]
    """Put one signed report version into its study as a DICOM object (idempotent: the
    same version makes the same SOP instance, which the archive takes once)."""
    try:
        delivery.report_object_store(version_id)
    except delivery.NotYet:
        return
    except Exception as error:
        if self.request.is_eager:
            raise
        raise self.retry(exc=error, countdown=min(600, 30 * 2**self.request.retries)) from error


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=8)
def send_critical_result_email(self, critical_id: int) -> None:  # type: ignore[no-untyped-def]
    """E-mail the referring physician a critical result (once: the row records it)."""
    try:
        delivery.critical_result_email(critical_id)
    except Exception as error:
        if self.request.is_eager:
            raise
        raise self.retry(exc=error, countdown=min(600, 30 * 2**self.request.retries)) from error

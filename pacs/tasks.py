"""Celery adapters of archive work: take ids, call a service, retry on failure."""

from celery import shared_task

from pacs import services, storage


@shared_task(bind=True, acks_late=True, max_retries=10, default_retry_delay=5)
def study_refresh(self, study_id: int) -> None:  # type: ignore[no-untyped-def]
    """Counts, modalities, patient/order links and "images received" for one study."""
    try:
        services.study_refresh(study_id)
    except Exception as error:
        raise self.retry(exc=error) from error


@shared_task(bind=True, acks_late=True, max_retries=8)
def spool_upload(self, key: str) -> None:  # type: ignore[no-untyped-def]
    """Upload one spooled image file to the remote store (queued by `storage.put`)."""
    try:
        storage.spool_upload(key)
    except Exception as error:
        if self.request.is_eager:
            raise  # no worker: retrying in-line would hold up the caller; spool_flush retries
        raise self.retry(exc=error, countdown=min(600, 10 * 2**self.request.retries)) from error


@shared_task(acks_late=True)
def spool_flush() -> int:
    """Periodic sweep: uploads what a lost or failed spool_upload left in the spool."""
    return storage.spool_flush().uploaded


@shared_task(acks_late=True)
def refresh_pending_studies() -> int:
    """Periodic safety net for studies whose refresh never ran."""
    return services.refresh_pending_studies()

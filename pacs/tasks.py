"""Celery adapters of archive work: take ids, call a service, retry on failure."""

from celery import shared_task

from pacs import services


@shared_task(bind=True, acks_late=True, max_retries=10, default_retry_delay=5)
def study_refresh(self, study_id: int) -> None:  # type: ignore[no-untyped-def]
    """Counts, modalities, patient/order links and "images received" for one study."""
    try:
        services.study_refresh(study_id)
    except Exception as error:
        raise self.retry(exc=error) from error

"""Celery adapters of the HL7 interfaces: take ids, call a service, retry on failure."""

import logging

from celery import shared_task
from django.db import DatabaseError

from ris.hl7 import services

logger = logging.getLogger(__name__)

# How many more waiting messages a batch task takes besides its own (see
# services.messages_process).
DRAIN = 50


@shared_task(
    bind=True,
    acks_late=True,
    ignore_result=True,  # one per message: no result to keep in Redis
    max_retries=services.MAX_ATTEMPTS,
    default_retry_delay=10,
)
def process_message(self, message_id: int) -> None:  # type: ignore[no-untyped-def]
    """Apply one received message (and its patient's earlier waiting ones)."""
    try:
        services.message_process(message_id)
    except services.ProcessingDeferred as error:
        if self.request.is_eager:
            return  # no worker to retry: the periodic requeue tries again
        raise self.retry(exc=error, countdown=min(300, 10 * 2**self.request.retries)) from error


@shared_task(bind=True, acks_late=True, ignore_result=True)
def process_messages(self, message_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Apply messages the listener stored close together: one task for the batch, so a
    busy interface pays for a task once per batch, not once per message. One that must
    wait goes on with a task of its own (and its retries)."""
    try:
        outcome = services.messages_process(
            message_ids, drain=0 if self.request.is_eager else DRAIN
        )
    except DatabaseError:  # e.g. a deadlock with another batch: one at a time instead
        logger.warning("HL7 batch %s rolled back: applying one by one", message_ids)
        outcome = services.BatchOutcome(applied=0, behind=list(message_ids), deferred=[])
    for message_id in outcome.behind:
        try:
            services.message_process(message_id)
        except services.ProcessingDeferred:
            if not self.request.is_eager:
                process_message.apply_async((message_id,), countdown=10)
    if not self.request.is_eager:
        for message_id in outcome.deferred:
            process_message.apply_async((message_id,), countdown=10)


@shared_task(acks_late=True)
def requeue_waiting_messages() -> int:
    """Periodic safety net: messages stored but never applied (a lost task) are queued."""
    return services.messages_requeue()


# ---- HL7 out -----------------------------------------------------------------------------


@shared_task(acks_late=True, ignore_result=True)
def deliver_message(message_id: int) -> None:
    """Send one outbound message (and those queued behind it). Retries are not Celery's:
    a failed message gets its next attempt time on its row, and the sweep sends it."""
    from ris.hl7 import outbox

    outbox.deliver(message_id)


@shared_task(acks_late=True)
def deliver_due_messages() -> int:
    """Periodic: outbound messages whose retry is due, or whose task was lost."""
    from ris.hl7 import outbox

    return outbox.deliver_due()

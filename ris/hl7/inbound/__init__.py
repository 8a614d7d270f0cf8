"""What each inbound message type does: the segments it needs on receipt, a cheap check
the listener may run before acknowledging, and how it is applied (by a worker, through
the RIS services, like any other door)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from accounts.models import Facility
from ris.hl7.models import Partner
from ris.hl7.parse import Message

if TYPE_CHECKING:
    from ris.hl7.inbound.adt import PatientBatch


class NothingToDo(Exception):
    """The message is valid and needs no change here (e.g. an event we only record);
    its text says why, for the message log."""


@dataclass(frozen=True)
class Context:
    """Who a message is from and for, as the handler applies it."""

    facility: Facility
    partner: Partner | None
    message_id: int
    # The patients of a worker's batch, read together (patient events only).
    patients: PatientBatch | None = None

    @property
    def actor(self) -> str:
        """The audit trail's actor for changes a message makes."""
        sender = self.partner.name if self.partner else "HL7"
        return f"{sender} (HL7 message {self.message_id})"[:100]


@dataclass(frozen=True)
class Handler:
    """`apply` returns what it did, in words, for the message log; it raises Hl7Error or
    RisError for a message that cannot be applied (kept as failed, for replay), and
    NothingToDo for one that needs nothing."""

    apply: Callable[[Message, Context], str]
    required_segments: tuple[str, ...] = ()
    check: Callable[[Message, Facility], None] | None = None
    # Called after a failed apply (outside its rolled-back savepoint): writes the
    # response the sender asked for on error (MSH-16), returns what it did.
    respond: Callable[[Message, Context, Exception], str] | None = None


def _handlers() -> dict[str, Handler]:
    from ris.hl7.inbound import acks, adt, orders

    return {**adt.HANDLERS, **orders.HANDLERS, **acks.HANDLERS}


# Keyed by message type ("ADT^A01") or, for any trigger, by message code ("ACK").
HANDLERS: dict[str, Handler] = _handlers()

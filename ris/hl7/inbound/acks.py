"""Answers that arrive as messages of their own: a partner's application acknowledgement
(enhanced mode) of something we sent, or its ORR^O02 to our ORM (with ORC-1 NA, the
placer number it assigned to an order of our front desk). Kept on the outbound message
it answers."""

from __future__ import annotations

from ris.hl7 import outbound, outbox
from ris.hl7.inbound import Context, Handler, NothingToDo
from ris.hl7.models import OutboundMessage
from ris.hl7.parse import DUPLICATE_KEY_IDENTIFIER, UNKNOWN_KEY_IDENTIFIER, Hl7Error, Message


def acknowledgement(message: Message, context: Context) -> str:
    msa = message.segment("MSA")
    assert msa is not None  # required on receipt
    answered = msa.value(2)
    sent = (
        OutboundMessage.objects.filter(control_id=answered, facility=context.facility)
        .select_related("order", "partner")
        .first()
    )
    if sent is None:
        raise NothingToDo(f"Acknowledges {answered or '(no id)'}, which we did not send.")
    try:
        problem = outbox.answer_record(sent=sent, text=message.text)
    except outbound.ReplyError as error:
        raise Hl7Error(str(error), location="MSA-1", error_code=UNKNOWN_KEY_IDENTIFIER) from error
    if problem:
        raise Hl7Error(problem, location="ORC-2", error_code=DUPLICATE_KEY_IDENTIFIER)
    done = f"{sent.ack_code} for our {sent.message_type} {answered}"
    if sent.order is not None and message.header.message_code == "ORR":
        sent.order.refresh_from_db(fields=["placer_order_number"])
        if sent.order.placer_order_number:
            done += (
                f"; {sent.order.accession_number} has placer number "
                f"{sent.order.placer_order_number}"
            )
    return done


HANDLERS = {
    "ACK": Handler(apply=acknowledgement, required_segments=("MSA",)),
    "ORR^O02": Handler(apply=acknowledgement, required_segments=("MSA",)),
}

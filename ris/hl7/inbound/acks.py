"""ACKs that arrive as messages of their own: a partner's application acknowledgement
(enhanced mode) of something we sent. Kept on the outbound message it answers."""

from __future__ import annotations

from ris.hl7.inbound import Context, Handler, NothingToDo
from ris.hl7.models import OutboundMessage
from ris.hl7.parse import Message


def acknowledgement(message: Message, context: Context) -> str:
    msa = message.segment("MSA")
    assert msa is not None  # required on receipt
    answered = msa.value(2)
    sent = OutboundMessage.objects.filter(control_id=answered, facility=context.facility).first()
    if sent is None:
        raise NothingToDo(f"Acknowledges {answered or '(no id)'}, which we did not send.")
    code = msa.value(1).upper()[:2]
    OutboundMessage.objects.filter(pk=sent.pk).update(ack_code=code, ack=message.text)
    return f"{code} for our {sent.message_type} {answered}"


HANDLERS = {"ACK": Handler(apply=acknowledgement, required_segments=("MSA",))}

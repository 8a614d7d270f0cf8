"""Our MLLP listener talked to by other people's HL7 clients: python-hl7's MLLPClient and
its `mllp_send` program; the ACKs read back with hl7apy, strictly validated."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7.client import MLLPClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from ris.hl7.listener import Background, Options
from ris.hl7.mllp import Decoder
from ris.hl7.models import InboundMessage, Partner
from tests.factories import FacilityFactory

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]

MLLP_SEND = Path(sys.executable).with_name("mllp_send")


def message(control_id: str) -> str:
    """An application ACK from the HIS (a type the inbound handlers always take)."""
    return (
        f"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201083000||ACK^O01|{control_id}|P|2.5.1\r"
        f"MSA|AA|OUT-{control_id}\r"
    )


def answers(data: bytes) -> list[str]:
    return [e.decode() for e in Decoder().feed(data) if isinstance(e, bytes)]


def msa(ack: str, *, strict: bool = True) -> tuple[str, str]:
    """MSA-1 and MSA-2, read by hl7apy; strict validation: our ACK is well formed."""
    level = VALIDATION_LEVEL.STRICT if strict else VALIDATION_LEVEL.TOLERANT
    parsed = parse_message(ack, validation_level=level, find_groups=False)
    return parsed.msa.msa_1.value, parsed.msa.msa_2.value


@pytest.fixture
def mllp_listener(transactional_db) -> Iterator[tuple[str, int]]:
    facility = FacilityFactory(code="NORTH", name="North")
    Partner.objects.create(facility=facility, name="HIS", application="HIS")
    running = Background("127.0.0.1", 0, Options(idle_timeout=10, workers=2))
    yield running.address
    running.stop(grace=5)


def test_python_hl7_client_gets_an_ack_per_message(mllp_listener):
    host, port = mllp_listener
    with MLLPClient(host, port) as client:
        for n in range(5):
            ack = answers(client.send_message(message(f"PYHL7-{n}")))
            assert len(ack) == 1
            assert msa(ack[0]) == ("AA", f"PYHL7-{n}")
    assert InboundMessage.objects.filter(control_id__startswith="PYHL7-").count() == 5


def test_python_hl7_client_gets_ar_for_what_is_not_hl7(mllp_listener):
    host, port = mllp_listener
    with MLLPClient(host, port) as client:
        (ack,) = answers(client.send_message("hello"))
        # No header to answer: MSH-9 is a bare "ACK", a structure strict hl7apy cannot name.
        assert msa(ack, strict=False) == ("AR", "")
        (ack,) = answers(client.send_message(message("PYHL7-AFTER")))
        assert msa(ack) == ("AA", "PYHL7-AFTER")


def run_mllp_send(port: int, *options: str, data: bytes, folder: Path) -> list[str]:
    messages = folder / "messages.hl7"
    messages.write_bytes(data)
    result = subprocess.run(
        [str(MLLP_SEND), "-p", str(port), *options, "--file", str(messages), "127.0.0.1"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    return answers(result.stdout)


def test_mllp_send_loose_file_of_messages(mllp_listener, tmp_path):
    # A file as people keep them: one message after the other, segments on lines.
    ids = [f"LOOSE-{n}" for n in range(4)]
    text = "".join(message(i).replace("\r", "\r\n") for i in ids)
    acks = run_mllp_send(mllp_listener[1], "--loose", data=text.encode(), folder=tmp_path)
    assert [msa(a) for a in acks] == [("AA", i) for i in ids]
    assert InboundMessage.objects.filter(control_id__in=ids).count() == 4


def test_mllp_send_framed_file_of_messages(mllp_listener, tmp_path):
    ids = [f"FRAMED-{n}" for n in range(3)]
    data = b"".join(b"\x0b" + message(i).encode() + b"\x1c\r" for i in ids)
    acks = run_mllp_send(mllp_listener[1], data=data, folder=tmp_path)
    assert [msa(a) for a in acks] == [("AA", i) for i in ids]

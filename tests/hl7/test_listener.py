"""The MLLP listener (ris/hl7/listener.py), run for real on a loopback port against the
test database: every message answered once, in order, only after it is committed."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.db.backends.signals import connection_created

from ris.hl7 import listener as hl7_listener
from ris.hl7 import services
from ris.hl7.listener import Announcer, Background, Options
from ris.hl7.mllp import Decoder, frame
from ris.hl7.models import InboundMessage, Partner
from tests.factories import FacilityFactory

# SQLite (the quick local run) takes one writer at a time, and pytest-django's shared
# in-memory database fails a second one at once ("table is locked") instead of waiting.
WORKERS = 4 if connection.vendor == "postgresql" else 1
OPTIONS = Options(max_message_bytes=64 * 1024, idle_timeout=10, max_connections=32, workers=WORKERS)


def ack_message(control_id: str, *, accept: str = "") -> bytes:
    """An application ACK from the HIS: a type the inbound handlers always take."""
    return (
        f"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201083000||ACK^A01|{control_id}|P|2.5.1"
        f"|||{accept}\rMSA|AA|OUT-{control_id}\r"
    ).encode()


def admit(control_id: str, mrn: str = "4711") -> bytes:
    return (
        f"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201083000||ADT^A01^ADT_A01|{control_id}|P|2.5\r"
        "EVN|A01|20261201083000\r"
        f"PID|1||{mrn}^^^NORTH_MRN^MR||Muster^Erika||19700101|F\r"
        "PV1|1|O\r"
    ).encode()


def field(ack: str, segment: str, number: int) -> str:
    """`segment`-`number` of an ACK (in the field separator it echoes, MSH-1)."""
    separator = ack[3:4] or "|"
    line = next((s for s in ack.split("\r") if s.startswith(segment + separator)), "")
    fields = line.split(separator)
    return fields[number] if number < len(fields) else ""


def stored(control_id: str) -> int:
    return InboundMessage.objects.filter(control_id=control_id).count()


class Peer:
    """A sending system: a socket, and the ACKs read back with our MLLP decoder."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder()
        self.received: list[str] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def acks(self, count: int) -> list[str]:
        """The next `count` ACKs, in the order they came."""
        while len(self.received) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(self.received)} of {count} ACKs")
            self.received += [e.decode() for e in self.decoder.feed(chunk) if isinstance(e, bytes)]
        taken, self.received = self.received[:count], self.received[count:]
        return taken

    def ask(self, payload: bytes) -> str:
        self.send(frame(payload))
        return self.acks(1)[0]

    def is_closed_by_listener(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def his(transactional_db) -> Partner:
    """The sender, a registered partner. transactional_db: the listener's threads see
    only committed rows, as the test sees only what they committed."""
    facility = FacilityFactory(code="NORTH", name="North", mrn_issuer="NORTH_MRN")
    return Partner.objects.create(facility=facility, name="HIS", application="HIS")


def run(options: Options = OPTIONS) -> Background:
    return Background("127.0.0.1", 0, options)


@pytest.fixture
def listener(his) -> Iterator[Background]:
    running = run()
    yield running
    running.stop(grace=5)


@pytest.fixture
def peer(listener) -> Iterator[Peer]:
    client = Peer(listener.address)
    yield client
    client.close()


def test_each_message_is_committed_before_its_ack_arrives(peer):
    for n in range(10):
        ack = peer.ask(ack_message(f"ONE{n}"))
        assert (field(ack, "MSA", 1), field(ack, "MSA", 2)) == ("AA", f"ONE{n}")
        # Read from the test's own connection the moment the ACK is in: committed.
        assert stored(f"ONE{n}") == 1


def test_an_adt_message_is_answered_with_its_control_id(peer):
    ack = peer.ask(admit("ADMIT1"))
    assert field(ack, "MSA", 2) == "ADMIT1"
    assert field(ack, "MSA", 1) in ("AA", "AE", "AR")
    assert stored("ADMIT1") == 1


def test_messages_in_one_write_are_answered_in_order(peer):
    ids = [f"BATCH{n}" for n in range(30)]
    peer.send(b"".join(frame(ack_message(i)) for i in ids))
    acks = peer.acks(30)
    assert [field(a, "MSA", 2) for a in acks] == ids
    assert {field(a, "MSA", 1) for a in acks} == {"AA"}
    assert InboundMessage.objects.filter(control_id__in=ids).count() == 30


def test_a_message_split_across_slow_writes_is_answered_once(peer):
    data = frame(ack_message("SLOW1"))
    for start in range(0, len(data), 17):
        peer.send(data[start : start + 17])
        time.sleep(0.02)
    assert field(peer.acks(1)[0], "MSA", 2) == "SLOW1"
    assert peer.ask(ack_message("SLOW2")).split("\r")[1] == "MSA|AA|SLOW2"
    assert stored("SLOW1") == 1


def test_concurrent_connections_are_all_answered_and_stored_once(listener):
    failures: list[BaseException] = []

    def sender(number: int) -> None:
        client = Peer(listener.address)
        try:
            for n in range(25):
                control_id = f"C{number}-{n}"
                ack = client.ask(ack_message(control_id))
                assert field(ack, "MSA", 2) == control_id, ack
                assert field(ack, "MSA", 1) == "AA", ack
        except BaseException as error:
            failures.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=sender, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[0]
    rows = InboundMessage.objects.filter(control_id__startswith="C")
    assert rows.count() == 200
    assert rows.values("control_id").distinct().count() == 200


def test_garbage_in_a_frame_is_refused_and_the_connection_stays_usable(peer):
    ack = peer.ask(b"\x01\xffthis is not HL7 at all")
    assert field(ack, "MSA", 1) == "AR"
    assert "MSH" in field(ack, "ERR", 8)
    assert field(peer.ask(ack_message("AFTER1")), "MSA", 1) == "AA"
    # Refused messages are kept too, for the message log.
    assert InboundMessage.objects.filter(status=InboundMessage.Status.REJECTED).count() == 1


def test_a_message_with_a_nul_byte_is_stored_and_answered(peer):
    ack = peer.ask(ack_message("NUL1").replace(b"MSA|AA|", b"MSA|AA|\x00"))
    assert hl7_listener.NOT_STORED not in ack
    assert stored("NUL1") == 1


def test_an_oversize_frame_is_refused_unstored_and_the_next_message_works(peer):
    huge = ack_message("HUGE1").replace(b"MSA|AA|", b"NTE|1||" + b"x" * 100_000 + b"\rMSA|AA|")
    ack = peer.ask(huge)
    assert (field(ack, "MSA", 1), field(ack, "MSA", 2)) == ("AR", "HUGE1")
    assert "65536" in field(ack, "ERR", 8)
    assert stored("HUGE1") == 0
    assert field(peer.ask(ack_message("AFTER2")), "MSA", 1) == "AA"


def test_bytes_outside_frames_are_skipped_without_an_answer(peer):
    peer.send(b"stray text\r\n" + frame(ack_message("JUNK1")) + b"\n\n")
    peer.send(b"more" + frame(ack_message("JUNK2")))
    assert [field(a, "MSA", 2) for a in peer.acks(2)] == ["JUNK1", "JUNK2"]


def test_a_message_that_asks_for_no_ack_is_stored_and_not_answered(peer):
    peer.send(frame(ack_message("QUIET1", accept="NE")) + frame(ack_message("LOUD1")))
    assert field(peer.acks(1)[0], "MSA", 2) == "LOUD1"
    assert stored("QUIET1") == 1


def test_the_listener_survives_a_client_leaving_mid_frame(listener):
    leaver = Peer(listener.address)
    leaver.send(b"\x0b" + ack_message("LEFT1")[:30])
    leaver.close()
    time.sleep(0.1)
    client = Peer(listener.address)
    try:
        assert field(client.ask(ack_message("STAYED1")), "MSA", 1) == "AA"
    finally:
        client.close()
    assert stored("LEFT1") == 0


def test_a_message_not_stored_is_answered_ar_send_again_and_the_next_is_stored(peer, monkeypatch):
    real = services.message_receive

    def database_down(raw: bytes, **kwargs) -> services.Receipt:
        if b"DOWN1" in raw:
            raise OperationalError("connection to server failed")
        return real(raw, **kwargs)

    monkeypatch.setattr(services, "message_receive", database_down)
    ack = peer.ask(ack_message("DOWN1"))
    assert (field(ack, "MSA", 1), field(ack, "MSA", 2)) == ("AR", "DOWN1")
    assert field(ack, "ERR", 3).startswith("207^")
    assert "send it again" in field(ack, "ERR", 8)
    assert stored("DOWN1") == 0
    assert field(peer.ask(ack_message("UP1")), "MSA", 1) == "AA"


def test_a_pooled_db_connection_that_died_is_replaced_without_losing_the_message(
    listener, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip("terminates server backends: PostgreSQL only")
    # Persistent connections for the listener's worker threads (DATABASE_CONN_MAX_AGE).
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", None)
    client = Peer(listener.address)
    try:
        for n in range(8):  # warm every worker thread's connection up
            assert field(client.ask(ack_message(f"WARM{n}")), "MSA", 1) == "AA"
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
            assert cursor.rowcount >= 1
        for n in range(8):
            assert field(client.ask(ack_message(f"AFTERKILL{n}")), "MSA", 1) == "AA"
    finally:
        client.close()
    assert InboundMessage.objects.filter(control_id__startswith="AFTERKILL").count() == 8


def test_with_a_broker_each_stored_message_is_announced_once_after_its_ack(his):
    batches: list[list[int]] = []
    running = Background("127.0.0.1", 0, OPTIONS, announcer=Announcer(publish=batches.append))
    client = Peer(running.address)
    try:
        client.send(b"".join(frame(admit(f"ANN{n}", mrn=f"9{n}")) for n in range(20)))
        assert {field(a, "MSA", 1) for a in client.acks(20)} == {"AA"}
    finally:
        client.close()
        running.stop(grace=5)  # sends what is still queued
    announced = [message_id for batch in batches for message_id in batch]
    stored_ids = InboundMessage.objects.filter(control_id__startswith="ANN").values_list(
        "id", flat=True
    )
    assert sorted(announced) == sorted(stored_ids) and len(stored_ids) == 20
    assert all(len(batch) <= hl7_listener.ANNOUNCE_BATCH for batch in batches)
    # Tasks went to the announcer, none ran here: the rows wait for a worker.
    assert not InboundMessage.objects.exclude(status=InboundMessage.Status.RECEIVED).exists()


def test_the_announcer_sends_what_queued_meanwhile_as_batches_in_order():
    all_queued = threading.Event()
    batches: list[list[int]] = []

    def publish(batch: list[int]) -> None:
        batches.append(batch)
        all_queued.wait(5)  # the first send is slow: the rest queue up behind it

    announcer = Announcer(publish=publish)
    for message_id in range(1, 121):
        announcer.announce(message_id)
    all_queued.set()
    announcer.close()
    assert [message_id for batch in batches for message_id in batch] == list(range(1, 121))
    assert max(len(batch) for batch in batches) == hl7_listener.ANNOUNCE_BATCH
    assert len(batches) <= 4


def test_a_batch_the_broker_refused_is_logged_and_later_ones_are_still_sent(caplog):
    sent: list[list[int]] = []

    def publish(batch: list[int]) -> None:
        if not sent and 1 in batch:
            sent.append([])
            raise ConnectionError("broker down")
        sent.append(batch)

    announcer = Announcer(publish=publish)
    announcer.announce(1)
    time.sleep(0.2)
    announcer.announce(2)
    announcer.close()
    assert sent == [[], [2]]
    assert "not queued now: the periodic requeue will" in caplog.text


def test_an_idle_connection_is_closed(his):
    running = run(Options(idle_timeout=0.3, workers=1))
    try:
        client = Peer(running.address)
        started = time.monotonic()
        assert client.is_closed_by_listener()
        assert 0.2 < time.monotonic() - started < 3
        client.close()
    finally:
        running.stop(grace=1)


def test_connections_over_the_limit_are_closed_and_the_others_keep_working(his):
    running = run(Options(max_connections=2, workers=1))
    first, second = Peer(running.address), Peer(running.address)
    try:
        assert field(first.ask(ack_message("LIM1")), "MSA", 1) == "AA"
        assert field(second.ask(ack_message("LIM2")), "MSA", 1) == "AA"
        third = Peer(running.address)
        assert third.is_closed_by_listener()
        third.close()
        assert field(first.ask(ack_message("LIM3")), "MSA", 1) == "AA"
    finally:
        first.close()
        second.close()
        running.stop(grace=1)


def test_stopping_finishes_the_message_in_flight_then_refuses(his, monkeypatch):
    real = services.message_receive
    arrived = threading.Event()

    def slow(raw: bytes, **kwargs) -> services.Receipt:
        arrived.set()
        time.sleep(0.5)
        return real(raw, **kwargs)

    monkeypatch.setattr(services, "message_receive", slow)
    running = run()
    address = running.address
    client, idle = Peer(address), Peer(address)
    try:
        client.send(frame(ack_message("INFLIGHT1")))
        assert arrived.wait(5)
        stopper = threading.Thread(target=running.stop, kwargs={"grace": 5})
        stopper.start()
        ack = client.acks(1)[0]
        assert (field(ack, "MSA", 1), field(ack, "MSA", 2)) == ("AA", "INFLIGHT1")
        assert client.is_closed_by_listener()
        assert idle.is_closed_by_listener()
        stopper.join(10)
        assert not stopper.is_alive()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=2)
    finally:
        client.close()
        idle.close()
    assert stored("INFLIGHT1") == 1


def test_stopping_waits_for_a_half_received_message(his):
    running = run()
    client = Peer(running.address)
    try:
        data = frame(ack_message("HALF1"))
        client.send(data[:20])
        time.sleep(0.1)
        stopper = threading.Thread(target=running.stop, kwargs={"grace": 5})
        stopper.start()
        time.sleep(0.2)
        client.send(data[20:])
        assert field(client.acks(1)[0], "MSA", 2) == "HALF1"
        assert client.is_closed_by_listener()
        stopper.join(10)
    finally:
        client.close()
    assert stored("HALF1") == 1


def test_listeners_can_share_a_port(his):
    first = run(Options(workers=1, reuse_port=True))
    second = Background("127.0.0.1", first.address[1], Options(workers=1, reuse_port=True))
    try:
        for n in range(6):
            client = Peer(first.address)
            assert field(client.ask(ack_message(f"SHARED{n}")), "MSA", 1) == "AA"
            client.close()
    finally:
        first.stop(grace=1)
        second.stop(grace=1)
    assert InboundMessage.objects.filter(control_id__startswith="SHARED").count() == 6


def test_the_command_prints_its_port_serves_and_stops_on_sigterm(his):
    if connection.vendor != "postgresql":
        pytest.skip("the command runs in another process: it needs a database server")
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    command = subprocess.Popen(
        [sys.executable, "manage.py", "hl7_listener", "--port", "0"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert command.stdout is not None
        line = command.stdout.readline()
        match = re.fullmatch(r"hl7_listener: listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        client = Peer(("127.0.0.1", int(match[1])))
        assert field(client.ask(ack_message("CMD1")), "MSA", 1) == "AA"
        client.close()
        command.send_signal(signal.SIGTERM)
        _, errors = command.communicate(timeout=20)
    finally:
        command.kill()
    assert command.returncode == 0, errors
    assert "HL7 listener stopped" in errors
    assert stored("CMD1") == 1


def test_an_ack_echoing_block_characters_is_still_one_frame():
    text = "MSH|^~\\&|RADPACS|NORTH|HIS|HOSP|20261201||ACK|X1|P|2.5.1\rMSA|AA|A\x1cB\x0bC\r"
    data = hl7_listener.encode(text)
    assert Decoder().feed(data) == [data[1:-2]]
    assert b"MSA|AA|A\\X1C\\B\\X0B\\C" in data


def test_an_ack_goes_back_in_the_character_set_of_the_message():
    text = "MSH|^~\\&|RADPACS|NORTH|KLINIKUM MÜNCHEN|HOSP|20261201||ACK|X1|P|2.5.1" + (
        "||||||8859/1\rMSA|AA|1\r"
    )
    assert "KLINIKUM MÜNCHEN".encode("iso8859-1") in hl7_listener.encode(text)


# ---- fuzzing ------------------------------------------------------------------------------

FRAME = re.compile(rb"\x0b[^\x1c]*\x1c")  # a frame, as the MLLP decoder closes one
ANSWERS = {"AA", "AE", "AR", "CA", "CE", "CR"}


def mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["flip", "truncate", "insert", "shuffle", "huge", "none"])
        if kind == "flip" and data:
            for _ in range(rng.randint(1, 6)):
                # Not NUL: see test_a_message_with_a_nul_byte_is_stored_and_answered.
                data[rng.randrange(len(data))] = rng.randrange(1, 256)
        elif kind == "truncate" and data:
            data = data[: rng.randrange(len(data))]
        elif kind == "insert":
            for _ in range(rng.randint(1, 3)):
                data.insert(rng.randint(0, len(data)), rng.choice(b"\x0b\x1c\r"))
        elif kind == "shuffle":
            segments = bytes(data).split(b"\r")
            rng.shuffle(segments)
            data = bytearray(b"\r".join(segments))
        elif kind == "huge":
            size = rng.choice([5_000, 50_000, 70_000, 150_000])
            at = rng.randint(0, len(data))
            data[at:at] = b"|" + bytes(rng.choice(b"ABCxyz^&~") for _ in range(64)) * (size // 64)
    return bytes(data)


def test_fuzzed_frames_each_get_exactly_one_answer(listener):
    rng = random.Random(20261206)
    bases = [ack_message, admit, lambda c: admit(c).replace(b"|2.5\r", b"|2.3\r"), lambda c: b""]
    streams = [bytearray() for _ in range(3)]
    for n in range(300):
        payload = mutate(rng, rng.choice(bases)(f"FZ{n}"))
        streams[n % 3] += b"\x0b" + payload + b"\x1c" + (b"\r" if rng.random() < 0.9 else b"")
    failures: list[BaseException] = []

    def sender(number: int, stream: bytes) -> None:
        expected = len(FRAME.findall(stream))
        sentinel = frame(ack_message(f"SENTINEL{number}"))
        chunks = random.Random(number)
        client = Peer(listener.address)
        try:
            reader_done: list[list[str]] = []
            reader = threading.Thread(target=lambda: reader_done.append(client.acks(expected + 1)))
            reader.start()
            data = bytes(stream) + sentinel
            position = 0
            while position < len(data):
                size = chunks.randint(1, 9000)
                client.send(data[position : position + size])
                position += size
            reader.join(60)
            assert reader_done, f"connection {number}: fewer than {expected + 1} answers"
            acks = reader_done[0]
            assert field(acks[-1], "MSA", 2) == f"SENTINEL{number}", "answers out of step"
            assert {field(a, "MSA", 1) for a in acks} <= ANSWERS
            assert not any(hl7_listener.NOT_STORED in a for a in acks), "a message not stored"
        except BaseException as error:
            failures.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=sender, args=(n, bytes(s))) for n, s in enumerate(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not failures, failures[0]
    client = Peer(listener.address)
    try:
        assert field(client.ask(ack_message("STILLUP")), "MSA", 1) == "AA"
    finally:
        client.close()


def test_the_announcer_sends_a_steady_stream_in_fewer_bigger_batches():
    """After a quiet spell the first message goes alone, at once; while messages keep
    coming, each batch waits longer for more (fewer tasks for the workers to take)."""
    batches: list[list[int]] = []
    announcer = Announcer(publish=batches.append)
    announcer.announce(0)
    waited = time.monotonic()
    while not batches and time.monotonic() - waited < 5:
        time.sleep(0.001)
    assert batches == [[0]]
    started = time.monotonic()
    for message_id in range(1, 301):  # about one a millisecond
        announcer.announce(message_id)
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    announcer.close()
    assert [message_id for batch in batches for message_id in batch] == list(range(301))
    # Each batch but the first waited ANNOUNCE_LINGER_BUSY (or filled up): with the
    # short linger alone there would be about five times as many.
    most = elapsed / hl7_listener.ANNOUNCE_LINGER_BUSY + 300 / hl7_listener.ANNOUNCE_BATCH + 3
    assert len(batches) <= most


def test_a_sender_connecting_for_each_message_reuses_database_connections(his):
    opened: list[object] = []

    def count(sender: object, connection: object, **kwargs: object) -> None:
        opened.append(connection)

    connection_created.connect(count)
    running = run(Options(workers=1))
    try:
        for n in range(6):
            client = Peer(running.address)
            assert field(client.ask(ack_message(f"EACH{n}")), "MSA", 1) == "AA"
            client.close()
            time.sleep(0.05)  # its thread ends and gives its DB connection back
    finally:
        running.stop(grace=1)
        connection_created.disconnect(count)
    assert InboundMessage.objects.filter(control_id__startswith="EACH").count() == 6
    assert len(opened) <= 2

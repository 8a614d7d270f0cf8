"""MLLP framing (ris/hl7/mllp.py): pure, no database, no sockets."""

import pytest

from ris.hl7.mllp import Decoder, Oversize, Skipped, frame

ADT = b"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20240101120000||ADT^A01|C1|P|2.5.1\rPID|1||123\r"
ACK = b"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20240101120000||ACK|C2|P|2.5.1\rMSA|AA|X1\r"


def payloads(events):
    return [event for event in events if isinstance(event, bytes)]


def feed_all(decoder, *chunks):
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_a_frame_is_sb_payload_eb_cr():
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"


def test_framing_refuses_a_payload_holding_the_block_characters():
    with pytest.raises(ValueError):
        frame(b"MSH|\x1c|")
    with pytest.raises(ValueError):
        frame(b"\x0bMSH")


def test_one_frame_in_one_chunk_gives_its_payload():
    assert Decoder().feed(frame(ADT)) == [ADT]


@pytest.mark.parametrize("cut", range(1, len(frame(ADT))))
def test_a_frame_split_at_any_byte_gives_the_same_payload(cut):
    data = frame(ADT)
    decoder = Decoder()
    assert feed_all(decoder, data[:cut], data[cut:]) == [ADT]
    assert decoder.pending == 0


def test_a_frame_fed_byte_by_byte_gives_one_payload_and_nothing_skipped():
    data = frame(ADT) + frame(ACK)
    decoder = Decoder()
    events = feed_all(decoder, *(data[i : i + 1] for i in range(len(data))))
    assert events == [ADT, ACK]


def test_a_split_between_eb_and_cr_skips_nothing():
    decoder = Decoder()
    assert decoder.feed(b"\x0b" + ADT + b"\x1c") == [ADT]
    assert decoder.feed(b"\r") == []
    assert decoder.feed(frame(ACK)) == [ACK]


def test_many_frames_in_one_chunk_come_out_in_order():
    messages = [ADT.replace(b"C1", f"C{n}".encode()) for n in range(50)]
    assert Decoder().feed(b"".join(frame(m) for m in messages)) == messages


def test_many_frames_cut_in_odd_chunks_come_out_in_order():
    messages = [ADT.replace(b"C1", f"C{n}".encode()) for n in range(20)]
    data = b"".join(frame(m) for m in messages)
    decoder = Decoder()
    events = feed_all(decoder, *(data[i : i + 7] for i in range(0, len(data), 7)))
    assert events == messages


def test_junk_between_frames_is_skipped_and_counted():
    events = Decoder().feed(frame(ADT) + b"hello" + frame(ACK))
    assert events == [ADT, Skipped(5), ACK]


def test_junk_before_the_first_frame_is_skipped():
    assert Decoder().feed(b"GET / HTTP/1.1\r\n" + frame(ACK)) == [Skipped(16), ACK]


def test_a_newline_between_frames_is_blank():
    events = Decoder().feed(frame(ADT) + b"\n" + frame(ACK))
    assert events == [ADT, Skipped(1, blank=True), ACK]


def test_unframed_text_is_all_skipped_and_nothing_held():
    decoder = Decoder()
    assert decoder.feed(ADT) == [Skipped(len(ADT))]
    assert decoder.pending == 0


def test_a_missing_cr_before_the_next_frame_is_tolerated():
    data = b"\x0b" + ADT + b"\x1c" + frame(ACK)
    assert Decoder().feed(data) == [ADT, ACK]


def test_a_frame_is_answered_without_waiting_for_its_cr():
    assert Decoder().feed(b"\x0b" + ADT + b"\x1c") == [ADT]


def test_another_byte_after_eb_is_outside_a_frame():
    assert Decoder().feed(b"\x0b" + ADT + b"\x1cX" + frame(ACK)) == [ADT, Skipped(1), ACK]


def test_a_start_block_inside_a_frame_drops_the_unfinished_one():
    data = b"\x0bMSH|half" + frame(ACK)
    assert Decoder().feed(data) == [Skipped(9, unfinished=True), ACK]


def test_an_empty_frame_gives_an_empty_payload():
    assert Decoder().feed(b"\x0b\x1c\r" + frame(ACK)) == [b"", ACK]


def test_an_unfinished_frame_is_pending():
    decoder = Decoder()
    assert decoder.feed(b"\x0b" + ADT[:10]) == []
    assert decoder.pending == 10


def test_a_frame_of_exactly_the_limit_is_taken():
    assert Decoder(max_size=len(ADT)).feed(frame(ADT)) == [ADT]


def test_an_oversize_frame_is_reported_once_at_its_end_with_its_head():
    decoder = Decoder(max_size=len(ADT) - 1)
    events = decoder.feed(frame(ADT) + frame(ACK[:20]))
    assert events == [Oversize(len(ADT), ADT), ACK[:20]]


def test_an_oversize_frame_is_never_buffered():
    decoder = Decoder(max_size=1000)
    events = decoder.feed(b"\x0b" + ADT)
    for _ in range(1000):
        events += decoder.feed(b"x" * 1000)
        assert len(decoder._buffer) <= 1000
    assert decoder.pending == len(ADT) + 1_000_000
    events += decoder.feed(b"\x1c\r" + frame(ACK))
    assert len(events) == 2
    assert events[0] == Oversize(len(ADT) + 1_000_000, (ADT + b"x" * 4096)[:4096])
    assert events[1] == ACK


def test_an_oversize_frame_split_in_many_chunks_is_one_event():
    data = frame(b"MSH|" + b"y" * 5000) + frame(ACK)
    decoder = Decoder(max_size=100)
    events = feed_all(decoder, *(data[i : i + 33] for i in range(0, len(data), 33)))
    assert events == [Oversize(5004, b"MSH|" + b"y" * 4092), ACK]


def test_an_oversize_frame_given_up_for_a_new_start_block_is_skipped():
    decoder = Decoder(max_size=len(ACK))
    events = decoder.feed(b"\x0b" + b"z" * 500 + frame(ACK))
    assert events == [Skipped(501, unfinished=True), ACK]


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError):
        Decoder(max_size=0)

"""Reading values out of a message: the same values python-hl7's parser gives (the
listener used it until splitting whole messages up front proved its largest cost)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import hl7
import pytest

from ris.hl7 import parse

CORPUS = sorted((Path(__file__).parent / "messages").glob("*.hl7"))

TRICKY = [
    # empty fields, trailing separators, nesting at every level, escapes, nulls
    "MSH|^~\\&|HIS|HOSP|RIS|NORTH|20261201||ADT^A08^ADT_A01|C1|P|2.5.1||||||UNICODE UTF-8\r"
    "PID|1||123^^^NORTH_MRN^MR~456^^^OTHER^PI&X&Y||Smith&Jr^Anna^^^^~Alias||19800101|F|||"
    'Main St\\S\\1^^City^^^~^^||""^PRN^PH~^NET^Internet^a@b.c|||||||||||||||||\r'
    "ZZZ||^|~|&|^~&|a&&b^^c~~d|",
    # other encoding characters than ^~\&
    "MSH|$%*#|HIS|HOSP|RIS|NORTH|20261201||ADT$A01|C2|P|2.3\r"
    "PID|1||123$$$NORTH_MRN$MR%789$$$X||Doe$Jane#Q$$Dr||19700101|M\r"
    "PV1|1|I|W1$R2$B3",
    # MSH only, short (python-hl7 garbles an MSH that ends at its encoding characters)
    "MSH|^~\\&|A",
]


def _reference_raw(segment, field_number: int, component: int, sub: int, rep: int) -> str:
    """The traversal of python-hl7's containers RadPACS used before."""
    if str(segment[0]) == "MSH" and field_number in (1, 2):
        return str(segment[field_number])  # the separator, the encoding characters
    if field_number >= len(segment):
        return ""
    node = segment[field_number]
    for index in (rep, component, sub):
        if isinstance(node, str):
            return node if index == 1 else ""
        children = list(node)
        if index > len(children):
            return ""
        node = children[index - 1]
    return str(node)


def _reference_repetitions(segment, field_number: int) -> int:
    if field_number >= len(segment) or not str(segment[field_number]):
        return 0
    node = segment[field_number]
    return 1 if isinstance(node, str) else len(node)


def _fuzzed(seed: int) -> str:
    """A message of random fields made of separators, letters and empties."""
    rng = random.Random(seed)
    pieces = ["", "a", "bc", "^", "~", "&", "\\E\\", '""', "x^y", "p&q", "m~n"]
    segments = ["MSH|^~\\&|HIS|HOSP|RIS|NORTH|20261201||ADT^A08|F|P|2.5.1"]
    for name in ("PID", "ZZ1", "OBX"):
        fields = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(8)]
        segments.append("|".join([name, *fields]))
    return "\r".join(segments)


MESSAGES = [path.read_bytes() for path in CORPUS] + [
    text.encode() for text in [*TRICKY, *(_fuzzed(seed) for seed in range(40))]
]


@pytest.mark.parametrize("raw", MESSAGES, ids=lambda raw: raw[:60].decode(errors="replace"))
def test_every_value_read_is_what_python_hl7_reads(raw):
    message = parse.parse(raw)
    reference = hl7.parse(message.text)
    segments = [segment for segment in reference if str(segment[0])]
    assert [s.name for s in message.segments] == [str(s[0]) for s in segments]
    for ours, theirs in zip(message.segments, segments, strict=True):
        assert str(ours) == str(theirs)
        for field_number in range(len(theirs) + 2):
            assert ours.repetitions(field_number) == _reference_repetitions(theirs, field_number), (
                ours.name,
                field_number,
            )
            for rep, component, sub in itertools.product(range(1, 4), range(1, 5), range(1, 4)):
                assert ours.raw(field_number, component, sub, rep) == _reference_raw(
                    theirs, field_number, component, sub, rep
                ), (ours.name, field_number, rep, component, sub)


def test_a_value_is_read_with_its_escapes_decoded_and_its_null_told_apart():
    message = parse.parse(MESSAGES[len(CORPUS)])
    pid = message.segment("PID")
    assert pid.value(11) == "Main St^1"
    assert pid.value(3, 1, repetition=2) == "456"
    assert pid.value(3, 5, 2, repetition=2) == "X"
    assert pid.value(13) == "" and pid.is_null(13)
    assert message.header.message_type == "ADT^A08"
    bare = parse.parse(b"MSH|^~\\&")
    assert (str(bare.segments[0]), bare.segments[0].raw(2), bare.header.control_id) == (
        "MSH|^~\\&",
        "^~\\&",
        "",
    )

"""Pick-list syntax (ris/reporting/picklists.py): pure text, no database."""

import random
import time

import pytest

from ris.reporting.picklists import Picklist, choose, picklist, picklists, unfilled


def test_a_free_field_is_a_label_in_double_brackets():
    assert picklists("Indication: [[Indication]]") == [Picklist("Indication", (), 12, 26)]


def test_a_picklist_has_its_choices_in_order_after_the_label():
    text = "Lungs: [[Lungs: clear | nodule | consolidation]]"
    assert picklists(text) == [Picklist("Lungs", ("clear", "nodule", "consolidation"), 7, 48)]


def test_placeholders_come_in_order_with_their_spans():
    text = "[[Lungs: clear | nodule]] and [[Heart]]."
    found = picklists(text)
    assert [(p.label, text[p.start : p.end]) for p in found] == [
        ("Lungs", "[[Lungs: clear | nodule]]"),
        ("Heart", "[[Heart]]"),
    ]


def test_whitespace_is_squashed_and_empty_or_repeated_choices_dropped():
    (found,) = picklists("[[  Pleural \t effusion :  none |  | small  | none ]]")
    assert (found.label, found.choices) == ("Pleural effusion", ("none", "small"))


def test_only_the_first_colon_separates_label_and_choices():
    (found,) = picklists("[[Time: 10:30 | 11:00]]")
    assert (found.label, found.choices) == ("Time", ("10:30", "11:00"))


def test_a_label_with_a_colon_and_nothing_after_is_a_free_field():
    (found,) = picklists("[[Comparison: ]]")
    assert (found.label, found.choices) == ("Comparison", ())


def test_a_hand_typed_picklist_may_have_no_label():
    (found,) = picklists("Side: [[left | right]]")
    assert (found.label, found.choices) == ("", ("left", "right"))


def test_single_brackets_belong_to_the_label():
    (found,) = picklists("[[Size [mm] of the node]]")
    assert found.label == "Size [mm] of the node"


def test_a_run_of_brackets_opens_at_its_last_pair_and_closes_at_its_first():
    assert picklists("[[[a]]]") == [Picklist("a", (), 1, 6)]


def test_a_placeholder_never_spans_lines_or_nests():
    assert picklists("[[Lungs\n]] [[a [[b]] c]]") == [Picklist("b", (), 15, 20)]


def test_unmatched_brackets_are_just_text():
    assert picklists("[[ opened here\nclosed there ]]\n[single]") == []
    assert picklists("a [[ b") == []


def test_what_picklist_writes_picklists_reads_back():
    text = picklist("Lungs", ["clear", "nodule"]) + " " + picklist("Heart")
    assert text == "[[Lungs: clear | nodule]] [[Heart]]"
    assert [(p.label, p.choices) for p in picklists(text)] == [
        ("Lungs", ("clear", "nodule")),
        ("Heart", ()),
    ]


def test_picklist_replaces_what_would_break_the_syntax():
    written = picklist("  Size [mm]: ratio ", ["a|b", "[[x]]", " c "])
    assert written == "[[Size (mm) - ratio: a/b | ((x)) | c]]"


def test_picklist_drops_a_trailing_colon_from_the_label():
    assert picklist("End Diastolic Diameter:") == "[[End Diastolic Diameter]]"


def test_picklist_drops_empty_and_repeated_choices():
    assert picklist("Grade", ["", "1", "  ", "2", "1"]) == "[[Grade: 1 | 2]]"


def test_picklist_refuses_a_label_with_nothing_left():
    with pytest.raises(ValueError):
        picklist(" : ")


def test_unfilled_names_each_blank_once_in_order():
    text = "[[Lungs: clear | nodule]] [[Heart]] done [[Lungs: clear | nodule]]"
    assert unfilled(text) == ["Lungs", "Heart"]


def test_unfilled_names_an_unlabelled_blank_by_its_own_text():
    assert unfilled("Side: [[left | right]]. Size: [[]]") == ["[[left | right]]", "[[]]"]


def test_unfilled_is_empty_for_a_text_that_can_be_signed():
    assert unfilled("Lungs: clear. Heart: normal size. [single brackets]") == []


def test_choose_replaces_the_placeholder_with_that_index():
    text = "Lungs: [[Lungs: clear | nodule]]. Heart: [[Heart]]."
    assert choose(text, 1, "normal size") == "Lungs: [[Lungs: clear | nodule]]. Heart: normal size."
    assert choose(text, 0, "clear") == "Lungs: clear. Heart: [[Heart]]."


def test_choose_takes_a_value_that_is_not_one_of_the_choices():
    assert choose("[[Lungs: clear | nodule]]", 0, "two nodules") == "two nodules"


@pytest.mark.parametrize("index", [-1, 2])
def test_choose_refuses_a_placeholder_that_is_not_there(index):
    with pytest.raises(IndexError):
        choose("[[A]] [[B]]", index, "x")


def test_choosing_every_placeholder_leaves_nothing_unfilled():
    text = "[[Lungs: clear | nodule]], [[Heart]], [[left | right]]"
    while found := picklists(text):
        text = choose(text, 0, found[0].choices[0] if found[0].choices else "normal")
    assert text == "clear, normal, left"
    assert unfilled(text) == []


def test_any_label_and_choices_survive_writing_and_reading():
    rng = random.Random(7)
    alphabet = "ab :|[]\n\t-é"
    for _ in range(2000):
        label = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) + "x"
        choices = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(6))) for _ in "abc"]
        written = picklist(label, choices)
        (found,) = picklists(written)
        assert (found.start, found.end) == (0, len(written))
        assert found.label and "x" in found.label
        assert written == picklist(found.label, found.choices)


@pytest.mark.parametrize(
    "adversary",
    [
        "[[" * 100_000,
        "[[a" * 70_000,
        "[[" + "a]" * 100_000,
        "[[a:" + "b|" * 100_000,
        "[[a]" * 50_000,
    ],
)
def test_finding_placeholders_takes_linear_time_on_hostile_text(adversary):
    started = time.perf_counter()
    picklists(adversary)
    assert time.perf_counter() - started < 1.0

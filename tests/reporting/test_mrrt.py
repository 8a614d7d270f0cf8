"""IHE MRRT templates read into sections (ris/reporting/mrrt.py): pure, no database.

The files in tests/reporting/mrrt/ are written here in the shapes of RSNA RadReport templates.
"""

import contextlib
import random
import re
import time
from pathlib import Path

import pytest

from ris.reporting.mrrt import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_WARNINGS,
    ImportedTemplate,
    MrrtError,
    TemplateSection,
    parse_mrrt,
)
from ris.reporting.picklists import picklists, unfilled

CORPUS = Path(__file__).parent / "mrrt"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def read(body: str, head: str = "") -> ImportedTemplate:
    return parse_mrrt(f'<html><head><meta charset="UTF-8">{head}</head><body>{body}</body></html>')


def sections(body: str) -> list[tuple[str, str]]:
    return [(s.title, s.text) for s in read(body).sections]


def one(body: str) -> str:
    (only,) = read(f'<section data-section-name="S">{body}</section>').sections
    return only.text


def findings(body: str) -> str:
    """The text of a Findings section beside an Impression, so never a lone wrapper."""
    impression = '<section data-section-name="Impression"><p>i</p></section>'
    found, _ = read(f'<section data-section-name="Findings">{body}</section>{impression}').sections
    return found.text


# ---- the corpus ------------------------------------------------------------------------------


def test_a_ct_chest_template_becomes_its_five_report_sections():
    template = parse_mrrt(corpus("ct_chest.html"))
    assert (template.title, template.identifier, template.language) == (
        "CT Chest",
        "urn:radpacs:test:ct-chest:1",
        "en",
    )
    assert template.sections == (
        TemplateSection("Clinical Information", "[[Indication]]"),
        TemplateSection(
            "Technique",
            "Axial CT images of the chest were obtained [[Contrast: with | without]] "
            "intravenous contrast.\n"
            "DLP: [[DLP]] mGy-cm",
        ),
        TemplateSection("Comparison", "None."),
        TemplateSection(
            "Findings",
            "Lungs and airways:\n"
            "Lungs: [[Lungs: clear | nodule | consolidation]]\n"
            "Airways: [[Airways: patent | bronchial wall thickening]]\n"
            "\n"
            "Pleura: [[Pleura: No pleural effusion or pneumothorax. | Small pleural effusion. "
            "| Pneumothorax.]]\n"
            "Heart: Normal size. No pericardial effusion.\n"
            "\n"
            "Mediastinum:\n"
            "Lymph nodes: [[Lymph nodes: not enlarged | enlarged]]\n"
            "Largest node, short axis: [[Largest node, short axis]] mm\n"
            "\n"
            "Bones:\n"
            "Acute fracture: [[Acute fracture: no | yes]]",
        ),
        TemplateSection("Impression", "1. [[Impression]]"),
    )
    assert template.warnings == ()


def test_an_mr_brain_template_keeps_its_procedure_header_and_drops_an_empty_subsection():
    template = parse_mrrt(corpus("mr_brain.html"))
    assert (template.title, template.identifier, template.language) == (
        "MR Brain with and without contrast",
        "urn:radpacs:test:mr-brain:3",
        "en-US",
    )
    assert [(s.title, s.text) for s in template.sections] == [
        ("Procedure", "MRI of the brain without and with contrast\n[[Procedure]]"),
        ("Clinical information", "[[Clinical information]]"),
        ("Comparison", "Prior MRI: [[Prior MRI]]"),
        (
            "Findings",
            "Brain parenchyma:\n"
            "No acute infarct on diffusion-weighted images.\n"
            "White matter: [[White matter: normal | scattered T2/FLAIR hyperintensities "
            "| confluent T2/FLAIR hyperintensities]]\n"
            "Enhancement: [[Enhancement: none | leptomeningeal | parenchymal]]\n"
            "\n"
            "Ventricles: [[Ventricles: Normal size and configuration. | Enlarged.]]\n"
            "\n"
            "Vascular flow voids:\n"
            "Flow voids: [[Flow voids: preserved | absent]]",
        ),
        ("Impression", "No acute intracranial abnormality."),
    ]
    assert template.warnings == (
        'The section "Findings / Extra-axial spaces" is empty and was left out.',
    )


def test_a_minimal_template_is_one_section_of_plain_text():
    template = parse_mrrt(corpus("minimal.html"))
    assert template.title == "XR Chest, one view"
    assert template.identifier == template.language == ""
    assert template.sections == (
        TemplateSection("Findings", "The lungs are clear. No pleural effusion or pneumothorax."),
    )


def test_a_messy_hand_edited_template_still_reads_and_says_what_it_dropped():
    template = parse_mrrt(corpus("messy.html"))
    assert (template.title, template.identifier) == ("US Abdomen & Pelvis", "MESSY-42")
    assert [(s.title, s.text) for s in template.sections] == [
        ("History", "Indication: [[Indication]]"),
        (
            "Liver & Gallbladder",
            "Liver size: [[Liver size]] cm\n"
            "Echotexture: [[Echotexture: coarse | homogeneous | heterogeneous]]\n"
            "Gallbladder:\n"
            "\n"
            "Gallstones: [[Gallstones: yes | no]]",
        ),
        ("Section 3", "Kidneys: normal in size < 12 cm, no hydronephrosis."),
    ]
    assert template.warnings == (
        'A field of type "file" ("images") in the template cannot be imported and was left out.',
        'A section without a name or header was called "Section 3".',
        'The section "Notes" is empty and was left out.',
        'The file says its charset is "windows-1252"; it was read as UTF-8.',
    )


def test_an_html_page_without_sections_is_not_a_template():
    with pytest.raises(MrrtError, match=r"^Not an MRRT template: no <section> elements found\.$"):
        parse_mrrt(corpus("not_mrrt.html"))


def test_a_latin1_file_is_refused_with_a_message_saying_so():
    with pytest.raises(MrrtError, match="not UTF-8"):
        parse_mrrt(corpus("latin1.html"))


def test_the_same_latin1_template_saved_as_utf8_is_read():
    text = corpus("latin1.html").decode("latin-1")
    (section,) = parse_mrrt(text.encode()).sections
    assert section == TemplateSection("Résultats", "Poumons: pas d'épanchement pleural.")


# ---- the file --------------------------------------------------------------------------------


def test_text_is_accepted_as_well_as_bytes_with_or_without_a_byte_order_mark():
    doc = '<section data-section-name="A"><p>a</p></section>'
    for data in (doc, "\ufeff" + doc, doc.encode(), b"\xef\xbb\xbf" + doc.encode()):
        assert parse_mrrt(data).sections == (TemplateSection("A", "a"),)


def test_a_file_over_two_megabytes_is_refused():
    with pytest.raises(MrrtError, match="larger than 2 MB"):
        parse_mrrt(b" " * (MAX_BYTES + 1))


def test_a_template_whose_text_would_pass_two_megabytes_is_refused():
    label = "<label for=a>" + "word " * 20 + "</label>"  # each checkbox says it twice
    with pytest.raises(MrrtError, match="longer than 2 MB"):
        read(f'<section data-section-name="A"><p>{label}' + "<input type=checkbox id=a>" * 13_000)


def test_windows_line_ends_and_control_characters_do_not_reach_the_text():
    assert one("<p>a\r\nb\x00\x07c</p><p>&#1;d&#0;</p>") == "a bc\nd\ufffd"


def test_the_title_is_dcterms_title_else_title_else_the_first_h1():
    body = '<h1>From h1</h1><section data-section-name="A"><p>a</p></section>'
    meta = '<meta name="DCTERMS.title" content=" From  meta ">'
    assert read(body, meta + "<title>From title</title>").title == "From meta"
    assert read(body, "<title>From title</title>").title == "From title"
    assert read(body).title == "From h1"
    assert read('<section data-section-name="A"><p>a</p></section>').title == "Imported template"


def test_the_language_is_dcterms_language_else_the_html_lang():
    doc = '<html lang="de"><head>{}</head><body><section><p>a</p></section></body></html>'
    assert parse_mrrt(doc.format("")).language == "de"
    meta = '<meta name="dcterms.language" content="fr">'
    assert parse_mrrt(doc.format(meta)).language == "fr"


def test_coded_content_scripts_styles_and_comments_are_not_report_text():
    body = (
        '<section data-section-name="A"><script type="text/xml"><term>RID1301</term></script>'
        "<style>p {}</style><!-- a comment --><p>Kept.<!-- -->too</p></section>"
    )
    assert sections(body) == [("A", "Kept.too")]


def test_a_template_whose_sections_are_all_empty_is_refused():
    with pytest.raises(MrrtError, match="all its sections are empty"):
        read('<section data-section-name="A"><header>A</header> </section>')


# ---- sections --------------------------------------------------------------------------------


def test_a_section_without_a_name_takes_its_header_without_the_colon():
    assert sections("<section><header>TECHNIQUE:</header><p>x</p></section>") == [
        ("TECHNIQUE", "x")
    ]


def test_a_header_that_says_more_than_the_section_name_is_the_first_line():
    body = (
        '<section data-section-name="Procedure"><header>CT abdomen and pelvis</header>'
        '<p>x</p></section><section data-section-name="Impression"><header>IMPRESSION:'
        "</header><p>y</p></section>"
    )
    assert sections(body) == [("Procedure", "CT abdomen and pelvis\nx"), ("Impression", "y")]


def test_a_section_without_name_or_header_is_numbered_with_a_warning():
    template = read('<section><p>a</p></section><section data-section-name="B"><p>b</p></section>')
    assert [s.title for s in template.sections] == ["Section 1", "B"]
    assert template.warnings == ('A section without a name or header was called "Section 1".',)


def test_a_one_line_subsection_reads_title_colon_line():
    body = '<section data-section-name="Heart"><p><textarea>Normal size.</textarea></p></section>'
    assert findings(body) == "Heart: Normal size."


def test_a_one_line_subsection_that_starts_with_its_title_is_not_repeated():
    body = '<section data-section-name="Lungs"><p>Lungs are clear.</p></section>'
    assert findings(body) == "Lungs are clear."


def test_a_one_line_subsection_with_its_own_label_gets_a_heading_line():
    body = (
        '<section data-section-name="Lungs and airways"><p><label for="l">Lungs</label>'
        '<select id="l"><option>clear</select></p></section>'
    )
    assert findings(body) == "Lungs and airways:\nLungs: [[Lungs: clear]]"


def test_a_longer_subsection_gets_a_heading_line_and_blank_lines_around_it():
    body = (
        "<p>Before.</p>"
        '<section data-section-name="Liver"><p>Normal size.</p><p>No lesion.</p></section>'
        "<p>After.</p>"
    )
    assert findings(body) == "Before.\n\nLiver:\nNormal size.\nNo lesion.\n\nAfter."


def test_subsections_nest_three_deep_into_their_report_section():
    body = (
        '<section data-section-name="Findings"><section data-section-name="Abdomen">'
        "<p>Normal.</p>"
        '<section data-section-name="Liver"><p>Normal.</p></section>'
        '<section data-section-name="Spleen"><p><select name="Spleen"><option>normal'
        "<option>enlarged</select></p></section></section></section>"
        '<section data-section-name="Impression"><p>None.</p></section>'
    )
    assert sections(body) == [
        (
            "Findings",
            "Abdomen:\nNormal.\nLiver: Normal.\nSpleen: [[Spleen: normal | enlarged]]",
        ),
        ("Impression", "None."),
    ]


def test_a_section_around_the_whole_report_is_a_wrapper():
    body = (
        '<section data-section-name="CT Head"><header>CT Head</header>'
        '<section data-section-name="Findings"><p>x</p></section>'
        '<section data-section-name="Impression"><p>y</p></section></section>'
    )
    assert sections(body) == [("Findings", "x"), ("Impression", "y")]


def test_sections_nested_deeper_than_the_limit_are_read_as_one():
    body = '<section data-section-name="L">x' * (MAX_DEPTH + 50) + "</section>" * 70
    template = read(body)
    assert len(template.sections) == 1
    assert template.sections[0].text.count("x") == MAX_DEPTH + 50
    assert f"Sections nested more than {MAX_DEPTH} deep were read as one." in template.warnings


def test_text_outside_the_sections_is_left_out_with_a_warning():
    template = read('<p>stray</p><section data-section-name="A"><p>a</p></section><input>')
    assert template.sections == (TemplateSection("A", "a"),)
    assert template.warnings == ("Text and fields outside the template's sections were left out.",)


# ---- lines -----------------------------------------------------------------------------------


def test_entities_and_non_breaking_spaces_become_plain_text():
    assert one("<p>Size &lt; 1&nbsp;cm &amp; &quot;round&quot; &eacute;</p>") == (
        'Size < 1 cm & "round" é'
    )


def test_each_paragraph_list_item_and_break_is_a_line_and_blank_lines_collapse():
    body = "<p>a</p>b<br>c<br><br><br><br>d<div><div>e</div>f</div>"
    assert one(body) == "a\nb\nc\n\nd\ne\nf"


def test_list_items_are_numbered_or_bulleted():
    body = "<ol><li>One.</li><li>Two.<ul><li>a<li>b</ul></li><li>Three.</ol>"
    assert one(body) == "1. One.\n2. Two.\n- a\n- b\n3. Three."


def test_table_cells_are_words_of_one_line_per_row():
    assert one("<table><tr><td>Heart</td><td>normal</td></tr><tr><td>a</td></tr></table>") == (
        "Heart normal\na"
    )


def test_uppercase_tags_and_unquoted_attributes_are_html_too():
    body = "<P><LABEL FOR=x>Spleen</LABEL> <SELECT ID=x><OPTION>normal<OPTION SELECTED>big</SELECT>"
    assert one(body) == "Spleen: [[Spleen: big | normal]]"


# ---- fields ----------------------------------------------------------------------------------


def test_a_text_field_without_a_default_is_a_free_field_named_by_its_label():
    assert one('<p><label for="x">Indication</label><input type="text" id="x"></p>') == (
        "Indication: [[Indication]]"
    )


def test_a_field_with_a_default_is_just_its_default_text():
    assert one('<p><label for="x">Aortic valve:</label><input id="x" value="Normal."></p>') == (
        "Aortic valve: Normal."
    )


def test_a_textarea_keeps_its_default_lines():
    assert one("<p><textarea name=t>  Line one.\n\n   Line   two.\n</textarea></p>") == (
        "Line one.\n\nLine two."
    )


def test_a_field_without_a_label_is_named_by_the_words_before_it_or_its_name():
    assert one("<p>Indication: <input name=indication></p>") == "Indication: [[Indication]]"
    assert one('<p><textarea name="Clinical information"></textarea></p>') == (
        "[[Clinical information]]"
    )


def test_a_sentence_before_a_field_is_not_its_name_and_gets_no_colon():
    body = (
        '<p><label for="b">Normalized to a body surface area (BSA) of</label>'
        '<input type="number" id="b" name="BSA"> m2</p>'
    )
    assert one(body) == "Normalized to a body surface area (BSA) of [[BSA]] m2"


def test_a_short_capitalised_label_gets_a_colon_before_its_field_and_others_do_not():
    body = (
        '<p><label for="a">Anterior</label><input id="a" type="number" value="0"></p>'
        '<p><label for="b">Left atrial area (<b>LA</b>)</label><input id="b"></p>'
        '<p><label for="c">HISTORY:</label><input id="c"></p>'
        '<p><label for="d">the</label><input id="d" value="patient"></p>'
        '<p><label for="e">Size <i>normalized to a body</i> surface area of</label>'
        '<input id="e" name="BSA"></p>'
    )
    assert one(body) == (
        "Anterior: 0\n"
        "Left atrial area (LA): [[Left atrial area (LA)]]\n"
        "HISTORY: [[HISTORY]]\n"
        "the patient\n"
        "Size normalized to a body surface area of [[BSA]]"
    )


def test_units_are_added_from_data_field_units_only_when_the_line_lacks_them():
    body = (
        '<p><label for="a">Aorta</label><input type="number" id="a" data-field-units="mm"></p>'
        '<p><label for="b">Aorta</label><input type="number" id="b" data-field-units="mm"> mm</p>'
    )
    assert one(body) == "Aorta: [[Aorta]] mm\nAorta: [[Aorta]] mm"


def test_date_and_time_fields_are_free_fields():
    body = '<p>Prior: <input type="date" name="Prior date"> at <input type="time" name="t"></p>'
    assert one(body) == "Prior: [[Prior]] at [[t]]"


def test_a_select_puts_the_selected_options_first():
    body = (
        '<p><label for="s">Lungs</label><select id="s" multiple><option>clear'
        "<option selected>nodule<option>mass<option selected>effusion</select></p>"
    )
    assert one(body) == "Lungs: [[Lungs: nodule | effusion | clear | mass]]"


def test_a_select_inside_its_label_is_named_by_it():
    body = "<p><label>Lungs <select><option>clear<option>nodule</select></label></p>"
    assert one(body) == "Lungs: [[Lungs: clear | nodule]]"


def test_options_are_their_text_else_their_value_and_disabled_prompts_are_skipped():
    body = (
        "<p><select name=x><option disabled selected>Choose…</option>"
        '<option><b>bold</b> option</option><option value="by value"></option></select></p>'
    )
    assert one(body) == "[[x: bold option | by value]]"


def test_syntax_characters_in_options_cannot_break_the_picklist():
    assert one("<p><select name=x><option>a | b<option>c]]<option>[[d</select></p>") == (
        "[[x: a / b | c)) | ((d]]"
    )


def test_a_select_without_options_becomes_a_free_field_with_a_warning():
    template = read('<section data-section-name="S"><p>Grade: <select></select></p></section>')
    assert template.sections[0].text == "Grade: [[Grade]]"
    assert template.warnings == (
        'The pick-list "Grade" in S has no choices; it became a free field.',
    )


def test_a_select_left_open_ends_at_the_next_paragraph():
    body = "<p>Lungs: <select name=l><option>clear<option>nodule<p>Heart normal.</p>"
    assert one(body) == "Lungs: [[Lungs: clear | nodule]]\nHeart normal."


def test_a_checkbox_is_a_yes_no_picklist_with_its_default_first():
    body = (
        '<p><input type="checkbox" id="a"><label for="a">Pneumothorax</label></p>'
        '<p><label><input type="checkbox" checked> Ascites</label></p>'
        '<p><input type="checkbox" name="pe"> Pleural effusion</p>'
    )
    assert one(body) == (
        "Pneumothorax: [[Pneumothorax: no | yes]]\n"
        "Ascites: [[Ascites: yes | no]]\n"
        "Pleural effusion: [[Pleural effusion: no | yes]]"
    )


def test_radio_buttons_of_one_name_are_one_picklist_where_the_first_one_is():
    body = (
        "<p>Flow voids:</p>"
        '<p><input type="radio" id="a" name="flow voids" value="n">'
        '<label for="a">preserved</label></p>'
        '<p><input type="radio" id="b" name="flow voids" value="a" checked><label for="b">absent'
        "</label></p><p>End.</p>"
        '<p>Side: <input type="radio" name="side" value="left"> <input type="radio" name="side" '
        'value="right"></p>'
    )
    assert one(body) == (
        "Flow voids:\n[[flow voids: absent | preserved]]\nEnd.\nSide: [[Side: left | right]]"
    )


def test_fields_without_report_text_are_dropped_with_a_warning_and_hidden_ones_quietly():
    template = read(
        '<section data-section-name="S"><p>Images: <input type="file" name="img"></p>'
        '<p>Keep <input type="hidden" name="h" value="1">this.</p>'
        '<p><input type="submit" value="Go"><button>Press</button></p></section>'
    )
    assert template.sections == (TemplateSection("S", "Keep this."),)
    assert template.warnings == (
        'A field of type "file" ("img") in S cannot be imported and was left out.',
        'A field of type "submit" in S cannot be imported and was left out.',
    )


def test_an_unknown_input_type_is_a_text_field_as_in_a_browser():
    assert one('<p>Grade: <input type="grade" name="g"></p>') == "Grade: [[Grade]]"


def test_a_very_long_label_is_cut_short_in_the_placeholder():
    label = "word " * 100
    (found,) = picklists(one(f"<p><label for=x>{label}</label><input id=x></p>"))
    assert len(found.label) <= 80 and found.label.endswith("…")


def test_too_many_warnings_are_summed_up():
    body = "".join(f'<section data-section-name="E{n}"></section>' for n in range(50))
    template = read(body + '<section data-section-name="A"><p>a</p></section>')
    assert len(template.warnings) == MAX_WARNINGS
    assert template.warnings[-1] == "... and 31 more warnings like these."


def test_every_blank_of_an_imported_template_is_reported_before_signing():
    texts = [s.text for s in parse_mrrt(corpus("ct_chest.html")).sections]
    assert [label for text in texts for label in unfilled(text)] == [
        "Indication",
        "Contrast",
        "DLP",
        "Lungs",
        "Airways",
        "Pleura",
        "Lymph nodes",
        "Largest node, short axis",
        "Acute fracture",
        "Impression",
    ]


# ---- hostile input ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SNIPPETS = [
    *(b"<", b">", b"</", b"<!--", b"-->", b"<![CDATA[", b"<?x", b"<!DOCTYPE", b"&", b"&#"),
    *(b"&#x110000;", b"&#0;", b"[[", b"]]", b"|", b":", b'"', b"'", b"=", b"\x00", b"\xff"),
    *(b"<section>", b"</section>", b"<header>", b"</header>", b"<select>", b"</select>"),
    *(b"<option selected>", b"<label for=a>", b"</label>", b"<input type=checkbox id=a>"),
    *(b"<input type=radio name=r>", b"<textarea>", b"</textarea>", b"<script>", b"</script>"),
    *(b"<br>", b"<li>", b"<ol>", b"<p>", b"</p>", b"<td>", b"<button>", b'data-section-name="'),
]


def _mutations(rng: random.Random) -> bytes:
    data = bytearray(corpus(rng.choice(["ct_chest.html", "mr_brain.html", "messy.html"])))
    way = rng.randrange(4)
    for _ in range(rng.randrange(1, 12)):
        at = rng.randrange(len(data) + 1)
        if way == 0 and at < len(data):
            data[at] = rng.randrange(128)  # bytes above 127 would mostly end in "not UTF-8"
        elif way == 1:
            data[at:at] = rng.choice(_SNIPPETS)
        elif way == 2:
            del data[at : at + rng.randrange(1, 200)]
    if way == 3:
        data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def _soup(rng: random.Random) -> bytes:
    return b"x".join(rng.choice(_SNIPPETS) for _ in range(rng.randrange(1, 200)))


def _random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(2000)))


@pytest.mark.parametrize("make", [_mutations, _soup, _random_bytes])
def test_any_input_gives_a_template_or_an_mrrt_error_and_nothing_else(make):
    rng = random.Random(make.__name__)
    results = set()
    for _ in range(600):
        data = make(rng)
        for given in (data, data.decode("utf-8", "replace")):
            try:
                template = parse_mrrt(given)
            except MrrtError as error:
                assert str(error)
                results.add("refused")
                continue
            results.add("read")
            assert template.title and template.sections
            for section in template.sections:
                assert section.title and section.text == section.text.strip()
                assert not _CONTROL.search(section.title + section.text)
                assert "\n\n\n" not in section.text
                unfilled(section.text)
    if make is _mutations:
        assert results == {"read", "refused"}


@pytest.mark.parametrize(
    "unit",
    ["<a", '<a b="', "<!--", "<", "</", "<section>", "<section><li>x", "<select><option>x"],
)
def test_malformed_markup_takes_linear_time(unit):
    data = unit * (512 * 1024 // len(unit))
    started = time.perf_counter()
    with contextlib.suppress(MrrtError):
        parse_mrrt(data)
    assert time.perf_counter() - started < 3.0

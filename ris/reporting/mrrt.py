"""Report templates in the IHE MRRT format (the RSNA RadReport library's), read into sections.

An MRRT template (IHE RAD TF Supplement "Management of Radiology Report Templates", template
structure) is an HTML5 file: ``<head>`` holds Dublin Core metadata (``<meta
name="dcterms.title">``, ``dcterms.identifier``, ``dcterms.language``) and coded content in a
``<script type="text/xml">``; ``<body>`` holds ``<section data-section-name>`` elements, each
with a ``<header>``, text, and fields: ``<input>`` (text, number, date, time, checkbox,
radio), ``<textarea>``, ``<select>`` with ``<option>``s.

Our editor shows a report as ordered sections of plain text with our pick-list syntax
(ris/reporting/picklists.py) at the places to fill in. The choices made here:

- The top-level sections are the report's sections, titled by data-section-name, else by
  their header text (a trailing ":" dropped). A header that says more than the name (RadReport
  puts the procedure's name in the header of a section called "Procedure") is kept as the
  section's first line.
- Nested sections are flattened into their top-level section, because report sections
  (Findings, Impression) are what the editor, the PDF and the HL7 result carry; organ
  subsections belong inside Findings. A subsection of one line reads "Lungs: clear" (or
  just its line when that already starts with "Lungs" or has its own "Label:"); a longer one
  gets a "Lungs:" heading line and blank lines around it. The exception: a template whose
  only top-level section has no text of its own is a wrapper, and its subsections become
  the report's sections.
- Each paragraph (``<p>``, ``<li>``, a ``<div>``, a table row, a ``<br>``) is one line. A
  field stays where it is in its line, and its label's text stays too, so after filling in
  the line still reads "Lungs: clear": ``Lungs: [[Lungs: clear | nodule]]``. The label is
  repeated inside the placeholder because that name is what the editor and the refusal to
  sign show. A short capitalised ``<label>`` directly before its field gets a ":" when it
  has none ("Anterior 0" reads as "Anterior: 0").
- Text, number, date and time fields and textareas become ``[[Label]]``, or just their default
  text when they have one. ``<select>`` (also ``multiple``) becomes a pick-list, the selected
  options first. A checkbox becomes ``Label: [[Label: yes | no]]``, its default state first
  ("no | yes" when unchecked): the editor has no tick boxes, and a finding the radiologist
  must answer either way is safer than one silently left out. Radio buttons of one name in a
  top-level section become one pick-list of their labels. Unit text after a number field is
  kept as written; data-field-units is added only when the line does not already say it.
- Fields that carry no report text (file, image, button, password, colour) are dropped with
  a warning, and so are empty sections; hidden inputs are dropped silently.

The markup is split by a small tokenizer here instead of html.parser: on the Python we run
(3.11.7) html.parser is quadratic on malformed markup (2 MB of ``<a`` did not finish in 20
seconds), and these files are uploaded by users. This one scans forward only, following the HTML5
tokenizer where it matters (an unclosed comment, quote or tag runs to the end of the file,
as in a browser), and decodes entities with html.unescape. Django stays out of it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ris.reporting.picklists import picklist

MAX_BYTES = 2 * 1024 * 1024
# Sections nested deeper than this are read as part of their parent: real templates have
# three levels, and the flattening below is recursive.
MAX_DEPTH = 12
MAX_WARNINGS = 20
# A placeholder's label is repeated wherever its field is, so it is kept short; titles fit
# the template's name (200 characters).
MAX_LABEL = 80
MAX_TITLE = 200

# Words in a label that is still short enough to name a field; longer ones are sentences
# ("Index values are normalized to body surface area (BSA) of"), named by the field instead.
_SHORT_LABEL_WORDS = 6


class MrrtError(ValueError):
    """A file that cannot be imported; the message can be shown to the user as it is."""


@dataclass(frozen=True)
class TemplateSection:
    title: str
    text: str


@dataclass(frozen=True)
class ImportedTemplate:
    title: str
    identifier: str
    sections: tuple[TemplateSection, ...]
    language: str
    warnings: tuple[str, ...]


# ---- tokenizer -------------------------------------------------------------------------------

_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_MARKUP = re.compile(r"<[A-Za-z/!?]")  # a "<" before anything else is text ("< 1.0 cm2")
_TAG_NAME = re.compile(r"[A-Za-z][^\t\n\f\r />]*")
_TAG_GAP = re.compile(r"[\t\n\f\r /]*")
# A quoted value without its closing quote falls back to the bare form; that can happen once
# per quote character in a file, since a failed search means no such quote is left.
_ATTRIBUTE = re.compile(
    r"""([^\t\n\f\r />=][^\t\n\f\r />=]*)"""
    r"""(?:[\t\n\f\r ]*=[\t\n\f\r ]*(?:"([^"]*)"|'([^']*)'|([^\t\n\f\r >]*)))?"""
)
# Elements whose content is not markup: dropped whole, or (RCDATA) kept as text.
_RAW_TEXT = frozenset({"script", "style", "iframe", "noembed", "noframes", "xmp"})
_RCDATA = frozenset({"textarea", "title"})
_END_TAG = {
    name: re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE) for name in _RAW_TEXT | _RCDATA
}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

_Token = tuple[str, str, dict[str, str]]  # ("start" | "end" | "text", tag name or text, attrs)


def _tokens(text: str) -> Iterator[_Token]:
    """Start tags, end tags and text (entities decoded), in order. Every step moves forward,
    so the time is linear in the length of `text`."""
    pos = text_start = 0
    no_end_tag: set[str] = set()  # RCDATA elements whose end tag does not occur any more
    while True:
        found = _MARKUP.search(text, pos)
        if found is None:
            break
        i = found.start()
        following = text[i + 1 : i + 2]
        closing = following == "/" and text[i + 2 : i + 3] in _LETTERS
        if following in _LETTERS or closing:
            name_match = _TAG_NAME.match(text, i + 2 if closing else i + 1)
            assert name_match is not None  # it starts with a letter
            name = name_match.group().lower()
            if closing:
                end = text.find(">", name_match.end())
                tag: _Token = ("end", name, {})
            else:
                attrs, end = _start_tag(text, name_match.end())
                tag = ("start", name, attrs)
        elif text.startswith("<!--", i):
            if text.startswith(">", i + 4) or text.startswith("->", i + 4):
                end = text.index(">", i + 4)
            else:
                end = text.find("-->", i + 4)
                end = end + 2 if end >= 0 else -1
            tag = ("comment", "", {})
        else:  # "<!", "<?" or "</" without a name: a bogus comment, up to the next ">"
            end = i + 2 if text.startswith("</>", i) else text.find(">", i + 2)
            tag = ("comment", "", {})
        if text_start < i:
            yield ("text", html.unescape(text[text_start:i]), {})
        if end < 0:
            return  # the file ends inside a tag, comment or declaration: as in a browser
        if tag[0] != "comment":
            yield tag
        pos = text_start = end + 1
        name = tag[1]
        if tag[0] == "start" and (name in _RAW_TEXT or name in _RCDATA - no_end_tag):
            found = _END_TAG[name].search(text, pos)
            if found is None and name in _RAW_TEXT:
                return  # a script that never ends hides the rest, as in a browser
            if found is None:
                no_end_tag.add(name)  # lenient: an unclosed textarea is empty
                continue
            if name in _RCDATA and pos < found.start():
                yield ("text", html.unescape(text[pos : found.start()]), {})
            pos = text_start = found.start()
    if text_start < len(text):
        yield ("text", html.unescape(text[text_start:]), {})


def _start_tag(text: str, pos: int) -> tuple[dict[str, str], int]:
    """The attributes of a start tag whose name ends at `pos`, and the position of its ">"
    (-1 when the file ends first). The first of repeated attributes counts, as in HTML5."""
    attrs: dict[str, str] = {}
    n = len(text)
    while True:
        gap = _TAG_GAP.match(text, pos)
        pos = gap.end() if gap else pos
        if pos >= n:
            return attrs, -1
        if text[pos] == ">":
            return attrs, pos
        match = _ATTRIBUTE.match(text, pos)
        if match is None:
            pos += 1  # a stray "=" before a name
            continue
        name = match.group(1).lower()
        value = next((v for v in match.group(2, 3, 4) if v is not None), "")
        attrs.setdefault(name, html.unescape(value) if "&" in value else value)
        pos = match.end()


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        if len(data) > MAX_BYTES:
            raise MrrtError("The file is larger than 2 MB; report templates are much smaller.")
        text = data.encode("utf-8", "replace").decode("utf-8").removeprefix("\ufeff")
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > MAX_BYTES:
            raise MrrtError("The file is larger than 2 MB; report templates are much smaller.")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise MrrtError(
                "The file is not UTF-8 text. MRRT templates are UTF-8; save it as UTF-8 "
                "and import it again."
            ) from None
    else:
        raise TypeError(f"parse_mrrt takes bytes or str, not {type(data).__name__}")
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


# ---- the document as sections, lines and fields ---------------------------------------------


@dataclass(eq=False)
class _Text:
    text: str
    label: int | None  # the <label> element it is inside, numbered in document order
    consumed: bool = False  # taken as the label of a checkbox or radio button


@dataclass(eq=False)
class _Field:
    kind: str  # "text" | "select" | "checkbox" | "radio"
    path: tuple[_Section, ...]  # the sections it is in, outermost first
    id: str = ""
    name: str = ""
    title: str = ""
    placeholder: str = ""
    units: str = ""
    default: str = ""
    value: str = ""
    checked: bool = False
    wrapping: int | None = None  # the <label> element around it
    options: list[tuple[str, bool]] = field(default_factory=list)  # (text, selected)
    label_text: str = ""  # its <label>'s text, once the line is read
    hint: str = ""  # the words just before it when they read as a label ("Lungs:")
    group: list[_Field] = field(default_factory=list)  # radio buttons of one name
    absorbed: bool = False  # a radio button shown by the first of its group

    @property
    def where(self) -> str:
        return _where(self.path)

    @property
    def section(self) -> str:
        """The innermost section's title: the last resort for naming the field."""
        return self.path[-1].title if self.path else ""


@dataclass(eq=False)
class _Line:
    prefix: str  # "- " or "1. " for list items
    pieces: list[_Text | _Field]


@dataclass(eq=False)
class _Section:
    name: str  # data-section-name
    header: str | None = None  # the <header>'s text, None until one is read
    items: list[_Line | _Section | None] = field(default_factory=list)  # None: a blank line
    title: str = ""  # the name, else the header: set by `named`

    def named(self) -> None:
        self.title = _clip(_title(self.name) or _title(self.header or ""), MAX_TITLE)

    def sections(self) -> Iterator[_Section]:
        return (item for item in self.items if isinstance(item, _Section))


def _where(path: tuple[_Section, ...] | list[_Section]) -> str:
    return " / ".join(s.title for s in path if s.title) or "the template"


def _squash(value: str) -> str:
    return " ".join(value.split())


def _title(value: str) -> str:
    return _squash(value).rstrip(": ").strip()


def _clip(value: str, limit: int) -> str:
    """At most `limit` characters, cut at a word when there is one to cut at."""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" :") + "…"


def _key(value: str) -> str:
    return _title(value).casefold()


_BLOCK = frozenset(
    {
        *("address", "article", "aside", "blockquote", "caption", "dd", "details", "dialog"),
        *("div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "hgroup"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "hr", "legend", "main", "nav", "p", "pre"),
        *("summary", "table", "tbody", "tfoot", "thead", "tr"),
    }
)
# Their content is not report text (and <button>'s words are not the report's either).
_IGNORED = frozenset({"button", "datalist", "template", "svg", "math", "object", "canvas"})
_DROPPED_INPUTS = frozenset({"file", "image", "button", "submit", "reset", "password", "color"})
_OWN_LABEL = re.compile(r"^[^:\[\]]{1,60}:")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\]\] ([,.;:!?)])")
_WHITESPACE = re.compile(r"\s+")
_FIELD_TAGS = frozenset({"input", "select", "textarea", "label"})


class _Reader:
    """Builds sections, lines and fields from the tokens. Turning them into text waits until
    every line is complete, since a field's <label> may come after it."""

    def __init__(self) -> None:
        self.tops: list[_Section] = []
        self.stack: list[_Section] = []
        self.saw_section = False
        self.warnings: dict[str, None] = {}  # in order, each once
        self._too_deep = 0  # <section>s open beyond MAX_DEPTH
        self.meta: dict[str, str] = {}
        self.lang = ""
        self.charset = ""
        self.title_text: str | None = None
        self.h1_text: str | None = None
        self.label_for: dict[int, str] = {}  # <label> number -> its "for"
        self._title_buf: list[str] | None = None
        self._h1_buf: list[str] | None = None
        self._head = False
        self._ignored = 0  # depth inside elements whose content is not report text
        self._pieces: list[_Text | _Field] = []
        self._prefix = ""
        self._lists: list[list[int]] = []  # [ordered, items so far] per open <ul>/<ol>
        self._label: int | None = None
        self._header: _Section | None = None
        self._header_buf: list[str] = []
        self._select: _Field | None = None
        self._option: list[str] | None = None
        self._option_attrs: dict[str, str] = {}
        self._textarea: _Field | None = None
        self._textarea_buf: list[str] = []
        self._outside_warned = False

    def where(self) -> str:
        return _where(self.stack)

    def warn(self, message: str) -> None:
        self.warnings.setdefault(message)

    def outside(self) -> None:
        if not self._outside_warned and not self._head:
            self._outside_warned = True
            self.warn("Text and fields outside the template's sections were left out.")

    # -- ends of things

    def flush(self, *, blank: bool = False) -> None:
        """End the current line; `blank`: a <br> on an empty line leaves an empty line."""
        if self.stack:
            if any(isinstance(p, _Field) or p.text.strip() for p in self._pieces):
                self.stack[-1].items.append(_Line(self._prefix, self._pieces))
                self._prefix = ""
            elif blank:
                self.stack[-1].items.append(None)
        self._pieces = []

    def end_header(self) -> None:
        if self._header is not None:
            self._header.header = _squash("".join(self._header_buf))
            self._header.named()
            self._header = None

    def end_option(self) -> None:
        if self._select is not None and self._option is not None:
            attrs = self._option_attrs
            said = _squash("".join(self._option)) or _squash(attrs.get("label", ""))
            said = said or _squash(attrs.get("value", ""))
            if said and "disabled" not in attrs:
                self._select.options.append((said, "selected" in attrs))
        self._option = None

    def end_select(self) -> None:
        if self._select is not None:
            self.end_option()
            self.add(self._select)
            self._select = None

    def end_textarea(self) -> None:
        if self._textarea is not None:
            lines = (_squash(line) for line in "".join(self._textarea_buf).split("\n"))
            self._textarea.default = "\n".join(lines).strip("\n")
            self.add(self._textarea)
            self._textarea = None

    def add(self, one: _Field) -> None:
        if self.stack:
            self._pieces.append(one)
        else:
            self.outside()

    def new_field(self, kind: str, attrs: dict[str, str]) -> _Field:
        return _Field(
            kind=kind,
            path=tuple(self.stack),
            id=attrs.get("id", "").strip(),
            name=attrs.get("name", ""),
            title=attrs.get("title", ""),
            placeholder=attrs.get("placeholder", ""),
            units=_squash(attrs.get("data-field-units", "")),
            value=attrs.get("value", ""),
            checked="checked" in attrs,
            wrapping=self._label,
        )

    # -- tokens

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if self._ignored:
            if tag in _IGNORED:
                self._ignored += 1
            if tag != "section":
                return
            self._ignored = 0  # a section boundary ends whatever was left open
        elif tag in _IGNORED:
            self._ignored = 1
            return
        self.end_textarea()  # only an unclosed one is still open at a tag
        if self._select is not None:
            if tag == "option":
                self.end_option()
                self._option, self._option_attrs = [], attrs
                return
            if tag == "optgroup":
                self.end_option()
                return
            if tag not in _BLOCK and tag not in _FIELD_TAGS | {"li", "section", "br"}:
                return
            self.end_select()  # a select left open ends where a paragraph or field begins
        if tag == "title" and self.title_text is None and not self.stack:
            self._title_buf = []
        if tag == "h1" and self.h1_text is None:
            self._h1_buf = []
        if self._header is not None and tag in _FIELD_TAGS | {"p", "section"}:
            self.end_header()
        handler = getattr(self, f"start_{tag}", None) if tag.isalnum() else None
        if handler is not None:
            handler(attrs)
        elif tag in _BLOCK:
            if self._header is not None:
                self._header_buf.append(" ")
            else:
                self.flush()
        elif tag in {"td", "th"}:
            self.text(" ")

    def end(self, tag: str) -> None:
        if self._ignored:
            if tag in _IGNORED:
                self._ignored -= 1
            if tag != "section":
                return
            self._ignored = 0
        if tag == "title" and self._title_buf is not None:
            self.title_text = _squash("".join(self._title_buf))
            self._title_buf = None
        if tag == "h1" and self._h1_buf is not None:
            self.h1_text = _squash("".join(self._h1_buf))
            self._h1_buf = None
        if tag == "option":
            self.end_option()
        elif tag == "head":
            self._head = False
        elif tag == "section":
            self.end_select()
            self.end_textarea()
            self.end_header()
            self.flush()
            self._label = None
            if self._too_deep:
                self._too_deep -= 1
            elif self.stack:
                self.stack.pop()
        elif tag == "label":
            self._label = None
        elif tag == "select":
            self.end_select()
        elif tag == "textarea":
            self.end_textarea()
        elif self._select is not None and tag not in _BLOCK:
            return  # </b> inside an option, say
        elif tag == "header" and self._header is not None:
            self.end_header()
        elif self._header is not None and tag in _BLOCK:
            self._header_buf.append(" ")
        elif tag in {"ul", "ol"}:
            self.flush()
            if self._lists:
                self._lists.pop()
        elif tag in _BLOCK or tag in {"li", "header"}:
            self.end_select()
            self.flush()

    def text(self, data: str) -> None:
        if self._ignored:
            return
        if self._title_buf is not None:
            self._title_buf.append(data)
        if self._h1_buf is not None:
            self._h1_buf.append(data)
        if self._select is not None:
            if self._option is not None:
                self._option.append(data)
        elif self._textarea is not None:
            self._textarea_buf.append(data)
        elif self._header is not None:
            self._header_buf.append(data)
        elif self.stack:
            self._pieces.append(_Text(data, self._label))
        elif data.strip() and self._title_buf is None and self._h1_buf is None:
            self.outside()

    def finish(self) -> None:
        self.end_select()
        self.end_textarea()
        self.end_header()
        self.flush()
        if self._title_buf is not None:
            self.title_text = _squash("".join(self._title_buf))
        if self._h1_buf is not None:
            self.h1_text = _squash("".join(self._h1_buf))

    # -- elements with something to do when they start

    def start_html(self, attrs: dict[str, str]) -> None:
        self.lang = self.lang or _squash(attrs.get("lang", ""))

    def start_head(self, attrs: dict[str, str]) -> None:
        self._head = True

    def start_body(self, attrs: dict[str, str]) -> None:
        self._head = False

    def start_meta(self, attrs: dict[str, str]) -> None:
        name = attrs.get("name", "").strip().lower()
        if name:
            self.meta.setdefault(name, _squash(attrs.get("content", "")))
        charset = attrs.get("charset", "")
        if not charset and attrs.get("http-equiv", "").strip().lower() == "content-type":
            charset = attrs.get("content", "").partition("charset=")[2]
        self.charset = self.charset or _squash(charset).strip("\"';").lower()

    def start_section(self, attrs: dict[str, str]) -> None:
        self.flush()
        self._label = None
        if len(self.stack) >= MAX_DEPTH:
            self._too_deep += 1
            self.warn(f"Sections nested more than {MAX_DEPTH} deep were read as one.")
            return
        section = _Section(name=attrs.get("data-section-name", ""))
        section.named()
        (self.stack[-1].items if self.stack else self.tops).append(section)
        self.stack.append(section)
        self.saw_section = True

    def start_header(self, attrs: dict[str, str]) -> None:
        if self._header is not None:
            self._header_buf.append(" ")
            return
        self.flush()
        if self.stack and self.stack[-1].header is None:
            self._header, self._header_buf = self.stack[-1], []

    def start_br(self, attrs: dict[str, str]) -> None:
        if self._header is not None:
            self._header_buf.append(" ")
        else:
            self.flush(blank=True)

    def start_ul(self, attrs: dict[str, str]) -> None:
        self.flush()
        self._lists.append([0, 0])

    def start_ol(self, attrs: dict[str, str]) -> None:
        self.flush()
        self._lists.append([1, 0])

    def start_li(self, attrs: dict[str, str]) -> None:
        self.flush()
        if self._lists and self._lists[-1][0]:
            self._lists[-1][1] += 1
            self._prefix = f"{self._lists[-1][1]}. "
        else:
            self._prefix = "- "

    def start_label(self, attrs: dict[str, str]) -> None:
        self._label = len(self.label_for) + 1
        self.label_for[self._label] = attrs.get("for", "").strip()

    def start_input(self, attrs: dict[str, str]) -> None:
        kind = attrs.get("type", "").strip().lower() or "text"
        if kind == "hidden":
            return
        if kind in _DROPPED_INPUTS:
            name = _title(attrs.get("name", "") or attrs.get("id", ""))
            named = f' ("{name}")' if name else ""
            self.warn(
                f'A field of type "{kind}"{named} in {self.where()} cannot be imported '
                "and was left out."
            )
            words = [p for p in self._pieces if isinstance(p, _Text)]
            said = "".join(p.text for p in words).strip()
            if len(words) == len(self._pieces) and said.endswith(":") and _short(said):
                self._pieces = []  # a line that only named the field ("Attach images:")
            return
        if kind not in {"checkbox", "radio"}:
            kind = "text"  # browsers take an unknown type for text, and so do we
        one = self.new_field(kind, attrs)
        one.default = _squash(one.value) if kind == "text" else ""
        self.add(one)

    def start_select(self, attrs: dict[str, str]) -> None:
        self._select = self.new_field("select", attrs)

    def start_textarea(self, attrs: dict[str, str]) -> None:
        self._textarea, self._textarea_buf = self.new_field("text", attrs), []


# ---- labels, radio groups and text ----------------------------------------------------------


def _has_words(value: str) -> bool:
    return any(c.isalnum() for c in value)


def _short(value: str) -> bool:
    return (
        _has_words(value) and len(value) <= MAX_LABEL and len(value.split()) <= _SHORT_LABEL_WORDS
    )


def _named(*candidates: str) -> str:
    """The first candidate that can name a placeholder (it has a letter or digit, so
    `picklist` has something left after cleaning it), short enough; "" if none can."""
    named = next((_title(c) for c in candidates if _has_words(c)), "")
    return _clip(named, MAX_LABEL)


def _neighbour(pieces: list[_Text | _Field], index: int, step: int) -> int | None:
    """The nearest piece before (`step` -1) or after (+1) `index` that is not blank."""
    index += step
    while 0 <= index < len(pieces):
        piece = pieces[index]
        if isinstance(piece, _Field) or (piece.text.strip() and not piece.consumed):
            return index
        index += step
    return None


def _read_labels(line: _Line, label_for: dict[int, str]) -> None:
    """Give each field of a line its label: the <label> whose "for" is its id, else the
    <label> around it, else a <label> without "for" next to it (before a text field or
    pick-list, after a checkbox or radio button, where plain words will do too). Checkboxes
    and radio buttons take their label's words out of the line."""
    pieces = line.pieces
    by_label: dict[int, list[_Text]] = {}
    by_for: dict[str, int] = {}
    said_by: dict[int, str] = {}
    for piece in pieces:
        if isinstance(piece, _Text) and piece.label is not None:
            by_label.setdefault(piece.label, []).append(piece)
            by_for.setdefault(label_for.get(piece.label, ""), piece.label)

    def said(label: int) -> str:
        if label not in said_by:
            words = "".join(p.text for p in by_label[label])
            said_by[label] = _clip(_title(words), MAX_TITLE)
        return said_by[label]

    for index, one in enumerate(pieces):
        if not isinstance(one, _Field):
            continue
        ticks = one.kind in {"checkbox", "radio"}
        before = _neighbour(pieces, index, -1)
        near = _neighbour(pieces, index, +1 if ticks else -1)
        near_words = pieces[near] if near is not None else None
        label = by_for.get(one.id) if one.id else None
        if label is None and one.wrapping in by_label:
            label = one.wrapping
        if label is None and isinstance(near_words, _Text):
            if near_words.label is not None and not label_for.get(near_words.label):
                label = near_words.label
            elif near_words.label is None and ticks:
                one.label_text = _clip(_title(near_words.text), MAX_TITLE)
                near_words.consumed = True
        if label is not None:
            words = by_label[label]
            one.label_text = said(label)
            if ticks and not words[0].consumed:
                for piece in words:
                    piece.consumed = True
            elif before is not None and pieces[before] is words[-1]:
                _colon(words[-1], one.label_text)
        words_before = pieces[before] if before is not None else None
        if isinstance(words_before, _Text) and not words_before.consumed:
            if words_before.label is not None:  # a <label>, if not this field's
                hint = said(words_before.label)
            elif words_before.text.rstrip().endswith(":"):  # "Lungs: <select>"
                hint = _title(words_before.text)
            else:
                hint = ""
            one.hint = hint if _short(hint) else ""


def _colon(last: _Text, label: str) -> None:
    """A label read as a field's name ("Anterior", right before its field) ends in ":", its
    `last` words changed; "HISTORY:", "old" or "... (BSA) of" stay as they are."""
    said = last.text.rstrip()
    if _short(label) and label[0].isupper() and (said[-1:].isalnum() or said[-1:] == ")"):
        last.text = said + ": "


def _render_field(one: _Field, after: str, reader: _Reader) -> str:
    short = one.label_text if _short(one.label_text) else ""
    named = (short, one.hint, one.name, one.title, one.label_text, one.placeholder, one.section)
    label = _named(*named) or "Field"
    if one.kind == "text":
        said = one.default or picklist(label)
        if one.units and one.units.casefold() not in after.casefold():
            said += " " + one.units
        return said
    if one.kind == "select":
        if not one.options:
            reader.warn(
                f'The pick-list "{label}" in {one.where} has no choices; it became a free field.'
            )
            return picklist(label)
        ordered = [t for t, chosen in one.options if chosen]
        return picklist(label, ordered + [t for t, chosen in one.options if not chosen])
    if one.kind == "checkbox":
        label = _named(one.label_text) or label
        placeholder = picklist(label, ("yes", "no") if one.checked else ("no", "yes"))
        return f"{placeholder[2:].partition(':')[0]}: {placeholder}"  # the cleaned label
    if one.absorbed:
        return ""
    label = _named(one.hint, one.name, one.title) or label
    choices = [(_named(r.label_text, r.value), r.checked) for r in one.group]
    ordered = [t for t, chosen in choices if chosen and t]
    ordered += [t for t, chosen in choices if not chosen and t]
    return picklist(label, ordered)


def _render_line(line: _Line, reader: _Reader) -> list[str]:
    pieces = line.pieces
    after: dict[int, str] = {}  # the words between each field and the next one
    words: list[str] = []
    for index in range(len(pieces) - 1, -1, -1):
        piece = pieces[index]
        if isinstance(piece, _Field):
            after[index] = "".join(reversed(words))
            words = []
        elif not piece.consumed:
            words.append(piece.text)
    parts: list[str] = []
    for index, piece in enumerate(pieces):
        if isinstance(piece, _Text):
            if not piece.consumed:
                parts.append(_WHITESPACE.sub(" ", piece.text))
            continue
        said = _render_field(piece, after[index], reader)
        if said:
            parts.append(f" {said} ")
    lines = []
    for number, raw in enumerate("".join(parts).split("\n")):  # a textarea's lines
        said = _SPACE_BEFORE_PUNCTUATION.sub(r"]]\1", _squash(raw))
        lines.append(line.prefix + said if number == 0 and said else said)
    return lines if any(lines) else []  # all its fields shown elsewhere (radio buttons)


def _lines(section: _Section, path: str, reader: _Reader) -> list[str]:
    """A section's text as lines, its subsections flattened in (see the module docstring)."""
    out: list[str] = []
    if section.header and section.name and _key(section.header) != _key(section.name):
        out.append(_squash(section.header))
    for item in section.items:
        if item is None:
            out.append("")
            continue
        if isinstance(item, _Line):
            out.extend(_render_line(item, reader))
            continue
        title = item.title
        inner_path = f"{path} / {title}" if title else path
        inner = _trim(_lines(item, inner_path, reader))
        if not inner:
            what = f'The section "{inner_path}"' if title else f'A section in "{path}"'
            reader.warn(f"{what} is empty and was left out.")
        elif not title:
            out.extend(["", *inner, ""] if len(inner) > 1 else inner)
        elif len(inner) == 1 and _key(inner[0]).startswith(_key(title)):
            out.extend(inner)
        elif len(inner) == 1 and not _OWN_LABEL.match(inner[0]):
            out.append(f"{title}: {inner[0]}")
        else:
            out.extend(["", f"{title}:", *inner, ""])
    return out


def _trim(lines: list[str]) -> list[str]:
    """Without blank lines at the ends or two in a row."""
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def _own_text(section: _Section) -> bool:
    header = section.header and section.name and _key(section.header) != _key(section.name)
    return bool(header) or any(
        isinstance(p, _Field) or p.text.strip()
        for item in section.items
        if isinstance(item, _Line)
        for p in item.pieces
    )


def _all_lines(section: _Section) -> Iterator[_Line]:
    for item in section.items:
        if isinstance(item, _Line):
            yield item
        elif isinstance(item, _Section):
            yield from _all_lines(item)


def _group_radios(section: _Section) -> None:
    """Radio buttons sharing a name in one report section are one pick-list, shown where
    the first of them is."""
    first: dict[str, _Field] = {}
    for line in _all_lines(section):
        for one in line.pieces:
            if isinstance(one, _Field) and one.kind == "radio":
                holder = first.setdefault(one.name or f"#{id(one)}", one)
                holder.group.append(one)
                one.absorbed = holder is not one


def _some(warnings: list[str]) -> tuple[str, ...]:
    if len(warnings) <= MAX_WARNINGS:
        return tuple(warnings)
    more = len(warnings) - MAX_WARNINGS + 1
    return (*warnings[: MAX_WARNINGS - 1], f"... and {more} more warnings like these.")


def parse_mrrt(data: bytes | str) -> ImportedTemplate:
    """An MRRT template's title, identifier, language and report sections, with what could
    not be brought over in `warnings`. Any content that cannot be imported raises MrrtError
    and nothing else; an argument that is neither bytes nor str is a TypeError."""
    reader = _Reader()
    for kind, value, attrs in _tokens(_decode(data)):
        if kind == "start":
            reader.start(value, attrs)
        elif kind == "end":
            reader.end(value)
        else:
            reader.text(value)
    reader.finish()
    if not reader.saw_section:
        raise MrrtError("Not an MRRT template: no <section> elements found.")
    tops = reader.tops
    while len(tops) == 1 and not _own_text(tops[0]) and any(tops[0].sections()):
        tops = list(tops[0].sections())  # a wrapper around the whole report
    for section in tops:
        for line in _all_lines(section):
            _read_labels(line, reader.label_for)
        _group_radios(section)
    sections: list[TemplateSection] = []
    for section in tops:
        title = section.title
        if not title:
            title = f"Section {len(sections) + 1}"
            reader.warn(f'A section without a name or header was called "{title}".')
        lines = _trim(_lines(section, title, reader))
        if lines:
            sections.append(TemplateSection(title, "\n".join(lines)))
        else:
            reader.warn(f'The section "{title}" is empty and was left out.')
    if not sections:
        raise MrrtError("The template has no report text: all its sections are empty.")
    if sum(len(s.text) for s in sections) > MAX_BYTES:  # placeholders repeat their labels
        raise MrrtError("The template's text is longer than 2 MB; it cannot be a report.")
    if reader.charset and reader.charset not in {"utf-8", "utf8"}:
        reader.warn(f'The file says its charset is "{reader.charset}"; it was read as UTF-8.')
    meta = reader.meta
    title = meta.get("dcterms.title") or reader.title_text or reader.h1_text
    return ImportedTemplate(
        title=_clip(title or "", MAX_TITLE) or "Imported template",
        identifier=meta.get("dcterms.identifier", ""),
        sections=tuple(sections),
        language=meta.get("dcterms.language") or reader.lang,
        warnings=_some(list(reader.warnings)),
    )

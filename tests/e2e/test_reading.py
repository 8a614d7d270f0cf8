"""Reading and reporting in a real browser: a radiologist opens the worklist, opens an exam,
scrolls its images in the viewer beside the editor, writes the report from a template,
signs it (the password asked again) and adds an addendum; the referring physician reads
the final report of their own patient and nobody else's; two tabs on one draft never
silently overwrite each other."""

import re
import time
from collections.abc import Callable

import pytest
from django.urls import reverse
from playwright.sync_api import Frame, Page, expect

from accounts.roles import Role
from ris.models import Order, Report, ReportTemplate, ReportVersion
from tests.e2e.conftest import NEEDS_POSTGRESQL, screenshot
from tests.e2e.test_layout import has_horizontal_overflow, log_in
from tests.e2e.test_viewer import wait_for
from tests.factories import (
    PASSWORD,
    PatientFactory,
    ProcedureFactory,
    archived_study,
    exam_read,
    member,
    order_for,
    report_signed,
    report_written,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

Status = Report.Status
SLICES = 20
SIZE = 128
FINDINGS = "Lungs: [[Lungs: clear | nodule]].\nHeart: normal size."


@pytest.fixture
def image_files(tmp_path, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "images")},
        },
    }


@pytest.fixture
def ct_chest(facility_a):
    return ProcedureFactory(facility=facility_a, code="71250", name="CT chest", modality="CT")


def exam_with_images(facility_a, procedure, *, priority: str, family_name: str) -> Order:
    """An exam done at the modality whose images came in over DICOM (so it has a study)."""
    patient = PatientFactory(facility=facility_a, family_name=family_name)
    order = order_for(patient, procedure=procedure, priority=priority)
    archived_study(
        facility_a, patient.mrn, accession=order.accession_number, slices=SLICES, size=SIZE
    )
    return exam_read(order)


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Polls a database condition the browser brings about asynchronously (autosave)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def viewer_frame(page: Page) -> Frame:
    frame = page.locator("iframe.reading-viewer").element_handle().content_frame()
    assert frame is not None
    return frame


def report_of(order: Order) -> Report:
    return Report.objects.get(order=order)


@NEEDS_POSTGRESQL  # the viewer loads many images at once
def test_a_radiologist_reads_an_exam_signs_the_report_and_adds_an_addendum(
    page_factory, live_server, radiologist, facility_a, ct_chest, image_files
):
    exam_with_images(facility_a, ct_chest, priority=Order.Priority.ROUTINE, family_name="Routine")
    stat = exam_with_images(
        facility_a, ct_chest, priority=Order.Priority.STAT, family_name="Urgent"
    )
    ReportTemplate.objects.create(
        facility=facility_a,
        name="CT chest standard",
        modality="CT",
        sections=[{"title": "Findings", "text": FINDINGS}, {"title": "Impression", "text": ""}],
    )
    page = page_factory(1400, 900)
    log_in(page, live_server.url, radiologist.username)

    # The worklist, from the menu: the STAT exam first, though its images came in last.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reading worklist").click()
    page.wait_for_url("**/reporting/worklist/")
    rows = page.locator("table.worklist tbody tr")
    expect(rows).to_have_count(2)
    assert "STAT" in rows.first.locator("td").first.inner_text()
    assert stat.accession_number in rows.first.inner_text()
    rows.first.get_by_role("link", name="Read").click()
    page.wait_for_url(f"**{reverse('reporting:exam', args=[stat.pk])}")

    # Images and report side by side, the images as tall as the window allows.
    frame_box = page.locator("iframe.reading-viewer").bounding_box()
    report_box = page.locator("section.reading-report").bounding_box()
    assert page.locator(".reading-tabs").is_hidden(), "no tabs on a desktop"
    assert frame_box["x"] + frame_box["width"] <= report_box["x"] + 1, (frame_box, report_box)
    assert frame_box["width"] > report_box["width"], "the images get the larger share"
    assert frame_box["height"] >= 0.85 * 900, frame_box

    # Scroll the images inside the frame with the mouse wheel.
    viewer = viewer_frame(page)
    wait_for(viewer, "document.getElementById('viewer-app').dataset.state === 'ready'")
    wait_for(viewer, f"document.querySelector('.vp').dataset.loaded === '{SLICES}'")
    assert viewer.evaluate("document.querySelector('.vp').dataset.imageIndex") == "0"
    overlay = viewer.locator(".overlay-bl").first
    assert f"Im 1/{SLICES}" in overlay.inner_text()
    viewport = viewer.locator("[data-testid=viewport-0]").bounding_box()
    page.mouse.move(viewport["x"] + viewport["width"] / 2, viewport["y"] + viewport["height"] / 2)
    page.mouse.wheel(0, 300)
    wait_for(viewer, "Number(document.querySelector('.vp').dataset.imageIndex) > 0")
    index = int(viewer.evaluate("document.querySelector('.vp').dataset.imageIndex"))
    expect(overlay).to_contain_text(f"Im {index + 1}/{SLICES}")
    screenshot(page, "reading-desktop-scrolled")

    # Start from the template; the pick-list becomes a <select> under its section.
    page.get_by_label("Start the report from").select_option(label="CT chest standard")
    page.get_by_role("button", name="Start report").click()
    findings = page.get_by_label("Findings")
    expect(findings).to_have_value(FINDINGS)
    report = report_of(stat)
    assert (report.status, report.author, report.template.name) == (
        Status.DRAFT,
        radiologist,
        "CT chest standard",
    )
    pick = page.locator(".picks select").first
    assert pick.locator("option").all_inner_texts() == ["choose…", "clear", "nodule"]
    pick.select_option("clear")
    expect(findings).to_have_value("Lungs: clear.\nHeart: normal size.")
    expect(page.locator(".picks select")).to_have_count(0)
    page.get_by_label("Impression").press_sequentially("No acute disease.")

    # Autosave: the draft's words are in the database, the page says so.
    expected = [
        {"title": "Findings", "text": "Lungs: clear.\nHeart: normal size."},
        {"title": "Impression", "text": "No acute disease."},
    ]
    eventually(lambda: report_of(stat).sections == expected, "the autosaved draft")
    state = page.locator("[data-save-state]")
    expect(state).to_have_text(re.compile(r"^saved "))
    assert report_of(stat).status == Status.DRAFT

    # A wrong password signs nothing.
    editor = page.locator("form[data-editor]")
    password = editor.locator("input[name=password]")
    password.fill("not my password")
    editor.get_by_role("button", name="Sign final").click()
    expect(page.get_by_role("alert")).to_contain_text("That is not your password")
    report = report_of(stat)
    assert report.status == Status.DRAFT and not report.versions.exists()
    assert report.sections == expected, "the words are kept as a draft"

    # The right one signs it final.
    page.locator("form[data-editor] input[name=password]").fill(PASSWORD)
    page.locator("form[data-editor]").get_by_role("button", name="Sign final").click()
    expect(page.locator(".messages")).to_contain_text("signed final")
    report = report_of(stat)
    assert (report.status, report.signed_by) == (Status.FINAL, radiologist)
    version = ReportVersion.objects.get(report=report)
    assert (version.number, version.status) == (1, Status.FINAL)
    assert "Lungs: clear." in version.text and "No acute disease." in version.text
    stat.refresh_from_db()
    assert stat.status == Order.Status.FINAL
    expect(page.locator(".report-final")).to_contain_text("No acute disease.")

    # An addendum, signed with the password again.
    page.get_by_label("Addendum").fill("Compared with the outside CT: unchanged.")
    page.get_by_label("Your password, to sign").fill(PASSWORD)
    page.get_by_role("button", name="Sign addendum").click()
    expect(page.locator(".messages")).to_contain_text("Addendum signed")
    expect(page.locator(".report-addendum")).to_contain_text(
        "Compared with the outside CT: unchanged."
    )
    report = report_of(stat)
    assert report.status == Status.ADDENDED
    assert list(report.versions.values_list("number", "status")) == [
        (1, Status.FINAL),
        (2, Status.ADDENDED),
    ]
    assert report.addenda.get().signed_by == radiologist

    # The printable report shows the report and its addendum.
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Printable").click()
    printable = opened.value
    printable.wait_for_load_state()
    body = printable.locator("article.report-doc")
    expect(body).to_contain_text("Lungs: clear.")
    expect(body).to_contain_text("No acute disease.")
    expect(body).to_contain_text("Compared with the outside CT: unchanged.")
    expect(body).to_contain_text("version 2")
    screenshot(printable, "reading-printable")
    # The one console error is chromium logging the wrong password's 400 page.
    errors = page.console_errors  # type: ignore[attr-defined]
    assert [e for e in errors if "status of 400" not in e] == [] and len(errors) <= 1, errors


@NEEDS_POSTGRESQL
def test_on_a_phone_the_reading_page_shows_one_pane_at_a_time(
    page_factory, live_server, radiologist, facility_a, ct_chest, image_files
):
    order = exam_with_images(
        facility_a, ct_chest, priority=Order.Priority.ROUTINE, family_name="Phone"
    )
    prior = exam_read(order_for(order.patient, procedure=ct_chest))
    report_signed(prior, radiologist, "Old granuloma.")
    page = page_factory(390, 844, touch=True)
    log_in(page, live_server.url, radiologist.username)
    page.goto(live_server.url + reverse("reporting:exam", args=[order.pk]))

    tabs = page.get_by_role("tablist", name="Reading page")
    expect(tabs).to_be_visible()
    assert tabs.get_by_role("tab").all_inner_texts() == ["Images", "Report", "Priors (1)"]
    panes = {name: page.locator(f"[data-pane={name}]") for name in ("images", "report", "priors")}

    def only(shown: str) -> None:
        for name, pane in panes.items():
            (expect(pane).to_be_visible if name == shown else expect(pane).to_be_hidden)()
        expect(tabs.get_by_role("tab", selected=True)).to_have_attribute("data-tab", shown)

    only("report")
    expect(page.get_by_role("button", name="Start report")).to_be_visible()
    assert not has_horizontal_overflow(page)

    tabs.get_by_role("tab", name="Images").tap()
    only("images")
    frame = page.locator("iframe.reading-viewer").bounding_box()
    assert frame["width"] >= 380 and frame["height"] > 500, frame
    wait_for(viewer_frame(page), "document.getElementById('viewer-app').dataset.state === 'ready'")
    screenshot(page, "reading-phone-images")

    tabs.get_by_role("tab", name=re.compile("Priors")).tap()
    only("priors")
    expect(panes["priors"]).to_contain_text("Report (final)")

    tabs.get_by_role("tab", name="Report").tap()
    only("report")
    assert not has_horizontal_overflow(page)


@pytest.fixture
def referring(facility_a):
    return member(facility_a, Role.REFERRING_PHYSICIAN, username="gp", first_name="Gail")


def test_a_referring_physician_reads_their_patients_final_report_and_nothing_else(
    page_factory, live_server, radiologist, referring, facility_a
):
    mine = exam_read(order_for(PatientFactory(facility=facility_a), referring_physician=referring))
    report = report_signed(mine, radiologist, "Small left pleural effusion.")
    colleague = member(facility_a, Role.REFERRING_PHYSICIAN, username="gp2")
    theirs = exam_read(
        order_for(PatientFactory(facility=facility_a), referring_physician=colleague)
    )
    other = report_signed(theirs, radiologist, "Words for another physician.")
    page = page_factory(1280, 800)
    log_in(page, live_server.url, referring.username)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Reading worklist")).to_have_count(0)

    response = page.goto(live_server.url + reverse("reporting:report", args=[report.pk]))
    assert response.status == 200
    document = page.locator("article.report-doc")
    expect(document).to_contain_text("Small left pleural effusion.")
    expect(document).to_contain_text(mine.accession_number)
    expect(document).to_contain_text("Final")
    screenshot(page, "reading-referring-report")

    response = page.goto(live_server.url + reverse("reporting:report", args=[other.pk]))
    assert response.status == 404
    assert "Words for another physician." not in page.content()
    assert theirs.patient.family_name not in page.content()

    response = page.goto(live_server.url + reverse("reporting:worklist"))
    assert response.status == 403


def test_a_second_tab_on_the_same_draft_is_told_and_overwrites_nothing(
    page_factory, live_server, radiologist, facility_a
):
    order = exam_read(order_for(PatientFactory(facility=facility_a)))
    report = report_written(order, radiologist, "First words.")
    url = live_server.url + reverse("reporting:exam", args=[order.pk])
    first = page_factory(1280, 800)
    log_in(first, live_server.url, radiologist.username)
    first.goto(url)
    second = first.context.new_page()  # another tab of the same session
    second.goto(url)
    assert first.get_by_role("textbox", name="Report").input_value() == "First words."
    assert second.get_by_role("textbox", name="Report").input_value() == "First words."

    first.get_by_role("textbox", name="Report").fill("First words. Edited in tab A.")
    eventually(lambda: report_of(order).text == "First words. Edited in tab A.", "tab A's autosave")
    expect(first.locator("[data-save-state]")).to_have_text(re.compile(r"^saved "))
    saved = report_of(order)
    assert saved.revision == report.revision + 1

    second.get_by_role("textbox", name="Report").fill("First words. Edited in tab B.")
    state = second.locator("[data-save-state]")
    expect(state).to_contain_text("changed elsewhere")
    expect(state).to_have_class(re.compile(r"\berror\b"))
    unchanged = report_of(order)
    assert (unchanged.text, unchanged.revision) == ("First words. Edited in tab A.", saved.revision)
    screenshot(second, "reading-stale-tab")


def test_saving_right_after_typing_saves_without_a_leave_page_prompt(
    page_factory, live_server, radiologist, facility_a
):
    order = exam_read(order_for(PatientFactory(facility=facility_a)))
    report_written(order, radiologist, "First words.")
    page = page_factory(1280, 800)
    log_in(page, live_server.url, radiologist.username)
    page.goto(live_server.url + reverse("reporting:exam", args=[order.pk]))
    prompts: list[str] = []
    page.on("dialog", lambda dialog: (prompts.append(dialog.type), dialog.dismiss()))

    # Within the autosave delay (2 s): the form posts the words itself.
    box = page.get_by_role("textbox", name="Report")
    box.press("Control+End")
    box.press_sequentially(" More.")
    page.get_by_role("button", name="Save draft").click()

    expect(page.locator(".messages")).to_contain_text("Draft saved.")
    assert prompts == []
    assert report_of(order).text == "First words. More."


def test_a_macro_goes_where_the_cursor_is_and_is_autosaved(
    page_factory, live_server, radiologist, facility_a
):
    from ris.reporting import services as reporting

    order = exam_read(order_for(PatientFactory(facility=facility_a)))
    report_written(order, radiologist, "Findings: . End.")
    reporting.macro_save(
        facility_id=facility_a.pk, name="normal lungs", text="Lungs clear", actor=radiologist
    )
    page = page_factory(1280, 800)
    log_in(page, live_server.url, radiologist.username)
    page.goto(live_server.url + reverse("reporting:exam", args=[order.pk]))

    box = page.get_by_role("textbox", name="Report")
    box.click()
    box.evaluate("area => { area.selectionStart = area.selectionEnd = 10; }")
    page.get_by_role("button", name="Insert").click()

    expect(box).to_have_value("Findings: Lungs clear. End.")
    eventually(
        lambda: Report.objects.get(order=order).text == "Findings: Lungs clear. End.",
        "the macro's words autosaved",
    )

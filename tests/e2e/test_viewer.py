"""The viewer in a real browser: headless chromium renders the images it reads over DICOMweb.

Chromium runs with --disable-gpu, so WebGL is SwiftShader's: the same code paths as on a
reading workstation, CPU-rendered.
"""

import math
import re
import time

import pytest
from playwright.sync_api import Page

from accounts.roles import Role
from pacs.models import Annotation
from tests.e2e.conftest import NEEDS_POSTGRESQL, screenshot
from tests.e2e.test_layout import has_horizontal_overflow, log_in
from tests.factories import archived_study, member

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), NEEDS_POSTGRESQL]

SLICES = 30
SIZE = 128
PIXEL_SPACING_MM = 0.7  # synthetic.ct_instance's default


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
def ct_study(facility_a, image_files):
    return archived_study(
        facility_a, "P1", description="CT CHEST", study_date="20260110", slices=SLICES, size=SIZE
    )


def open_viewer(page: Page, base_url: str, study_uid: str) -> None:
    page.goto(f"{base_url}/viewer/studies/{study_uid}/")
    wait_for(page, "document.getElementById('viewer-app').dataset.state === 'ready'")


def wait_for(page: Page, expression: str, timeout: float = 20.0) -> None:
    """Polls `expression` in the page. Not page.wait_for_function: the page's CSP forbids
    the eval it relies on, as it should."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(expression):
            return
        time.sleep(0.05)
    status = page.evaluate("document.querySelector('.vw-status')?.textContent")
    errors = getattr(page, "console_errors", [])
    raise AssertionError(f"timed out waiting for {expression}; status {status!r}; {errors}")


def viewport_state(page: Page, index: int = 0) -> dict:
    return page.evaluate(f"({{...document.querySelectorAll('.vp')[{index}].dataset}})")


def measurement_texts(page: Page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('svg text')].map(t => t.textContent)")


def draw_length(page: Page, pixels: int) -> tuple[float, float]:
    """A horizontal length of `pixels` CSS pixels across the middle of the first viewport."""
    page.keyboard.press("l")
    box = page.locator("[data-testid=viewport-0]").bounding_box()
    x, y = box["x"] + box["width"] / 2 - pixels / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels / 2, y, steps=4)
    page.mouse.move(x + pixels, y, steps=4)
    page.mouse.up()
    # The label follows the drag; the value is final once the viewer has saved it.
    wait_for(page, "document.querySelector('.vw-status').textContent === 'Annotation saved'")
    return box["width"], box["height"]


def test_a_radiologist_scrolls_a_ct_and_changes_the_window(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1280, 800)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_for(page, f"document.querySelector('.vp').dataset.loaded === '{SLICES}'")
    state = viewport_state(page)
    assert (state["total"], state["imageIndex"]) == (str(SLICES), "0")
    assert state["voi"] == "W 400 L 40", "the first window of the header"
    assert "Im 1/30" in page.locator(".overlay-bl").first.inner_text()

    for _ in range(3):
        page.keyboard.press("ArrowDown")
    wait_for(page, "document.querySelector('.vp').dataset.imageIndex === '3'")
    page.mouse.move(640, 400)
    page.mouse.wheel(0, 300)
    wait_for(page, "Number(document.querySelector('.vp').dataset.imageIndex) > 3")
    page.keyboard.press("End")
    wait_for(page, f"document.querySelector('.vp').dataset.imageIndex === '{SLICES - 1}'")

    page.keyboard.press("2")  # lung preset
    wait_for(page, "document.querySelector('.vp').dataset.voi === 'W 1500 L -600'")
    page.keyboard.press("w")
    box = page.locator("[data-testid=viewport-0]").bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 300, box["y"] + 260, steps=5)
    page.mouse.up()
    wait_for(page, "document.querySelector('.vp').dataset.voi !== 'W 1500 L -600'")
    assert page.locator(".series-list .series-item").count() == 1
    screenshot(page, "viewer-ct-lung-window")
    assert page.console_errors == []


def test_a_length_on_a_known_pixel_spacing_shows_millimetres(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    drag = 200
    width, height = draw_length(page, drag)
    # The square image fits the viewport's shorter side: SIZE image pixels over that many
    # CSS pixels, each image pixel PIXEL_SPACING_MM wide.
    expected = drag * SIZE / min(width, height) * PIXEL_SPACING_MM
    shown = [t for t in measurement_texts(page) if t.endswith("mm")]
    screenshot(page, "viewer-length")
    assert len(shown) == 1, shown
    value = float(re.match(r"([\d.]+) mm", shown[0]).group(1))
    assert math.isclose(value, expected, rel_tol=0.03), (shown, expected)
    screenshot(page, "viewer-length")


def test_a_saved_measurement_comes_back_after_reload_for_its_author_only(
    page_factory, live_server, radiologist, facility_a, ct_study
):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    draw_length(page, 160)
    saved = Annotation.objects.get()
    assert (saved.user, saved.study, saved.tool_name) == (radiologist, ct_study, "Length")
    shown = [t for t in measurement_texts(page) if t.endswith("mm")]

    page.reload()
    wait_for(page, "document.getElementById('viewer-app').dataset.state === 'ready'")
    wait_for(page, "[...document.querySelectorAll('svg text')].some(t => /mm/.test(t.textContent))")
    assert [t for t in measurement_texts(page) if t.endswith("mm")] == shown
    screenshot(page, "viewer-length-reloaded")
    time.sleep(1)  # longer than the viewer's save delay
    unchanged = Annotation.objects.get()
    assert unchanged.updated_at == saved.updated_at, "reopening saves nothing"

    colleague = member(facility_a, Role.RADIOLOGIST, username="colleague")
    other = page_factory(1100, 700)
    log_in(other, live_server.url, colleague.username)
    open_viewer(other, live_server.url, ct_study.study_instance_uid)
    time.sleep(0.5)
    assert not [t for t in measurement_texts(other) if t.endswith("mm")]


def test_a_prior_opens_beside_the_current_study_and_scrolls_with_it(
    page_factory, live_server, radiologist, facility_a, ct_study
):
    prior = archived_study(
        facility_a, "P1", description="CT CHEST", study_date="20250105", slices=SLICES, size=SIZE
    )
    page = page_factory(1400, 800)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    priors = page.locator(".priors-list .prior-item")
    assert priors.count() == 1
    assert "2025-01-05" in priors.first.inner_text()
    priors.first.get_by_role("button", name="Compare").click()
    wait_for(
        page,
        f"document.querySelectorAll('.vp')[1].dataset.studyUid === '{prior.study_instance_uid}'",
    )
    wait_for(page, f"document.querySelectorAll('.vp')[1].dataset.loaded === '{SLICES}'")
    assert page.locator(".vw-grid").get_attribute("data-layout") == "1x2"
    assert page.locator("[data-action=sync]").get_attribute("aria-pressed") == "true"

    page.locator("[data-testid=viewport-0]").click(position={"x": 50, "y": 50})
    for _ in range(10):
        page.keyboard.press("ArrowDown")
    wait_for(page, "document.querySelectorAll('.vp')[0].dataset.imageIndex === '10'")
    wait_for(page, "document.querySelectorAll('.vp')[1].dataset.imageIndex === '10'")
    screenshot(page, "viewer-prior-side-by-side")


def test_mpr_shows_three_planes_and_a_volume_rendering(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1280, 900)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    assert page.locator(".vw-banner").is_hidden(), "SwiftShader gives WebGL"
    page.keyboard.press("m")
    wait_for(page, "document.getElementById('viewer-app').dataset.mprState === 'ready'", 60)
    planes = page.evaluate("[...document.querySelectorAll('.vp')].map(v => v.dataset.plane)")
    assert planes == ["Axial", "Sagittal", "Coronal", "3D"]
    screenshot(page, "viewer-mpr")
    page.keyboard.press("m")
    wait_for(page, "!document.getElementById('viewer-app').dataset.mode")
    wait_for(page, "document.querySelector('.vp').dataset.total === '30'")
    assert page.console_errors == []


def test_cine_plays_and_stops(page_factory, live_server, radiologist, ct_study):
    page = page_factory(1000, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_for(page, f"document.querySelector('.vp').dataset.loaded === '{SLICES}'")
    page.keyboard.press(" ")
    wait_for(page, "Number(document.querySelector('.vp').dataset.imageIndex) >= 5")
    page.keyboard.press(" ")
    assert page.locator("[data-action=cine]").get_attribute("aria-pressed") == "false"
    stopped = viewport_state(page)["imageIndex"]
    time.sleep(0.3)
    assert viewport_state(page)["imageIndex"] == stopped


def test_the_viewer_works_on_a_phone(page_factory, live_server, radiologist, ct_study):
    page = page_factory(390, 844, touch=True)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    assert not has_horizontal_overflow(page)
    assert page.locator(".vw-side").is_hidden(), "the series browser starts folded on a phone"
    page.get_by_role("button", name="Series").click()
    assert page.locator(".vw-side").is_visible()
    page.get_by_role("button", name="?").click()
    assert page.get_by_role("dialog").is_visible()
    assert "Previous / next image" in page.get_by_role("dialog").inner_text()
    screenshot(page, "viewer-phone-help")


def test_a_user_of_another_facility_is_refused(page_factory, live_server, outsider, ct_study):
    page = page_factory(1000, 700)
    log_in(page, live_server.url, outsider.username)
    response = page.goto(f"{live_server.url}/viewer/studies/{ct_study.study_instance_uid}/")
    assert response.status == 403
    assert "another facility" in page.inner_text("body")


def touch(cdp, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send(
        "Input.dispatchTouchEvent",
        {
            "type": kind,
            "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)],
        },
    )


def test_on_a_tablet_one_finger_sets_the_window_and_two_fingers_zoom(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1024, 768, touch=True)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    cdp = page.context.new_cdp_session(page)
    box = page.locator("[data-testid=viewport-0]").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = viewport_state(page)["voi"]
    touch(cdp, "touchStart", [(x, y)])
    for step in range(1, 11):
        touch(cdp, "touchMove", [(x + 8 * step, y + 5 * step)])
    touch(cdp, "touchEnd", [])
    wait_for(page, f"document.querySelector('.vp').dataset.voi !== '{before}'")

    zoom = "window.radpacsViewer.viewport(0).getZoom()"
    initial = page.evaluate(zoom)
    touch(cdp, "touchStart", [(x - 40, y), (x + 40, y)])
    for step in range(1, 11):
        touch(cdp, "touchMove", [(x - 40 - 10 * step, y), (x + 40 + 10 * step, y)])
    touch(cdp, "touchEnd", [])
    wait_for(page, f"{zoom} > {initial * 1.2}")
    screenshot(page, "viewer-tablet-pinch")


def test_stacks_draw_with_webgl_when_asked_and_measure_the_same(
    page_factory, live_server, radiologist, ct_study
):
    """Headless chromium's WebGL is software, so stacks default to a canvas there; a
    reading workstation's GPU draws them with WebGL: that path works too."""
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    page.goto(f"{live_server.url}/viewer/studies/{ct_study.study_instance_uid}/?render=webgl")
    wait_for(page, "document.getElementById('viewer-app').dataset.state === 'ready'")
    assert page.evaluate("document.getElementById('viewer-app').dataset.renderer") == "webgl"
    width, height = draw_length(page, 200)
    expected = 200 * SIZE / min(width, height) * PIXEL_SPACING_MM
    shown = [t for t in measurement_texts(page) if t.endswith("mm")]
    assert math.isclose(float(shown[0].split()[0]), expected, rel_tol=0.03), (shown, expected)
    page.keyboard.press("2")
    wait_for(page, "document.querySelector('.vp').dataset.voi === 'W 1500 L -600'")
    screenshot(page, "viewer-webgl-stack")
    assert page.console_errors == []

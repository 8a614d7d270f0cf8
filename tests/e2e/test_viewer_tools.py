"""The viewer's tools in a real browser: ROI statistics in HU, view operations, the stack
slider, layouts and drag and drop, compressed and multi-frame images decoded in the
browser, and a browser without WebGL.

Same machinery as test_viewer.py: headless Debian chromium against the live server; state
read from the viewport frames' data attributes and from `window.radpacsViewer`.
"""

import io
import time
from collections.abc import Iterator

import numpy
import pydicom
import pytest
from django.db import connections
from playwright.sync_api import Browser, Page, sync_playwright
from pydicom.data import get_testdata_file

from pacs.dicom import synthetic
from pacs.models import Annotation, Study
from pacs.services import ingest, study_refresh
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, NEEDS_POSTGRESQL, screenshot
from tests.e2e.test_layout import log_in
from tests.e2e.test_viewer import (
    SIZE,
    SLICES,
    ct_study,
    image_files,
    measurement_texts,
    open_viewer,
    viewport_state,
    wait_for,
)

__all__ = ["ct_study", "image_files"]  # fixtures shared with test_viewer.py, used by name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), NEEDS_POSTGRESQL]

# Where the synthetic phantom (pacs/dicom/synthetic.py::phantom) puts its organs in a
# SIZE x SIZE slice, as image (column, row) indices. The left lung is on the image's right
# (columns grow towards the patient's left): an ellipse centred at column 0.68 * SIZE, row
# 0.48 * SIZE, half-axes ~0.13 * SIZE across and 0.2 * SIZE down. The spine is a disc of
# radius 0.05 * SIZE centred at column 0.5 * SIZE, row 0.7 * SIZE.
LEFT_LUNG_BOX = ((0.64 * SIZE, 0.42 * SIZE), (0.72 * SIZE, 0.54 * SIZE))
SPINE_CENTRE = (0.5 * SIZE, 0.7 * SIZE)
SPINE_ELLIPSE_RADIUS = 0.02 * SIZE

STATUS = "document.querySelector('.vw-status').textContent"
NOT_LOADED = "could not be loaded"

# pydicom's own test files, one per codec the browser has to decode.
CODEC_SAMPLES = [
    ("MR_small_jp2klossless.dcm", "JPEG 2000 lossless"),
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS lossless"),
    ("MR_small_RLE.dcm", "RLE lossless"),
    ("SC_rgb_jpeg_dcmtk.dcm", "JPEG baseline YBR colour"),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEG lossless RGB colour"),
    ("SC_rgb_rle.dcm", "RLE RGB colour"),
]
# The colour samples are ten horizontal bands, 10 rows each, the same colour across.
COLOUR_BANDS = [
    (255, 0, 0),
    (255, 128, 128),
    (0, 255, 0),
    (128, 255, 128),
    (0, 0, 255),
    (128, 128, 255),
    (0, 0, 0),
    (64, 64, 64),
    (192, 192, 192),
    (255, 255, 255),
]
US_CINE = "color3d_jpeg_baseline.dcm"  # pydicom-data: 120 frames of 640x480 JPEG baseline
US_FRAMES = 120


# ---- helpers ---------------------------------------------------------------------------


def image_point_on_page(page: Page, column: float, row: float, index: int = 0) -> tuple:
    """Page coordinates of an image pixel (column, row), as the viewport maps it now."""
    return tuple(
        page.evaluate(
            """([index, column, row]) => {
                const viewport = window.radpacsViewer.viewport(index);
                const world = viewport.getImageData().imageData.indexToWorld([column, row, 0]);
                const [x, y] = viewport.worldToCanvas(world);
                const box = viewport.canvas.getBoundingClientRect();
                return [box.left + x, box.top + y];
            }""",
            [index, column, row],
        )
    )


def canvas_colours(page: Page, points: list[tuple[float, float]], index: int = 0) -> list:
    """The RGB the viewport's canvas shows at image pixels (column, row)."""
    return page.evaluate(
        """([index, points]) => {
            const viewport = window.radpacsViewer.viewport(index);
            const { canvas } = viewport;
            const context = canvas.getContext('2d');
            const ratio = canvas.width / canvas.clientWidth;
            const { imageData } = viewport.getImageData();
            return points.map(([column, row]) => {
                const [x, y] = viewport.worldToCanvas(imageData.indexToWorld([column, row, 0]));
                const at = [Math.floor(x * ratio), Math.floor(y * ratio)];
                return [...context.getImageData(...at, 1, 1).data.slice(0, 3)];
            });
        }""",
        [index, points],
    )


def distinct_canvas_colours(page: Page, index: int = 0) -> int:
    """How many different colours a 32x32 grid over the viewport's canvas shows."""
    return page.evaluate(
        """(index) => {
            const { canvas } = window.radpacsViewer.viewport(index);
            const { width, height } = canvas;
            const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
            const seen = new Set();
            for (let y = 0; y < height; y += Math.max(1, Math.floor(height / 32))) {
                for (let x = 0; x < width; x += Math.max(1, Math.floor(width / 32))) {
                    const i = 4 * (y * width + x);
                    seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
                }
            }
            return seen.size;
        }""",
        index,
    )


def drag(page: Page, start: tuple, end: tuple, button: str = "left") -> None:
    page.mouse.move(*start)
    page.mouse.down(button=button)
    middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    page.mouse.move(*middle, steps=4)
    page.mouse.move(*end, steps=4)
    page.mouse.up(button=button)


def label_lines(page: Page) -> list[str]:
    """Each line of the measurement labels: Cornerstone writes a <tspan> per line, so
    measurement_texts (one string per <text>) runs them together."""
    return page.evaluate("[...document.querySelectorAll('svg text tspan')].map(t => t.textContent)")


def overlay(page: Page, corner: str, index: int = 0) -> str:
    return page.locator(".vp").nth(index).locator(f".overlay-{corner}").inner_text()


def frame(index: int) -> str:
    return f"document.querySelectorAll('.vp')[{index}]"


def wait_until_shown(page: Page, index: int, series_uid: str) -> None:
    """The viewport draws an image of the series, and has loaded all of it."""
    wait_for(
        page,
        f"(window.radpacsViewer.viewport({index}).getCurrentImageId() || '')"
        f".includes('/series/{series_uid}/')"
        f" && {frame(index)}.dataset.seriesUid === '{series_uid}'"
        f" && {frame(index)}.dataset.loaded === {frame(index)}.dataset.total",
    )


def view_state(page: Page) -> dict:
    return page.evaluate(
        """(() => {
            const viewport = window.radpacsViewer.viewport(0);
            const camera = viewport.getCamera();
            return {
                invert: viewport.getProperties().invert,
                flipHorizontal: camera.flipHorizontal,
                flipVertical: camera.flipVertical,
                rotation: viewport.getViewPresentation().rotation,
            };
        })()"""
    )


def canvas_fingerprint(page: Page) -> list:
    """A coarse picture of the first viewport's canvas: enough to tell a flip or a turn."""
    return page.evaluate(
        """(() => {
            const { canvas } = window.radpacsViewer.viewport(0);
            const { width, height } = canvas;
            const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
            const samples = [];
            for (let y = 1; y < 16; y += 1) {
                for (let x = 1; x < 16; x += 1) {
                    const row = Math.floor((y * height) / 16);
                    const i = 4 * (row * width + Math.floor((x * width) / 16));
                    samples.push(data[i], data[i + 1], data[i + 2]);
                }
            }
            return samples;
        })()"""
    )


def redrawn(page: Page, before: list, timeout: float = 3.0) -> bool:
    """Whether the first viewport's canvas comes to differ from `before` (Cornerstone
    draws on the next animation frame)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if canvas_fingerprint(page) != before:
            return True
        time.sleep(0.05)
    return False


def ct_series(study: Study, *, number: int, slices: int, description: str) -> str:
    """Another series of `study` (the ct_study fixture's patient), returning its UID."""
    spec = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="P1"),
        study_uid=study.study_instance_uid,
        study_date="20260110",
    )
    series_uid = synthetic.new_uid()
    for instance in range(1, slices + 1):
        data = synthetic.ct_instance(
            spec,
            series_uid=series_uid,
            series_number=number,
            instance_number=instance,
            rows=SIZE,
            columns=SIZE,
            series_description=description,
        )
        ingest(data, facility=study.facility, door="dimse")
    study_refresh(study.pk)
    return series_uid


def relabelled(name: str, *, study_uid: str, series_uid: str, number: int, description: str):
    """A pydicom sample as an instance of our patient's study; pixel data untouched."""
    dataset = pydicom.dcmread(get_testdata_file(name))
    sop_uid = synthetic.new_uid()
    dataset.SOPInstanceUID = sop_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesNumber = number
    dataset.SeriesDescription = description
    dataset.PatientID = "P7"
    dataset.PatientName = "Sample^Codec"
    dataset.StudyDate = "20260201"
    dataset.StudyDescription = "CODEC SAMPLES"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def archived_samples(facility, samples: list[tuple[str, str]]) -> tuple[Study, list[str]]:
    """One study of one patient, a series per sample file: ingested like any push."""
    study_uid = synthetic.new_uid()
    series_uids = []
    for number, (name, description) in enumerate(samples, start=1):
        series_uid = synthetic.new_uid()
        data = relabelled(
            name, study_uid=study_uid, series_uid=series_uid, number=number, description=description
        )
        ingest(data, facility=facility, door="dimse")
        series_uids.append(series_uid)
    study = Study.objects.get(facility=facility, study_instance_uid=study_uid)
    study_refresh(study.pk)
    study.refresh_from_db()
    return study, series_uids


@pytest.fixture
def browser_without_webgl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """Chromium as conftest's `browser`, with WebGL (and every 3D API) switched off."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, "--disable-webgl", "--disable-3d-apis"],
        )
        yield chromium
        chromium.close()
        connections.close_all()


# ---- measurements ----------------------------------------------------------------------


def test_a_rectangle_in_the_lung_reads_minus_850_hu_with_no_spread(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_for(page, f"{frame(0)}.dataset.loaded === '{SLICES}'")
    page.keyboard.press("r")
    (left, top), (right, bottom) = LEFT_LUNG_BOX
    drag(page, image_point_on_page(page, left, top), image_point_on_page(page, right, bottom))
    wait_for(page, f"{STATUS} === 'Annotation saved'")  # the statistics are final then
    lines = label_lines(page)
    screenshot(page, "viewer-rectangle-roi-lung")
    assert "Mean: -850 HU" in lines, (lines, measurement_texts(page))
    assert "Std Dev: 0 HU" in lines, lines
    assert "Min: -850 HU" in lines and "Max: -850 HU" in lines, lines
    assert Annotation.objects.get().tool_name == "RectangleROI"
    assert page.console_errors == []


def test_an_ellipse_in_the_spine_reads_700_hu_with_no_spread(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_for(page, f"{frame(0)}.dataset.loaded === '{SLICES}'")
    page.keyboard.press("e")
    column, row = SPINE_CENTRE
    # The ellipse tool draws from its centre out to a corner of its bounding box.
    drag(
        page,
        image_point_on_page(page, column, row),
        image_point_on_page(page, column + SPINE_ELLIPSE_RADIUS, row + SPINE_ELLIPSE_RADIUS),
    )
    wait_for(page, f"{STATUS} === 'Annotation saved'")
    lines = label_lines(page)
    screenshot(page, "viewer-ellipse-roi-spine")
    assert "Mean: 700 HU" in lines, (lines, measurement_texts(page))
    assert "Std Dev: 0 HU" in lines, lines
    assert Annotation.objects.get().tool_name == "EllipticalROI"
    assert page.console_errors == []


# ---- view operations -------------------------------------------------------------------


def test_invert_flip_and_rotate_change_the_image_and_say_so(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_for(page, f"{frame(0)}.dataset.loaded === '{SLICES}'")
    assert view_state(page) == {
        "invert": False,
        "flipHorizontal": False,
        "flipVertical": False,
        "rotation": 0,
    }
    assert "Inverted" not in overlay(page, "br")

    steps = [
        ("i", {"invert": True}),
        ("h", {"flipHorizontal": True}),
        ("v", {"flipVertical": True}),
        (".", {"rotation": 90}),
    ]
    expected = view_state(page)
    for key, change in steps:
        before = canvas_fingerprint(page)
        page.keyboard.press(key)
        expected = {**expected, **change}
        assert view_state(page) == expected, key
        assert redrawn(page, before), f"{key!r} changes the picture"
    wait_for(page, "/Inverted/.test(document.querySelector('.vp .overlay-br').textContent)")
    screenshot(page, "viewer-inverted-flipped-rotated")


def test_reset_undoes_invert_flips_and_rotation(page_factory, live_server, radiologist, ct_study):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_for(page, f"{frame(0)}.dataset.loaded === '{SLICES}'")
    initial = view_state(page)
    for key in ["i", "h", "v", "."]:
        page.keyboard.press(key)
    wait_for(page, "/Inverted/.test(document.querySelector('.vp .overlay-br').textContent)")

    page.keyboard.press("0")
    wait_for(page, "!/Inverted/.test(document.querySelector('.vp .overlay-br').textContent)")
    assert view_state(page) == initial
    reset = canvas_fingerprint(page)
    page.keyboard.press("h")
    assert view_state(page)["flipHorizontal"] is True
    assert redrawn(page, reset), "H flips the image again after a reset"


def test_zooming_shows_in_the_overlay_and_reset_brings_back_1x(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_for(page, f"{frame(0)}.dataset.loaded === '{SLICES}'")
    assert "Zoom 1.00x" in overlay(page, "br").splitlines()
    box = page.locator("[data-testid=viewport-0]").bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    zoom = "window.radpacsViewer.viewport(0).getZoom()"
    fitted = page.evaluate(zoom)

    drag(page, centre, (centre[0], centre[1] - 150), button="right")  # right button: zoom
    wait_for(page, f"{zoom} !== {fitted}")
    wait_for(page, "!/Zoom 1.00x/.test(document.querySelector('.vp .overlay-br').textContent)")
    shown = [line for line in overlay(page, "br").splitlines() if line.startswith("Zoom")]
    relative = page.evaluate(zoom) / fitted
    assert shown == [f"Zoom {relative:.2f}x"], (shown, relative)
    screenshot(page, "viewer-zoomed")

    page.keyboard.press("z")  # the zoom tool on the left button too
    zoomed = page.evaluate(zoom)
    drag(page, centre, (centre[0], centre[1] + 100))
    wait_for(page, f"{zoom} !== {zoomed}")
    page.keyboard.press("0")
    wait_for(page, "/Zoom 1.00x/.test(document.querySelector('.vp .overlay-br').textContent)")
    assert page.evaluate(zoom) == pytest.approx(fitted)


# ---- stack slider and layouts ----------------------------------------------------------


def test_the_stack_slider_moves_to_the_image_it_is_set_to(
    page_factory, live_server, radiologist, ct_study
):
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    slider = page.locator(".vp-slider").first
    assert slider.get_attribute("max") == str(SLICES - 1)
    slider.fill("15")
    wait_for(page, f"{frame(0)}.dataset.imageIndex === '15'")
    assert "Im 16/30" in overlay(page, "bl")
    assert page.evaluate("window.radpacsViewer.viewport(0).getCurrentImageIdIndex()") == 15

    page.locator("[data-testid=viewport-0]").click(position={"x": 50, "y": 50})
    page.keyboard.press("End")
    wait_for(page, f"{frame(0)}.dataset.imageIndex === '{SLICES - 1}'")
    assert slider.input_value() == str(SLICES - 1), "the slider follows the stack"


def test_a_2x2_layout_takes_series_by_drag_and_drop_and_by_click(
    page_factory, live_server, radiologist, ct_study
):
    thin = ct_study.series.get().series_instance_uid
    thick = ct_series(ct_study, number=2, slices=6, description="Axial 5mm")
    page = page_factory(1280, 800)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    wait_until_shown(page, 0, thin)
    items = page.locator(".series-list .series-item")
    assert items.count() == 2
    frames = page.locator(".vp")
    assert [frames.nth(i).is_visible() for i in range(4)] == [True, False, False, False]

    page.locator("[data-layout='2x2']").click()
    assert page.locator(".vw-grid").get_attribute("data-layout") == "2x2"
    assert [frames.nth(i).is_visible() for i in range(4)] == [True] * 4

    items.nth(1).drag_to(page.locator("[data-testid=viewport-3]"))
    wait_until_shown(page, 3, thick)
    assert viewport_state(page, 3)["total"] == "6"
    assert "Se 2: Axial 5mm" in overlay(page, "bl", 3)

    page.locator("[data-testid=viewport-2]").click(position={"x": 30, "y": 30})
    assert "active" in (frames.nth(2).get_attribute("class") or "")
    items.nth(0).click()
    wait_until_shown(page, 2, thin)
    assert "current" in (items.nth(0).get_attribute("class") or "")
    assert viewport_state(page, 0)["seriesUid"] == thin, "the others keep their series"
    assert viewport_state(page, 3)["seriesUid"] == thick
    screenshot(page, "viewer-2x2-series")

    page.locator("[data-layout='1x1']").click()
    assert [frames.nth(i).is_visible() for i in range(4)] == [True, False, False, False]
    assert viewport_state(page, 0)["seriesUid"] == thin
    assert page.console_errors == []


# ---- images the browser decodes --------------------------------------------------------


def test_compressed_series_are_decoded_and_drawn_in_the_browser(
    page_factory, live_server, radiologist, facility_a, image_files
):
    study, series_uids = archived_samples(facility_a, CODEC_SAMPLES)
    reference = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm")).pixel_array
    grid = [(column, row) for row in range(4, 64, 8) for column in range(4, 64, 8)]
    bands = [(50, 5 + 10 * band) for band in range(10)]
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, study.study_instance_uid)
    items = page.locator(".series-list .series-item")
    assert items.count() == len(CODEC_SAMPLES)

    problems = []
    mr_pictures = {}
    for number, ((name, description), series_uid) in enumerate(
        zip(CODEC_SAMPLES, series_uids, strict=True), start=1
    ):
        items.nth(number - 1).click()
        wait_until_shown(page, 0, series_uid)
        wait_for(page, f"/Se {number}: /.test({frame(0)}.querySelector('.overlay-bl').textContent)")
        screenshot(page, f"viewer-codec-{name.removesuffix('.dcm')}")
        status = page.evaluate(STATUS)
        if NOT_LOADED in status or "not loaded" in status.lower():
            problems.append((description, status))
        if distinct_canvas_colours(page) < 8:
            problems.append((description, "blank canvas"))
        if name.startswith("SC_rgb"):
            shown = canvas_colours(page, bands)
            wrong = [
                (want, got)
                for want, got in zip(COLOUR_BANDS, shown, strict=True)
                if max(abs(a - b) for a, b in zip(want, got, strict=True)) > 12
            ]
            if wrong:
                problems.append((description, f"colours (expected, shown): {wrong}"))
        else:
            # The same MR slice in every lossless codec: the same picture, whose greys
            # follow the pixel values.
            mr_pictures[description] = canvas_fingerprint(page)
            greys = [colour[0] for colour in canvas_colours(page, grid)]
            values = [int(reference[row, column]) for column, row in grid]
            correlation = numpy.corrcoef(values, greys)[0, 1]
            if not correlation > 0.9 or max(greys) - min(greys) < 100:
                problems.append((description, f"greys {greys} for values {values}"))
    if len({str(picture) for picture in mr_pictures.values()}) != 1:
        problems.append(("lossless MR", f"pictures differ between {list(mr_pictures)}"))
    assert problems == []
    assert page.console_errors == []


def test_a_colour_ultrasound_cine_of_120_frames_plays_and_stops(
    page_factory, live_server, radiologist, facility_a, image_files
):
    study, [series_uid] = archived_samples(facility_a, [(US_CINE, "Cardiac cine")])
    page = page_factory(1100, 700)
    log_in(page, live_server.url, radiologist.username)
    open_viewer(page, live_server.url, study.study_instance_uid)
    wait_until_shown(page, 0, series_uid)
    state = viewport_state(page)
    assert (state["total"], state["imageIndex"]) == (str(US_FRAMES), "0")
    assert f"Im 1/{US_FRAMES} · frame 1/{US_FRAMES}" in overlay(page, "bl")
    assert page.locator("[data-control=fps]").input_value() == "30", "from Frame Time 33.3 ms"
    assert distinct_canvas_colours(page) > 8
    screenshot(page, "viewer-us-cine")

    page.keyboard.press(" ")
    assert page.locator("[data-action=cine]").get_attribute("aria-pressed") == "true"
    wait_for(page, f"Number({frame(0)}.dataset.imageIndex) >= 5")
    assert viewport_state(page)["cine"] == "playing"
    index = int(viewport_state(page)["imageIndex"])
    assert f"frame {index + 1}/{US_FRAMES}" in overlay(page, "bl")
    page.keyboard.press(" ")
    assert page.locator("[data-action=cine]").get_attribute("aria-pressed") == "false"
    assert "cine" not in viewport_state(page)
    current = "window.radpacsViewer.viewport(0).getCurrentImageIdIndex()"
    time.sleep(0.2)  # a frame already on its way when Space was pressed may still land
    stopped = page.evaluate(current)
    time.sleep(0.5)
    assert page.evaluate(current) == stopped
    assert viewport_state(page)["imageIndex"] == str(stopped)
    assert page.console_errors == []


# ---- without WebGL ---------------------------------------------------------------------


def test_without_webgl_the_page_says_so_and_keeps_the_stack(
    browser_without_webgl, live_server, radiologist, ct_study
):
    context = browser_without_webgl.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    errors = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.set_default_timeout(10_000)
    log_in(page, live_server.url, radiologist.username)
    assert page.evaluate("document.createElement('canvas').getContext('webgl2')") is None

    open_viewer(page, live_server.url, ct_study.study_instance_uid)
    banner = page.locator(".vw-banner")
    assert banner.is_visible()
    assert "WebGL" in banner.inner_text()
    assert page.locator("[data-action=mpr]").is_disabled()
    assert page.locator("#viewer-app").get_attribute("data-renderer") == "cpu"
    wait_for(page, f"{frame(0)}.dataset.loaded === '{SLICES}'")
    assert distinct_canvas_colours(page) > 8

    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    wait_for(page, f"{frame(0)}.dataset.imageIndex === '2'")
    page.keyboard.press("m")
    assert page.locator("#viewer-app").get_attribute("data-mode") is None, "no MPR"
    screenshot(page, "viewer-without-webgl")
    assert errors == []
    context.close()

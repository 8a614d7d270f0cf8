"""Rendering frames to pictures: every shipped transfer syntax decodes."""

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from pacs.dicom.render import RenderError, Window, render, to_8bit

# Rendering reads bytes handed to it, never the storage: one backend is enough.
pytestmark = pytest.mark.parametrize("image_store", ["disk"], indirect=True)


def shipped(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("CT_small.dcm", "L"),
        ("MR_small_bigendian.dcm", "L"),
        ("MR_small_RLE.dcm", "L"),
        ("MR_small_jpeg_ls_lossless.dcm", "L"),
        ("MR_small_jp2klossless.dcm", "L"),
        ("JPEG2000.dcm", "L"),
        ("JPGExtended.dcm", "L"),
        ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),
        ("SC_rgb_rle_2frame.dcm", "RGB"),
        ("examples_palette.dcm", "RGB"),
        ("image_dfl.dcm", "L"),
    ],
)
def test_every_shipped_syntax_renders_to_a_png(name, mode):
    picture = Image.open(io.BytesIO(render(shipped(name), size=64)))
    assert picture.mode == mode
    assert max(picture.size) <= 64


def test_a_window_changes_the_picture():
    data = shipped("CT_small.dcm")
    narrow = render(data, window=(40, 80))
    wide = render(data, window=(40, 4000))
    assert narrow != wide


def test_a_frame_out_of_range_is_an_error():
    with pytest.raises(RenderError, match="frame 3"):
        render(shipped("SC_rgb_rle_2frame.dcm"), frame=2)


def test_a_file_without_pixels_is_an_error():
    with pytest.raises(RenderError, match="no pixel data"):
        render(shipped("rtplan.dcm"))


@pytest.mark.parametrize("function", ["linear", "linear-exact", "sigmoid"])
def test_the_window_functions_put_the_center_at_mid_grey(function):
    dataset = Dataset()
    dataset.PhotometricInterpretation = "MONOCHROME2"
    values = np.array([[-1000, 40, 1000]], dtype=np.int16)
    shown = to_8bit(dataset, values, Window(40, 400, function))
    assert shown[0, 0] < 10 and 125 <= shown[0, 1] <= 130 and shown[0, 2] > 245


def test_a_viewport_scales_up_or_down_keeping_the_aspect():
    data = shipped("CT_small.dcm")  # 128 x 128
    assert Image.open(io.BytesIO(render(data, viewport=(256, 100)))).size == (100, 100)
    assert Image.open(io.BytesIO(render(data, viewport=(64, 300)))).size == (64, 64)


def _native_grayscale_files() -> list[str]:
    """pydicom's test files, its own and pydicom-data's (globbed on disk: asking pydicom
    for them all tries downloads), whose frames are native grayscale."""
    from pathlib import Path

    import data_store
    import pydicom

    from pacs.dicom.pixeldata import PixelDataError, open_pixels

    folders = [Path(pydicom.__file__).parent / "data", Path(data_store.__file__).parent / "data"]
    names = []
    for path in sorted(path for folder in folders for path in folder.rglob("*.dcm")):
        try:
            with open(path, "rb") as handle:
                pixels = open_pixels(handle)
                photometric = pixels.photometric_interpretation
                if (
                    not pixels.encapsulated
                    and pixels.whole is None
                    and photometric in ("MONOCHROME1", "MONOCHROME2")
                    and pixels.dataset.get("BitsAllocated") in (8, 16)
                ):
                    names.append(path)
        except (PixelDataError, OSError):
            continue
    return names


@pytest.mark.parametrize(
    "window",
    [None, Window(40, 400), Window(-600, 1500, "linear-exact"), Window(300, 90, "sigmoid"), (7, 1)],
)
def test_frames_shown_through_a_display_table_match_the_windowing_of_their_values(window):
    """The lookup-table path gives every pixel the value the float pipeline gives it, on
    every native grayscale file pydicom ships (and tables are shared between them)."""
    from pacs.dicom.pixeldata import PixelDataError, open_pixels
    from pacs.dicom.render import _display_table, display_frame

    files = _native_grayscale_files()
    assert len(files) >= 10
    tabled = 0
    for path in files:
        with open(path, "rb") as handle:
            pixels = open_pixels(handle)
            for frame in {0, pixels.number_of_frames - 1}:
                try:
                    expected = to_8bit(pixels.dataset, pixels.frame_array(frame), window)
                except PixelDataError:  # e.g. cut short: refused the same way
                    with pytest.raises(PixelDataError):
                        display_frame(pixels, frame, window)
                    continue
                shown = display_frame(pixels, frame, window)
                np.testing.assert_array_equal(shown, expected, str(path))
            shown_window = Window(*window) if window else _file_window_of(pixels)
            tabled += _display_table(pixels, shown_window) is not None
    assert tabled >= 5


def _file_window_of(pixels):
    from pacs.dicom.render import _file_window

    return _file_window(pixels.dataset)


@pytest.mark.parametrize(
    ("bits_stored", "signed", "photometric", "slope", "intercept"),
    [
        (12, 1, "MONOCHROME2", 1, -1024),
        (12, 0, "MONOCHROME1", 0.5, 10),
        (16, 1, "MONOCHROME2", 2, 0),
        (10, 0, "MONOCHROME2", 1, 0),
    ],
)
def test_unused_high_bits_and_sign_are_read_as_pydicom_reads_them(
    bits_stored, signed, photometric, slope, intercept
):
    """Stored values with garbage above Bits Stored (PS3.5 8.1.1 says to ignore it)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from pacs.dicom.pixeldata import open_pixels
    from pacs.dicom.render import display_frame

    rng = np.random.default_rng(bits_stored * 10 + signed)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.SOPInstanceUID = "1.2.3.4"
    dataset.Rows, dataset.Columns = 64, 48
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, bits_stored, bits_stored - 1
    dataset.PixelRepresentation = signed
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    dataset.WindowCenter, dataset.WindowWidth = 100, 700
    dataset.PixelData = rng.integers(0, 1 << 16, 64 * 48, dtype="<u2").tobytes()
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    pixels = open_pixels(out.getvalue())
    expected = to_8bit(pixels.dataset, pixels.frame_array(0), None)
    np.testing.assert_array_equal(display_frame(pixels), expected)

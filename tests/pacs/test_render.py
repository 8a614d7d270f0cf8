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

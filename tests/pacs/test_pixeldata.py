"""Frames of stored files, read and decoded one at a time."""

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import get_frame

from pacs.dicom.pixeldata import PixelDataError, open_pixels

# Reading frames works on bytes handed to it, never the storage: one backend is enough.
pytestmark = pytest.mark.parametrize("image_store", ["disk"], indirect=True)


def shipped(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # explicit VR little endian
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "image_dfl.dcm",  # deflated
        "emri_small.dcm",  # 10 native frames
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",  # YBR_FULL: stays YBR_FULL
        "SC_rgb_rle_2frame.dcm",
        "examples_ybr_color.dcm",  # 30 frames of YBR_FULL_422 JPEG: become RGB
    ],
)
def test_the_last_frame_decodes_alone_to_little_endian_native_bytes(name):
    pixel_file = open_pixels(shipped(name))
    last = pixel_file.number_of_frames - 1
    expected = pydicom.pixels.pixel_array(
        pydicom.dcmread(get_testdata_file(name)),
        index=last,
        as_rgb=pixel_file.photometric_interpretation == "YBR_FULL_422",
    )
    assert (
        pixel_file.native_frame(last) == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    )


def test_stored_frames_are_the_original_bitstreams_or_native_slices():
    dataset = pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm"))
    compressed = open_pixels(shipped("examples_ybr_color.dcm"))
    assert compressed.stored_frame(29) == get_frame(dataset.PixelData, 29, number_of_frames=30)
    assert compressed.stored_syntax == dataset.file_meta.TransferSyntaxUID
    native = open_pixels(shipped("emri_small.dcm"))
    frame = native.stored_frame(9)
    assert frame == pydicom.dcmread(get_testdata_file("emri_small.dcm")).PixelData[-len(frame) :]


def test_files_without_pixels_and_frames_out_of_range_are_refused():
    with pytest.raises(PixelDataError, match="no pixel data"):
        open_pixels(shipped("rtplan.dcm"))
    with pytest.raises(PixelDataError, match=r"frame 11 out of 1\.\.10"):
        open_pixels(shipped("emri_small.dcm")).native_frame(10)


def test_a_bit_packed_segmentation_is_packed_again():
    pixel_file = open_pixels(shipped("liver.dcm"))
    expected = pydicom.dcmread(get_testdata_file("liver.dcm")).pixel_array
    assert np.array_equal(pixel_file.frame_array(1), expected[1])
    assert pixel_file.all_native_frames() == pydicom.pixels.pack_bits(expected)

"""Reading WADO-RS pixel requests (PS3.18 8.3.5, 8.7.3, 8.7.4): no database, no server."""

import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from pacs.dicom.render import Window
from pacs.dicomweb import pixels

OCTET = pixels.OCTET_STREAM
DECODED = pixels.Delivery(OCTET, decoded=True)


@pytest.mark.parametrize(
    ("accept", "stored", "delivery"),
    [
        ("", JPEGLSLossless, DECODED),
        ("*/*", JPEGLSLossless, DECODED),
        ('multipart/related; type="*/*"', JPEGLSLossless, pixels.Delivery("image/jls", False)),
        ('multipart/related; type="*/*"', ExplicitVRLittleEndian, DECODED),
        (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            JPEGLSLossless,
            pixels.Delivery(OCTET, decoded=False),
        ),
        ('multipart/related; type="application/octet-stream"', JPEGLSLossless, DECODED),
        (
            f'multipart/related; type="application/octet-stream"; '
            f'transfer-syntax="{ExplicitVRLittleEndian}"',
            RLELossless,
            DECODED,
        ),
        (
            'multipart/related; type="image/jpeg"',
            JPEGBaseline8Bit,
            pixels.Delivery("image/jpeg", False),
        ),
        (
            'multipart/related; type="image/x-dicom-rle"',
            RLELossless,
            pixels.Delivery("image/x-dicom-rle", False),
        ),
        (
            'multipart/related; type="image/jpeg", '
            'multipart/related; type="application/octet-stream"',
            JPEGLSLossless,
            DECODED,
        ),
        (
            'multipart/related; type="image/jpeg"; q=0.5, multipart/related; type="image/jls"',
            JPEGLSLossless,
            pixels.Delivery("image/jls", False),
        ),
    ],
)
def test_frames_go_out_decoded_or_as_stored_as_the_accept_header_asks(accept, stored, delivery):
    assert pixels.frame_delivery(accept, stored) == delivery


@pytest.mark.parametrize(
    ("accept", "stored"),
    [
        ('multipart/related; type="image/jpeg"', ExplicitVRLittleEndian),
        ('multipart/related; type="image/jls"', JPEGBaseline8Bit),
        (f'multipart/related; type="*/*"; transfer-syntax={RLELossless}', JPEGLSLossless),
        ("application/dicom", JPEGLSLossless),
    ],
)
def test_frames_nobody_can_be_given_are_a_406_that_says_what_is_served(accept, stored):
    with pytest.raises(pixels.PixelRequestError, match="application/octet-stream") as refused:
        pixels.frame_delivery(accept, stored)
    assert refused.value.status == 406


def test_parts_say_which_transfer_syntax_their_bytes_are_in():
    assert DECODED.part_syntax(JPEGLSLossless) == ExplicitVRLittleEndian
    assert pixels.Delivery(OCTET, False).part_syntax(JPEGLSLossless) == JPEGLSLossless


def test_frame_lists_are_one_based_and_keep_their_order():
    assert pixels.frame_numbers("3,1,2") == [3, 1, 2]
    for bad in ("0", "", "1,,2", "-1", "1.5", "a"):
        with pytest.raises(pixels.PixelRequestError):
            pixels.frame_numbers(bad)


def test_rendering_parameters_are_read_and_checked():
    options = pixels.render_options(
        {"window": "-600,1500,SIGMOID", "viewport": "256,128", "quality": "75", "other": "x"}
    )
    assert options == pixels.RenderOptions(Window(-600, 1500, "sigmoid"), (256, 128), 75)
    assert pixels.render_options({"window": "40,400"}).window == Window(40, 400, "linear")
    assert pixels.render_options({"window": "40,400"}, thumbnail=True).window is None
    for bad in ({"window": "40,0"}, {"window": "nan,400"}, {"viewport": "5000,10"}):
        with pytest.raises(pixels.PixelRequestError):
            pixels.render_options(bad)


def test_rendered_media_types_default_to_jpeg():
    assert pixels.rendered_type("") == "image/jpeg"
    assert pixels.rendered_type("image/*") == "image/jpeg"
    assert pixels.rendered_type("image/webp, image/png;q=0.9") == "image/png"
    assert pixels.rendered_type("*/*", default="image/png") == "image/png"

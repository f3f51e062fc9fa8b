"""Decoding real files of every common kind, and encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.io.headers import SourceLimits
from pipeline.io.imageio import ImageError, decode, encode

LIMITS = SourceLimits(64 * 1024 * 1024, 256 * 1024 * 1024)


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def coffee(photos):
    return Image.open(photos["coffee"]).convert("RGB")  # 600 x 400


def test_exif_orientation_applied(coffee):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise
    d = decode(save(coffee, "JPEG", exif=exif, quality=95), LIMITS)
    assert d.rgb.shape == (600, 400, 3)
    plain = decode(save(coffee, "JPEG", quality=95), LIMITS).rgb
    assert np.abs(d.rgb.astype(int) - np.rot90(plain, k=-1).astype(int)).mean() < 1.0


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.array([[0, 256, 32768, 65535]], dtype=np.uint16).repeat(4, 0)
    d = decode(save(Image.fromarray(arr), "PNG"), LIMITS)
    assert d.rgb.shape == (4, 4, 3)
    assert d.rgb[0, :, 0].tolist() == [0, 1, 128, 255]


def test_untagged_cmyk_jpeg_goes_through_the_fallback_profile_not_the_naive_formula(coffee):
    from PIL import ImageCms

    from pipeline.io import color

    data = save(coffee.convert("CMYK"), "JPEG", quality=95)
    d = decode(data, LIMITS)
    assert d.rgb.shape == (400, 600, 3) and d.alpha is None
    assert (
        d.color.space == "cmyk"
        and d.color.description == color.FALLBACK_CMYK_NAME
        and "fallback" in d.color.note
    )
    cmyk = Image.open(io.BytesIO(data))  # as Pillow decodes it (Adobe-inverted JPEGs included)
    want = np.asarray(
        ImageCms.applyTransform(
            cmyk,
            ImageCms.buildTransform(
                ImageCms.ImageCmsProfile(io.BytesIO(color.fallback_cmyk())),
                ImageCms.createProfile("sRGB"),
                "CMYK",
                "RGB",
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            ),
        )
    )
    assert (
        np.abs(d.rgb.astype(int) - want).max() <= 1
    )  # LittleCMS's conversion (sRGB re-read from bytes: +-1)
    naive = np.asarray(cmyk.convert("RGB")).astype(int)
    assert np.abs(d.rgb.astype(int) - naive).mean() > 10  # a press profile, not 255 - (C + K)


def test_palette_with_transparency_keeps_alpha():
    img = Image.new("P", (80, 60), 1)
    img.putpalette([0, 0, 0, 200, 50, 50] + [0] * 762)
    img.paste(0, (0, 0, 20, 60))
    img.info["transparency"] = 0
    d = decode(save(img, "PNG", transparency=0), LIMITS)
    assert d.alpha is not None and d.alpha[:, :20].max() == 0 and d.alpha[:, 20:].min() == 255
    assert tuple(d.rgb[0, 50]) == (200, 50, 50)


def test_opaque_rgba_has_no_alpha(coffee):
    d = decode(save(coffee.convert("RGBA"), "PNG"), LIMITS)
    assert d.alpha is None and np.array_equal(d.rgb, np.asarray(coffee))


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    d = decode(buf.getvalue(), LIMITS)
    assert d.rgb.shape == (30, 40, 3) and d.rgb[0, 0, 0] > 200 and d.rgb[0, 0, 1] < 50


def test_grey_and_wrong_extension_content_decodes(photos):
    d = decode(photos["camera"].read_bytes(), LIMITS)
    assert d.rgb.shape == (512, 512, 3) and (d.rgb[:, :, 0] == d.rgb[:, :, 1]).all()


@pytest.mark.parametrize(
    "mutate,code",
    [
        (lambda b: b[: len(b) // 2], "image_unreadable"),  # truncated body
        (lambda b: b"", "image_unreadable"),  # zero bytes
        (lambda b: b"<html>not an image</html>", "image_unreadable"),
    ],
)
def test_broken_files(coffee, mutate, code):
    with pytest.raises(ImageError) as e:
        decode(mutate(save(coffee, "JPEG", quality=90)), LIMITS)
    assert e.value.code == code and e.value.message


def test_source_limits_checked_before_decoding(coffee):
    data = save(coffee, "PNG")
    with pytest.raises(ImageError) as e:
        decode(data, SourceLimits(100_000, 1 << 30))
    assert e.value.code == "image_too_large" and "600×400" in e.value.message
    with pytest.raises(ImageError) as e:
        decode(data, SourceLimits(1 << 30, 1000))
    assert e.value.code == "image_too_large" and "max_source_bytes" in e.value.message


@pytest.mark.parametrize("fmt,pil", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_formats(coffee, fmt, pil):
    rgb = np.asarray(coffee)
    data = encode(rgb, fmt)
    back = Image.open(io.BytesIO(data))
    assert back.format == pil and back.size == (600, 400)
    if fmt == "png":
        assert np.array_equal(np.asarray(back.convert("RGB")), rgb)
    else:
        assert np.abs(np.asarray(back.convert("RGB")).astype(int) - rgb.astype(int)).mean() < 4


def test_encode_alpha_png():
    rgb = np.full((10, 10, 3), 100, np.uint8)
    alpha = np.full((10, 10), 255, np.uint8)
    alpha[:5] = 0
    back = np.asarray(Image.open(io.BytesIO(encode(rgb, "png", alpha))))
    assert back.shape == (10, 10, 4) and back[0, 0, 3] == 0 and back[9, 9, 3] == 255

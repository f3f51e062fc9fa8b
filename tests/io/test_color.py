"""Colour management of sources: embedded profiles read (or ignored as browsers ignore
them), the fallback CMYK profile, reduced-size JPEG decoding. Real ICC profiles from
Debian's colord-data and ghostscript (installed by .ci/run)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipeline.io import color
from pipeline.io.headers import SourceLimits
from pipeline.io.imageio import decode, resize

ICC_DIR = Path("/usr/share/color/icc")
PROFILES = {
    "adobe": ICC_DIR / "colord/AdobeRGB1998.icc",
    "prophoto": ICC_DIR / "colord/ProPhotoRGB.icc",
    "swapped": ICC_DIR / "colord/SwappedRedAndGreen.icc",
    "gray": ICC_DIR / "ghostscript/default_gray.icc",
    "cmyk": ICC_DIR / "ghostscript/default_cmyk.icc",
}
needs_profiles = pytest.mark.skipif(
    not all(p.exists() for p in PROFILES.values()),
    reason="ICC profiles of Debian's colord-data and ghostscript (.ci/run installs them)",
)
LIMITS = SourceLimits(1 << 30, 1 << 30)


def icc(name: str) -> bytes:
    return PROFILES[name].read_bytes()


def into(rgb: np.ndarray, profile: bytes, mode: str = "RGB") -> Image.Image:
    """An sRGB photo as stored in another space (as a camera or editor exports it)."""
    t = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"),
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        "RGB",
        mode,
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    return ImageCms.applyTransform(Image.fromarray(rgb), t)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    return np.asarray(Image.open(photos["astronaut"]).convert("RGB"))[100:400, 60:460]


@needs_profiles
@pytest.mark.parametrize(
    "name,space,words",
    [
        ("adobe", "rgb", "Adobe RGB"),
        ("prophoto", "rgb", "ProPhoto"),
        ("swapped", "rgb", "Swapped"),
        ("gray", "gray", "Gray"),
    ],
)
def test_embedded_profiles_are_read(photo, name, space, words):
    img = into(photo, icc(name), "L" if space == "gray" else "RGB")
    d = decode(encoded(img, "PNG", icc_profile=icc(name)), LIMITS)
    assert (
        d.color.space == space
        and words.lower() in d.color.description.lower()
        and d.color.note is None
    )
    assert d.color.icc == icc(name)
    assert d.pixels.shape[2] == (
        1 if space == "gray" else 3
    )  # a grey source with a profile stays grey
    assert np.array_equal(
        d.pixels[:, :, 0], np.asarray(img) if space == "gray" else np.asarray(img)[:, :, 0]
    )


def test_untagged_is_srgb(photo):
    d = decode(encoded(Image.fromarray(photo), "PNG"), LIMITS)
    assert (d.color.space, d.color.description, d.color.icc, d.color.note) == (
        "srgb",
        color.UNTAGGED,
        None,
        None,
    )


@needs_profiles
@pytest.mark.parametrize(
    "bad,why",
    [
        (lambda: icc("adobe")[:300], "unreadable|cannot be used"),  # truncated
        (lambda: b"not an icc profile at all" * 40, "unreadable|cannot be used"),  # garbage
        (lambda: icc("cmyk"), "is for CMYK but the image is RGB"),  # wrong colour space
        (lambda: icc("gray"), "is for GRAY but the image is RGB"),
    ],
)
def test_broken_profiles_are_ignored_as_browsers_do(photo, bad, why):
    for fmt in ("PNG", "JPEG", "WEBP"):
        d = decode(encoded(Image.fromarray(photo), fmt, icc_profile=bad()), LIMITS)
        assert (
            d.color.space == "srgb"
            and d.color.icc is None
            and d.color.description == color.UNTAGGED
        )
        assert re.search(why, d.color.note) and "treated as untagged sRGB" in d.color.note


@needs_profiles
def test_plans_per_output_colour_setting():
    adobe = color.SourceColor(icc("adobe"), "rgb", "Adobe RGB")
    gray = color.SourceColor(icc("gray"), "gray", "sGray")
    keep = color.plan(adobe, "RGB", "preserve", "png", "relative")
    assert (
        keep.output.icc == icc("adobe")
        and keep.output.embed == icc("adobe")
        and keep.transform_name == "none"
    )
    conv = color.plan(adobe, "RGB", "srgb", "png", "relative")
    assert (
        conv.output.icc is None
        and conv.output.embed == color.srgb_bytes()
        and conv.transform_name == "to_srgb"
    )
    assert color.plan(gray, "L", "preserve", "jpeg", "relative").output.mode == "L"
    webp = color.plan(
        gray, "L", "preserve", "webp", "relative"
    )  # WebP has no grey mode: sRGB there
    assert (
        webp.output.mode == "RGB"
        and webp.output.embed == color.srgb_bytes()
        and webp.transform_name == "gray_to_srgb"
    )
    untagged = color.SourceColor(None, "srgb", color.UNTAGGED)
    assert (
        color.plan(untagged, "RGB", "preserve", "png", "relative").output.embed is None
    )  # stays untagged
    assert color.plan(untagged, "RGB", "srgb", "png", "relative").output.embed == color.srgb_bytes()


@needs_profiles
def test_the_fallback_cmyk_profile_is_a_press_profile_not_the_naive_formula():
    """LittleCMS opens it; paper is white; its solids and overprints land within a few
    ΔE of a real press profile (Ghostscript's SWOP) where the naive formula is far off."""
    from skimage.color import rgb2lab

    p = ImageCms.ImageCmsProfile(io.BytesIO(color.fallback_cmyk()))
    assert p.profile.xcolor_space == "CMYK" and p.profile.device_class == "prtr"
    assert (
        color.fallback_cmyk.__wrapped__() == color.fallback_cmyk()
    )  # built the same, byte for byte
    patches = np.array(
        [
            [0, 0, 0, 0],
            [255, 0, 0, 0],
            [0, 255, 0, 0],
            [0, 0, 255, 0],
            [0, 0, 0, 255],
            [0, 255, 255, 0],
            [255, 0, 255, 0],
            [255, 255, 0, 0],
        ],
        np.uint8,
    ).reshape(1, -1, 4)
    img = Image.fromarray(patches, "CMYK")

    def lab(icc_bytes):
        rgb = np.asarray(
            ImageCms.applyTransform(
                img, color.transform(icc_bytes, None, "CMYK", "RGB", "relative")
            )
        )
        return rgb2lab(rgb / 255.0)[0]

    ours, swop = lab(color.fallback_cmyk()), lab(icc("cmyk"))
    naive = rgb2lab(np.asarray(img.convert("RGB")) / 255.0)[0]
    assert np.allclose(ours[0], [100, 0, 0], atol=1.0)  # paper -> white
    de_ours = np.linalg.norm(ours - swop, axis=1)[1:]
    de_naive = np.linalg.norm(naive - swop, axis=1)[1:]
    assert de_ours.mean() < 10 and de_naive.mean() > 3 * de_ours.mean(), (de_ours, de_naive)


@needs_profiles
def test_cmyk_with_its_profile_is_converted_through_it(photo):
    cmyk = into(photo, icc("cmyk"), "CMYK")
    d = decode(encoded(cmyk, "JPEG", quality=95, icc_profile=icc("cmyk")), LIMITS)
    assert d.color.space == "cmyk" and "CMYK" in d.color.description and d.color.note is None
    stored = Image.open(io.BytesIO(encoded(cmyk, "JPEG", quality=95, icc_profile=icc("cmyk"))))
    want = np.asarray(
        ImageCms.applyTransform(
            stored,
            ImageCms.buildTransform(
                ImageCms.ImageCmsProfile(io.BytesIO(icc("cmyk"))),
                ImageCms.createProfile("sRGB"),
                "CMYK",
                "RGB",
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            ),
        )
    )
    assert np.abs(d.rgb.astype(int) - want).max() <= 1
    # round trip through the press profile: the photo again, but for what lies outside the press gamut
    back = np.abs(d.rgb.astype(int) - photo)
    naive = np.abs(np.asarray(stored.convert("RGB")).astype(int) - photo)
    assert np.median(back) <= 3 and np.median(naive) >= 3 * np.median(back), (
        np.median(back),
        np.median(naive),
    )


def test_big_jpegs_decode_at_reduced_size_within_a_level(photos):
    """Scaled down 2x or more: libjpeg's DCT scaling first, then the same Lanczos; the
    result stays within a level (on average) of the full decode."""
    big = Image.open(photos["astronaut"]).convert("RGB").resize((4000, 3000), Image.LANCZOS)
    data = encoded(big, "JPEG", quality=92)
    target = (900, 675)
    full = decode(data, LIMITS)
    fast = decode(data, LIMITS, target=target)
    assert full.size == fast.size == (4000, 3000)  # the size planning knows, whatever was decoded
    assert full.pixels.shape == (3000, 4000, 3) and fast.pixels.shape == (1500, 2000, 3)
    d = np.abs(resize(fast.pixels, *target).astype(int) - resize(full.pixels, *target))
    assert d.mean() < 1.0 and np.percentile(d, 99) <= 2
    assert decode(data, LIMITS, target=(2100, 1575)).pixels.shape == (
        3000,
        4000,
        3,
    )  # less than 2x: full decode

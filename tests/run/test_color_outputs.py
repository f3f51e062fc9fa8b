"""Outputs a catalogue can publish: true colour from tagged sources, grey stays grey,
CMYK through its profile, broken profiles ignored, and labels + rights metadata read
back by independent readers (exiftool, Pillow). Stages called directly, classical backend."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageCms, ImageOps

from pipeline.io import color, manifest
from pipeline.io.outputs import OutputStore
from pipeline.plan.stage import PlanStage
from pipeline.run.stages import LoadStage, OutpaintStage, ProcessStage, WriteStage

from ..conftest import make_config, write_manifest
from ..io.test_color import encoded, icc, into, needs_profiles

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool (libimage-exiftool-perl, .ci/run installs it)"
)
NEWS = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    return np.asarray(Image.open(photos["astronaut"]).convert("RGB"))[100:400, 60:460]  # 400 x 300


def run_rows(tmp_path, rows, name="out", **sections):
    """Plan + the fused stages (as a CPU backend runs); returns {id: metadata row}."""
    m = write_manifest(tmp_path / f"{name}.parquet", rows)
    cfg = make_config(
        tmp_path, m, output={"uri": str(tmp_path / name), **sections.pop("output", {})}, **sections
    )
    plan = PlanStage(cfg, identify=True)(manifest.read(cfg))
    out = ProcessStage.from_config(cfg, OutputStore(cfg.output.uri), "r")(plan)
    return {r["id"]: r for r in out.to_pylist()}, cfg


def open_out(tmp_path, row, name="out") -> Image.Image:
    im = Image.open(tmp_path / name / "images" / row["output_uri"].rsplit("/", 1)[-1])
    im.load()
    return im


def displayed(im: Image.Image) -> np.ndarray:
    """What a colour-managed viewer shows: the stored values through the embedded profile, in sRGB."""
    return np.asarray(color.to_srgb_image(im).convert("RGB")).astype(float)


def seam_step(pixels: np.ndarray, box, band: int = 4) -> float:
    """Mean displayed colour of the ``band`` px just outside the reference's left and right
    sides against the ``band`` px just inside: the step a viewer sees at the seam."""
    x0, y0, x1, y1 = box
    outside = np.concatenate([pixels[y0:y1, x0 - band : x0], pixels[y0:y1, x1 : x1 + band]], axis=1)
    inside = np.concatenate([pixels[y0:y1, x0 : x0 + band], pixels[y0:y1, x1 - band : x1]], axis=1)
    return float(np.abs(outside.mean(axis=(0, 1)) - inside.mean(axis=(0, 1))).max())


def box_of(row):
    return row["visible_x0"], row["visible_y0"], row["visible_x1"], row["visible_y1"]


def ref_area(pixels: np.ndarray, row) -> np.ndarray:
    x0, y0, x1, y1 = box_of(row)
    return pixels[y0:y1, x0:x1]


@needs_profiles
@pytest.mark.parametrize("profile", ["adobe", "prophoto", "swapped"])
@pytest.mark.parametrize("src_fmt", ["PNG", "JPEG", "WEBP"])
def test_tagged_rgb_sources_keep_their_profile_and_values_and_the_seam_is_continuous_as_displayed(
    tmp_path, photo, profile, src_fmt
):
    stored_img = into(photo, icc(profile))
    kw = {"quality": 95} if src_fmt != "PNG" else {}
    src = tmp_path / f"src.{src_fmt.lower()}"
    src.write_bytes(encoded(stored_img, src_fmt, icc_profile=icc(profile), **kw))
    plain = tmp_path / "plain.png"
    Image.fromarray(photo).save(plain)
    rows, _ = run_rows(
        tmp_path,
        [
            {
                "id": "tagged",
                "image": str(src),
                "width": 600,
                "height": 300,
                "output_format": "png",
            },
            {
                "id": "tagged-jpeg",
                "image": str(src),
                "width": 600,
                "height": 300,
                "output_format": "jpeg",
            },
            {
                "id": "tagged-webp",
                "image": str(src),
                "width": 600,
                "height": 300,
                "output_format": "webp",
            },
            {"id": "plain", "image": str(plain), "width": 600, "height": 300},
        ],
    )
    row = rows["tagged"]
    assert row["status"] == "ok" and row["color_transform"] == "none" and row["color_note"] is None
    assert row["color_profile"] == color.describe(icc(profile)) == row["output_profile"]
    out = open_out(tmp_path, row)
    assert out.info.get("icc_profile") == icc(profile)  # the source's own profile, embedded
    stored = np.asarray(Image.open(src).convert("RGB"))
    assert np.array_equal(
        ref_area(np.asarray(out), row), stored
    )  # the reference's stored values, byte-exact
    for lossy in (
        "tagged-jpeg",
        "tagged-webp",
    ):  # Pillow drops profiles on JPEG/WebP unless passed: we pass them
        assert open_out(tmp_path, rows[lossy]).info.get("icc_profile") == icc(profile)
    # as displayed: the reference is the photo, and the generated area meets it without a step
    shown = displayed(out)
    assert np.abs(ref_area(shown, row) - photo).mean() < 3
    plain_step = seam_step(displayed(open_out(tmp_path, rows["plain"])), box_of(rows["plain"]))
    assert seam_step(shown, box_of(row)) <= plain_step + 3, (
        seam_step(shown, box_of(row)),
        plain_step,
    )


@needs_profiles
def test_the_model_sees_the_reference_rendered_to_srgb(tmp_path, photo):
    """A profile that swaps red and green: the stored values are far from the photo, the
    model's view is the photo (the profile is really applied)."""
    src = tmp_path / "swapped.png"
    src.write_bytes(encoded(into(photo, icc("swapped")), "PNG", icc_profile=icc("swapped")))
    m = write_manifest(
        tmp_path / "m.parquet", [{"id": "s", "image": str(src), "width": 600, "height": 300}]
    )
    cfg = make_config(tmp_path, m)
    plan = PlanStage(cfg, identify=True)(manifest.read(cfg)).to_pylist()[0]
    ref = LoadStage.from_config(cfg).load(plan)
    stored = np.asarray(Image.open(src).convert("RGB")).astype(int)
    assert np.abs(stored - photo).mean() > 20  # red and green swapped
    assert np.abs(ref.model.astype(int) - photo).mean() < 3
    assert ref.out is not ref.model and np.array_equal(ref.out, stored)


@needs_profiles
@pytest.mark.parametrize("profile", ["adobe", "prophoto", "swapped"])
def test_srgb_output_converts_everything_and_tags_srgb(tmp_path, photo, profile):
    src = tmp_path / "src.png"
    src.write_bytes(encoded(into(photo, icc(profile)), "PNG", icc_profile=icc(profile)))
    rows, _ = run_rows(
        tmp_path,
        [
            {"id": "a", "image": str(src), "width": 600, "height": 300},
            {"id": "j", "image": str(src), "width": 600, "height": 300, "output_format": "jpeg"},
        ],
        output={"color": "srgb"},
    )
    row = rows["a"]
    assert row["color_transform"] == "to_srgb" and row["output_profile"] == "sRGB"
    out = open_out(tmp_path, row)
    assert out.info["icc_profile"] == color.srgb_bytes()
    assert "sRGB" in ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))
    )
    stored = Image.open(src)
    want = np.asarray(
        ImageCms.applyTransform(
            stored.convert("RGB"),
            ImageCms.buildTransform(
                ImageCms.ImageCmsProfile(io.BytesIO(icc(profile))),
                ImageCms.createProfile("sRGB"),
                "RGB",
                "RGB",
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            ),
        )
    ).astype(int)
    assert (
        np.abs(ref_area(np.asarray(out), row).astype(int) - want).max() <= 1
    )  # LittleCMS's conversion, +-1
    assert open_out(tmp_path, rows["j"]).info.get("icc_profile") == color.srgb_bytes()


@needs_profiles
def test_grey_with_a_grey_profile_stays_grey(tmp_path, photos):
    grey = np.asarray(Image.open(photos["camera"]).convert("L"))[:300, :400]
    src = tmp_path / "grey.png"
    src.write_bytes(encoded(Image.fromarray(grey, "L"), "PNG", icc_profile=icc("gray")))
    rows, _ = run_rows(
        tmp_path,
        [
            {"id": f"g-{f}", "image": str(src), "width": 600, "height": 300, "output_format": f}
            for f in ("png", "jpeg", "webp")
        ],
    )
    for fmt in ("png", "jpeg"):
        row = rows[f"g-{fmt}"]
        out = open_out(tmp_path, row)
        assert (
            out.mode == "L"
            and out.info.get("icc_profile") == icc("gray")
            and row["color_transform"] == "none"
        )
        if fmt == "png":
            assert np.array_equal(ref_area(np.asarray(out), row), grey)  # byte-exact
    webp = rows["g-webp"]  # WebP has no grey mode: sRGB there
    out = open_out(tmp_path, webp)
    assert out.mode == "RGB" and out.info.get("icc_profile") == color.srgb_bytes()
    assert webp["color_transform"] == "gray_to_srgb" and webp["output_profile"] == "sRGB"


@needs_profiles
def test_cmyk_sources_become_tagged_srgb_through_their_profile_or_the_fallback(tmp_path, photo):
    cmyk = into(photo, icc("cmyk"), "CMYK")
    with_p, without = tmp_path / "with.jpg", tmp_path / "without.jpg"
    with_p.write_bytes(encoded(cmyk, "JPEG", quality=95, icc_profile=icc("cmyk")))
    without.write_bytes(encoded(cmyk, "JPEG", quality=95))
    for mode in ("preserve", "srgb"):
        rows, _ = run_rows(
            tmp_path,
            [
                {"id": "w", "image": str(with_p), "width": 600, "height": 300},
                {"id": "n", "image": str(without), "width": 600, "height": 300},
            ],
            name=f"out-{mode}",
            output={"color": mode},
        )
        w, n = rows["w"], rows["n"]
        assert w["color_transform"] == n["color_transform"] == "cmyk_to_srgb"
        assert w["color_profile"] == "Artifex CMYK SWOP Profile" and w["color_note"] is None
        assert (
            n["color_profile"] == color.FALLBACK_CMYK_NAME
            and "fallback CMYK profile" in n["color_note"]
        )
        for row, profile in ((w, icc("cmyk")), (n, color.fallback_cmyk())):
            out = open_out(tmp_path, row, f"out-{mode}")
            assert out.mode == "RGB" and out.info["icc_profile"] == color.srgb_bytes()
            stored = Image.open(tmp_path / row["image"].rsplit("/", 1)[-1])
            want = np.asarray(
                ImageCms.applyTransform(
                    stored,
                    ImageCms.buildTransform(
                        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                        ImageCms.createProfile("sRGB"),
                        "CMYK",
                        "RGB",
                        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                    ),
                )
            ).astype(int)
            assert np.abs(ref_area(np.asarray(out), row).astype(int) - want).max() <= 1


@needs_profiles
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_with_a_profile(tmp_path, photo, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "o.jpg"
    src.write_bytes(
        encoded(into(photo, icc("adobe")), "JPEG", quality=95, icc_profile=icc("adobe"), exif=exif)
    )
    upright = np.asarray(ImageOps.exif_transpose(Image.open(src)).convert("RGB"))
    h, w = upright.shape[:2]
    rows, _ = run_rows(tmp_path, [{"id": "o", "image": str(src), "width": w + 200, "height": h}])
    row = rows["o"]
    assert (row["source_width"], row["source_height"]) == (w, h)
    out = open_out(tmp_path, row)
    assert out.info.get("icc_profile") == icc("adobe")
    assert np.array_equal(ref_area(np.asarray(out), row), upright)  # upright and byte-exact
    assert out.getexif().get(0x0112, 1) == 1  # the pixels are upright: orientation normalised


@needs_profiles
@pytest.mark.parametrize(
    "bad", [lambda: icc("adobe")[:300], lambda: b"\x00garbage" * 64, lambda: icc("cmyk")]
)
def test_a_broken_profile_never_fails_a_row(tmp_path, photo, bad):
    src = tmp_path / "bad.jpg"
    src.write_bytes(encoded(Image.fromarray(photo), "JPEG", quality=95, icc_profile=bad()))
    rows, _ = run_rows(tmp_path, [{"id": "b", "image": str(src), "width": 600, "height": 300}])
    row = rows["b"]
    assert (
        row["status"] == "ok"
        and row["color_profile"] == color.UNTAGGED
        and row["output_profile"] is None
    )
    assert "treated as untagged sRGB" in row["color_note"]
    out = open_out(tmp_path, row)
    assert "icc_profile" not in out.info
    assert np.array_equal(
        ref_area(np.asarray(out), row), np.asarray(Image.open(src).convert("RGB"))
    )


def exiftool(path) -> dict:
    r = subprocess.run(
        [EXIFTOOL, "-j", "-G1", "-a", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def rich_source(tmp_path, photo) -> str:
    """A JPEG with EXIF (artist, copyright, orientation, GPS), XMP rights and a digital
    source type of its own, and IPTC-IIM credit, as a DAM exports it."""
    exif = Image.Exif()
    exif[0x013B], exif[0x8298], exif[0x0112] = "Ann Artist", "(c) 2026 Shop AG", 1
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 18.0)})
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" photoshop:Credit="Shop AG Studio" '
        'xmpMM:DocumentID="xmp.did:old-document" '
        f'Iptc4xmpExt:DigitalSourceType="{NEWS}digitalCapture">'
        "<dc:creator><rdf:Seq><rdf:li>Ann Artist</rdf:li></rdf:Seq></dc:creator>"
        '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">(c) 2026 Shop AG</rdf:li></rdf:Alt></dc:rights>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()
    src = tmp_path / "rich.jpg"
    src.write_bytes(encoded(Image.fromarray(photo), "JPEG", quality=95, exif=exif, xmp=xmp))
    if EXIFTOOL:  # IPTC-IIM (APP13), which Pillow cannot write
        subprocess.run(
            [EXIFTOOL, "-overwrite_original", "-IPTC:Source=Shop AG archive", str(src)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return str(src)


@needs_exiftool
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_labels_and_rights_read_back_by_exiftool_and_pillow(tmp_path, photo, fmt):
    src = rich_source(tmp_path, photo)
    rows, _ = run_rows(
        tmp_path,
        [
            {"id": "gen", "image": src, "width": 600, "height": 300, "output_format": fmt},
            {"id": "same", "image": src, "width": 400, "height": 300, "output_format": fmt},
        ],
    )
    gen, same = rows["gen"], rows["same"]
    assert (
        gen["digital_source_type"] == "compositeSynthetic" and same["digital_source_type"] is None
    )
    tags = exiftool(tmp_path / "out" / "images" / gen["output_uri"].rsplit("/", 1)[-1])
    assert (
        tags["XMP-iptcExt:DigitalSourceType"] == NEWS + "compositeSynthetic"
    )  # ours, not the source's
    assert tags["XMP-dc:Creator"] == "Ann Artist" and tags["XMP-dc:Rights"] == "(c) 2026 Shop AG"
    assert (
        tags["XMP-photoshop:Credit"] == "Shop AG Studio"
        and tags["XMP-photoshop:Source"] == "Shop AG archive"
    )
    assert tags["IFD0:Artist"] == "Ann Artist" and tags["IFD0:Copyright"] == "(c) 2026 Shop AG"
    assert (
        not any(k.startswith("GPS") for k in tags) and "XMP-xmpMM:DocumentID" not in tags
    )  # no GPS, no history
    out = open_out(tmp_path, gen)
    assert (
        out.getxmp()["xmpmeta"]["RDF"]["Description"]["DigitalSourceType"]
        == NEWS + "compositeSynthetic"
    )
    assert out.getexif().get(0x0112, 1) == 1
    # nothing generated: no label of ours, the source's own carried
    plain = exiftool(tmp_path / "out" / "images" / same["output_uri"].rsplit("/", 1)[-1])
    assert (
        plain.get("XMP-iptcExt:DigitalSourceType") is None
        and plain["XMP-dc:Creator"] == "Ann Artist"
    )


@needs_exiftool
def test_label_settings(tmp_path, photo):
    src = rich_source(tmp_path, photo)
    row = {"id": "gen", "image": src, "width": 600, "height": 300}
    rows, _ = run_rows(
        tmp_path, [row], name="merchant", output={"digital_source_type": "trainedAlgorithmicMedia"}
    )
    assert (
        exiftool(tmp_path / "merchant/images/gen.png")["XMP-iptcExt:DigitalSourceType"]
        == NEWS + "trainedAlgorithmicMedia"
    )
    rows, _ = run_rows(
        tmp_path, [row], name="bare", output={"digital_source_type": "none", "keep_metadata": False}
    )
    tags = exiftool(tmp_path / "bare/images/gen.png")
    assert rows["gen"]["digital_source_type"] is None
    assert not any(k.startswith(("XMP", "IFD0", "ExifIFD")) for k in tags)
    rows, _ = run_rows(tmp_path, [row], name="gps", output={"keep_gps": True})
    assert "GPS:GPSLatitude" in exiftool(tmp_path / "gps/images/gen.png")
    _, flux_like = run_rows(tmp_path, [row], name="labels")
    from pipeline.backends import BACKENDS
    from pipeline.io.provenance import source_type_uri

    def term(backend):
        return source_type_uri("auto", BACKENDS[backend].learned)

    assert term("flux-fill") == NEWS + "compositeWithTrainedAlgorithmicMedia"
    assert term("bfl-api") == NEWS + "compositeWithTrainedAlgorithmicMedia"
    assert term(flux_like.model.backend) == NEWS + "compositeSynthetic"


@needs_profiles
def test_the_model_actor_path_carries_colour_and_rights_through_arrow(tmp_path, photo):
    """Separate stages (load -> outpaint -> write, Arrow between them, as with a model
    actor) write the same bytes as the fused path."""
    src = tmp_path / "adobe.jpg"
    src.write_bytes(
        encoded(into(photo, icc("adobe")), "JPEG", quality=95, icc_profile=icc("adobe"))
    )
    grey = tmp_path / "grey.png"
    grey.write_bytes(encoded(Image.fromarray(photo[:, :, 1], "L"), "PNG", icc_profile=icc("gray")))
    rows = [
        {"id": "a", "image": str(src), "width": 600, "height": 300},
        {"id": "g", "image": str(grey), "width": 600, "height": 300, "output_format": "jpeg"},
    ]
    fused, cfg = run_rows(tmp_path, rows, name="fused")
    m = write_manifest(tmp_path / "sep.parquet", rows)
    cfg = make_config(tmp_path, m, output={"uri": str(tmp_path / "sep")})
    t = LoadStage.from_config(cfg)(PlanStage(cfg, identify=True)(manifest.read(cfg)))
    assert t.column("ref_out_pixels").null_count == 0  # both keep their own space
    meta = WriteStage.from_config(cfg, OutputStore(cfg.output.uri), "r")(
        OutpaintStage.from_config(cfg)(t)
    )
    assert not {"ref_pixels", "out_icc", "rights_xmp"} & set(meta.column_names)
    for r in meta.to_pylist():
        assert (tmp_path / "sep/images" / r["output_uri"].rsplit("/", 1)[-1]).read_bytes() == (
            tmp_path / "fused/images" / fused[r["id"]]["output_uri"].rsplit("/", 1)[-1]
        ).read_bytes()
        assert r["output_profile"] == fused[r["id"]]["output_profile"] is not None


@pytest.mark.ray
@needs_profiles
def test_outpaint_run_writes_the_colour_columns(tmp_path, photo, ray_local):
    from pipeline.run.runner import run

    src = tmp_path / "adobe.png"
    src.write_bytes(encoded(into(photo, icc("adobe")), "PNG", icc_profile=icc("adobe")))
    m = write_manifest(
        tmp_path / "m.parquet",
        [
            {"id": "a", "image": str(src), "width": 600, "height": 300},
            {"id": "x", "image": str(src), "width": 32, "height": 32},
        ],
    )
    run(make_config(tmp_path, m), quiet=True)
    meta = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "metadata").to_pylist()}
    assert (
        meta["a"]["color_profile"] == color.describe(icc("adobe"))
        and meta["a"]["color_transform"] == "none"
    )
    assert meta["a"]["digital_source_type"] == "compositeSynthetic"
    assert (
        meta["x"]["status"] == "rejected" and meta["x"]["color_profile"] is None
    )  # bulk rows: same columns


def _chain(tmp_path) -> tuple[str, str]:
    """A local root -> intermediate -> signer ES256 chain, as a company PKI issues one:
    (path of the PEM chain, signer first; the PEM private key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "outpaint tests"),
            ]
        )

    def cert(subject, issuer, key, signing_key, ca):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                critical=False,
            )
        )
        if not ca:
            b = b.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
        return b.sign(signing_key, hashes.SHA256())

    root_k, int_k, ee_k = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    cert("Root", "Root", root_k, root_k, True)
    inter = cert("Intermediate", "Root", int_k, root_k, True)
    ee = cert("Catalogue signer", "Intermediate", ee_k, int_k, False)
    path = tmp_path / "chain.pem"
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (ee, inter)))
    key = ee_k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return str(path), key


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_c2pa_content_credentials_signed_offline_with_a_local_chain(
    tmp_path, photo, monkeypatch, fmt
):
    c2pa = pytest.importorskip("c2pa")
    chain, key = _chain(tmp_path)
    monkeypatch.setenv("OUTPAINT_TEST_C2PA_KEY", key)
    src = tmp_path / "s.png"
    Image.fromarray(photo).save(src)
    rows, _ = run_rows(
        tmp_path,
        [
            {"id": "gen", "image": str(src), "width": 600, "height": 300, "output_format": fmt},
            {"id": "same", "image": str(src), "width": 400, "height": 300, "output_format": fmt},
        ],
        output={"c2pa": {"cert": chain, "key_env": "OUTPAINT_TEST_C2PA_KEY"}},
    )
    assert rows["gen"]["status"] == "ok"
    path = tmp_path / "out" / "images" / rows["gen"]["output_uri"].rsplit("/", 1)[-1]
    with open(path, "rb") as f:
        store = json.loads(
            c2pa.Reader(
                {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}[fmt], f
            ).json()
        )
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(
        a["data"]["actions"]
        for a in manifest["assertions"]
        if a["label"].startswith("c2pa.actions")
    )
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]
    assert actions[1]["digitalSourceType"] == NEWS + "compositeSynthetic"
    assert manifest["ingredients"][0]["relationship"] == "parentOf"
    assert manifest["signature_info"]["common_name"] == "Catalogue signer"
    with Image.open(path) as im:  # the label and the pixels are untouched by signing
        assert im.size == (600, 300)
        assert (
            im.getxmp()["xmpmeta"]["RDF"]["Description"]["DigitalSourceType"]
            == NEWS + "compositeSynthetic"
        )
    same = (
        tmp_path / "out" / "images" / rows["same"]["output_uri"].rsplit("/", 1)[-1]
    ).read_bytes()
    assert b"c2pa" not in same  # nothing generated: no credentials claimed


def test_c2pa_key_problems_stop_the_run_before_any_work(tmp_path, photo, monkeypatch):
    pytest.importorskip("c2pa")
    from pipeline.config import ConfigError
    from pipeline.run.runner import run

    chain, _ = _chain(tmp_path)
    src = tmp_path / "s.png"
    Image.fromarray(photo).save(src)
    m = write_manifest(
        tmp_path / "m.parquet", [{"id": "gen", "image": str(src), "width": 600, "height": 300}]
    )
    monkeypatch.delenv("OUTPAINT_NO_SUCH_KEY", raising=False)
    cfg = make_config(
        tmp_path, m, output={"c2pa": {"cert": chain, "key_env": "OUTPAINT_NO_SUCH_KEY"}}
    )
    with pytest.raises(
        ConfigError, match="output.c2pa.key_env: the environment variable OUTPAINT_NO_SUCH_KEY"
    ):
        run(cfg, quiet=True)
    monkeypatch.setenv(
        "OUTPAINT_NO_SUCH_KEY",
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    with pytest.raises(ConfigError, match="output.c2pa: cannot build a signer"):
        run(cfg, quiet=True)
    assert (
        not (tmp_path / "out" / "images").exists() and not (tmp_path / "out" / "metadata").exists()
    )

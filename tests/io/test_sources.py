"""Source access against real servers on loopback: a moto S3 server behind a counting
proxy, and an HTTP image server written from the HTTP contract (ETag, Last-Modified,
Retry-After). Every figure is the servers' own count of the requests they received."""

from __future__ import annotations

import concurrent.futures
import email.utils
import time
import uuid

import pyarrow as pa
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.common import retries
from pipeline.io import sources
from pipeline.io.imageio import ImageError

from ..servers import ImageServer


def input_cfg(**kw):
    # the test CDN runs on loopback: a private address, allowed here on purpose
    http = {"allow_private_networks": True, **kw.pop("http", {})}
    return config_mod.InputConfig(manifest="unused", http=http, **kw)


@pytest.fixture
def image_dir(tmp_path, photos):
    d = tmp_path / "cdn"
    d.mkdir()
    img = Image.open(photos["coffee"]).convert("RGB").resize((120, 80))
    for i in range(6):
        img.save(d / f"p{i}.jpg", quality=80 + i)
    return d


def test_http_one_get_gives_bytes_and_identity_and_a_head_agrees(image_dir):
    with ImageServer(image_dir) as srv:
        data, ident = sources.fetch(srv.url("p0.jpg"), input_cfg())
        assert data == (image_dir / "p0.jpg").read_bytes()
        assert ident.startswith(f"size={len(data)};ETag=")
        assert srv.reset() == {"GET": 1}  # one request, no HEAD before it
        assert sources.head(srv.url("p0.jpg"), input_cfg()) == ident
        assert srv.reset() == {"HEAD": 1}
    with ImageServer(image_dir, etag=False) as srv:  # no ETag: Last-Modified identifies it
        _, ident = sources.fetch(srv.url("p1.jpg"), input_cfg())
        assert "LastModified=" in ident and sources.head(srv.url("p1.jpg"), input_cfg()) == ident


def test_http_errors_have_their_codes(image_dir):
    with ImageServer(image_dir) as srv:
        srv.status.update({"secret.jpg": 403, "login.jpg": 401})
        for name, code in (
            ("missing.jpg", "image_not_found"),
            ("secret.jpg", "image_access_denied"),
            ("login.jpg", "image_access_denied"),
        ):
            with pytest.raises(ImageError) as e:
                sources.fetch(srv.url(name), input_cfg())
            assert e.value.code == code and name in e.value.message
        assert srv.counts["GET"] == 3  # permanent answers are not retried


def test_http_429_honours_retry_after_within_a_bounded_wait(image_dir):
    with ImageServer(image_dir) as srv:
        srv.throttle["p2.jpg"] = (2, "1")  # two 429s asking for 1 s each, then the image
        t0 = time.perf_counter()
        data, _ = sources.fetch(srv.url("p2.jpg"), input_cfg())
        assert 2.0 <= time.perf_counter() - t0 < 6 and data == (image_dir / "p2.jpg").read_bytes()
        assert srv.counts["GET"] == 3
        srv.throttle["p3.jpg"] = (
            100,
            "30",
        )  # Retry-After beyond input.http.max_wait_s: give up, in bounded time
        t0 = time.perf_counter()
        with pytest.raises(ImageError) as e:
            sources.fetch(srv.url("p3.jpg"), input_cfg(http={"max_wait_s": 2}))
        assert (
            time.perf_counter() - t0 < 3
            and "429" in e.value.message
            and e.value.code == "image_not_found"
        )
        srv.throttle["p4.jpg"] = (
            10**6,
            "0",
        )  # "retry at once", for ever: still bounded by max_wait_s
        t0 = time.perf_counter()
        with pytest.raises(ImageError):
            sources.fetch(srv.url("p4.jpg"), input_cfg(http={"max_wait_s": 1}))
        assert time.perf_counter() - t0 < 2 and 5 <= srv.paths.count(("GET", "p4.jpg")) <= 12


def test_retry_after_reads_seconds_and_dates():
    assert (
        retries.retry_after("3") == 3.0 and retries.retry_after(" 0 ") == retries.RETRY_AFTER_MIN_S
    )
    assert (
        retries.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == retries.RETRY_AFTER_MIN_S
    )  # in the past
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retries.retry_after(soon) <= 30.5
    assert retries.retry_after(None) is None and retries.retry_after("soon") is None


def test_http_connections_per_host_are_limited(image_dir):
    """32 threads fetch at once; the server never sees more than the per-host limit."""
    slow = image_dir / "big.jpg"
    slow.write_bytes((image_dir / "p0.jpg").read_bytes() * 200)
    with ImageServer(image_dir) as srv:
        cfg = input_cfg(http={"max_connections_per_host": 3})
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            got = list(pool.map(lambda _: sources.fetch(srv.url("big.jpg"), cfg)[0], range(48)))
        assert all(len(g) == slow.stat().st_size for g in got)
        assert srv.counts["GET"] == 48 and 1 < srv.max_active <= 3


def test_s3_fetch_is_one_get_with_the_same_identity_as_a_head(s3_counted, image_dir):
    fs, bucket, opts, proxy = s3_counted
    fs.put_file(str(image_dir / "p0.jpg"), f"{bucket}/src/p0.jpg")
    uri = f"s3://{bucket}/src/p0.jpg"
    cfg = input_cfg(storage_options=opts)
    proxy.reset()
    data, ident = sources.fetch(uri, cfg)
    assert data == (image_dir / "p0.jpg").read_bytes() and ident.startswith(
        f"size={len(data)};ETag="
    )
    assert proxy.reset() == {"GET": 1}
    assert sources.head(uri, cfg) == ident
    with pytest.raises(ImageError) as e:
        sources.fetch(f"s3://{bucket}/src/nope.jpg", cfg)
    assert e.value.code == "image_not_found"


def test_s3_identities_from_one_listing_or_a_head_each(s3_counted, image_dir):
    """A directory where most objects are wanted is listed (one request for 60 keys) and
    gives the identities a HEAD gives; a few rows in a big prefix take a HEAD each
    (the listing stops at its budget instead of walking the prefix)."""
    fs, bucket, opts, proxy = s3_counted
    body = (image_dir / "p0.jpg").read_bytes()
    for i in range(60):
        fs.pipe_file(f"{bucket}/cat/sku-{i:04d}.jpg", body + bytes([i]))
    for _ in range(2500):  # a big prefix of other objects, random names (no common name prefix)
        fs.pipe_file(f"{bucket}/big/{uuid.uuid4().hex}.jpg", b"x")
    fs.pipe_file(f"{bucket}/big/0-wanted.jpg", body)
    cfg = input_cfg(storage_options=opts)
    uris = pa.array(
        [f"s3://{bucket}/cat/sku-{i:04d}.jpg" for i in range(50)] + [f"s3://{bucket}/cat/gone.jpg"]
    )
    proxy.reset()
    ident, errors, stats = sources.identities(uris, cfg)
    assert proxy.reset() == {"LIST": 1} and stats.listed == 50 and stats.head == 0
    assert errors[-1].code == "image_not_found" and all(e is None for e in errors[:50])
    heads = [sources.head(u, cfg) for u in uris.to_pylist()[:50]]
    assert list(ident[:50]) == heads  # the same string: request hashes agree whichever way
    few = pa.array([f"s3://{bucket}/big/0-wanted.jpg", f"s3://{bucket}/big/{uuid.uuid4().hex}.jpg"])
    proxy.reset()
    ident, errors, stats = sources.identities(few, cfg)
    paths = list(proxy.paths)
    counts = proxy.reset()
    assert counts["LIST"] <= 1 and counts["HEAD"] <= 2 and sum(counts.values()) <= 3, (
        paths
    )  # not 3 pages of 2,500
    assert (
        ident[0] == sources.head(f"s3://{bucket}/big/0-wanted.jpg", cfg)
        and errors[1].code == "image_not_found"
    )
    forced = input_cfg(storage_options=opts, identity="head")
    proxy.reset()
    sources.identities(uris[:5], forced)
    assert proxy.reset() == {"HEAD": 5}

"""Untrusted sources cannot reach inside: loopback, private, link-local (cloud metadata)
and other internal addresses are refused by default, on the address actually connected
to and on every redirect hop; the config may allow them. Real loopback servers; host
names resolved through the resolver hook (no DNS, no /etc/hosts)."""

from __future__ import annotations

import ipaddress
import socket

import pyarrow as pa
import pytest
from PIL import Image

from pipeline import config as config_mod
from pipeline.io import netguard, sources
from pipeline.io.imageio import ImageError

from ..servers import ImageServer


@pytest.fixture
def cdn(tmp_path, photos):
    d = tmp_path / "cdn"
    d.mkdir()
    Image.open(photos["coffee"]).convert("RGB").resize((96, 64)).save(d / "a.jpg")
    with ImageServer(d) as srv:
        yield srv


def cfg(**http):
    return config_mod.InputConfig(manifest="unused", http=http)


def port_of(srv) -> int:
    return int(srv.endpoint.rsplit(":", 1)[1])


@pytest.fixture
def names(monkeypatch):
    """Public-looking names resolved to chosen addresses, as a hostile DNS would."""
    table: dict[str, str] = {}
    real = netguard.RESOLVE

    def resolve(host, port, *args, **kwargs):
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(netguard, "RESOLVE", resolve)
    return table


def test_a_loopback_source_is_refused_by_default_and_allowed_by_the_config(cdn):
    with pytest.raises(ImageError) as e:
        sources.fetch(cdn.url("a.jpg"), cfg())
    assert e.value.code == "image_access_denied"
    assert (
        "127.0.0.1, a loopback address" in e.value.message
        and "allow_private_networks" in e.value.message
    )
    assert cdn.reset() == {}  # refused before any byte left this machine
    data, _ = sources.fetch(cdn.url("a.jpg"), cfg(allow_private_networks=True))
    assert data[:2] == b"\xff\xd8"
    data, _ = sources.fetch(cdn.url("a.jpg"), cfg(allowed_hosts=["127.0.0.0/8"]))
    assert data[:2] == b"\xff\xd8" and cdn.reset() == {"GET": 2}
    with pytest.raises(ImageError) as e:  # a HEAD (a rerun's identity) obeys the same rule
        sources.head(cdn.url("a.jpg"), cfg())
    assert e.value.code == "image_access_denied"


def test_a_public_looking_name_that_resolves_inside_is_refused(cdn, names):
    names["images.shop.example"] = "127.0.0.1"
    url = f"http://images.shop.example:{port_of(cdn)}/a.jpg"
    with pytest.raises(ImageError) as e:
        sources.fetch(url, cfg())
    assert e.value.code == "image_access_denied"
    assert "images.shop.example resolves to 127.0.0.1, a loopback address" in e.value.message
    assert cdn.reset() == {}
    # allowed by name: the connection goes to the address that was checked (no DNS here)
    data, _ = sources.fetch(url, cfg(allowed_hosts=["images.shop.example"]))
    assert data[:2] == b"\xff\xd8" and cdn.reset() == {"GET": 1}
    names["metadata.cloud.example"] = "169.254.169.254"
    with pytest.raises(ImageError) as e:
        sources.fetch("http://metadata.cloud.example/latest/meta-data/", cfg())
    assert e.value.code == "image_access_denied" and "link-local" in e.value.message


def test_every_redirect_hop_is_checked(cdn, names):
    names["cdn.shop.example"] = "127.0.0.1"
    port = port_of(cdn)
    allowed = cfg(allowed_hosts=["cdn.shop.example"])
    cdn.redirects["moved.jpg"] = f"http://cdn.shop.example:{port}/a.jpg"  # an allowed hop
    data, _ = sources.fetch(f"http://cdn.shop.example:{port}/moved.jpg", allowed)
    assert data[:2] == b"\xff\xd8"
    cdn.redirects["inside.jpg"] = (
        f"http://127.0.0.1:{port}/a.jpg"  # an allowed server sends it inside
    )
    with pytest.raises(ImageError) as e:
        sources.fetch(f"http://cdn.shop.example:{port}/inside.jpg", allowed)
    assert e.value.code == "image_access_denied" and "127.0.0.1" in e.value.message
    cdn.redirects["local.jpg"] = "file:///etc/passwd"
    with pytest.raises(ImageError) as e:
        sources.fetch(f"http://cdn.shop.example:{port}/local.jpg", allowed)
    assert e.value.code == "image_access_denied" and "only http(s) redirects" in e.value.message
    cdn.redirects["loop.jpg"] = f"http://cdn.shop.example:{port}/loop.jpg"
    with pytest.raises(ImageError) as e:
        sources.fetch(
            f"http://cdn.shop.example:{port}/loop.jpg",
            cfg(allowed_hosts=["cdn.shop.example"], max_redirects=3),
        )
    assert "max_redirects = 3" in e.value.message
    assert cdn.paths.count(("GET", "loop.jpg")) == 4  # the first request and 3 redirects, no more


@pytest.mark.parametrize(
    "address,rule",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("169.254.169.254", "link-local"),  # the cloud metadata address
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_the_rules_cover_ipv4_ipv6_and_mapped_addresses(address, rule):
    found = netguard.rule_of(ipaddress.ip_address(address))
    assert (found is None) if rule is None else (rule in found)


def test_a_remote_image_root_cannot_be_escaped_by_the_manifest(tmp_path):
    from pipeline.plan.stage import plan_manifest

    rows = [
        {"id": "rel", "image": "shoes/red.jpg"},
        {"id": "under", "image": "s3://catalogue/images/shoes/blue.jpg"},
        {"id": "web", "image": "https://cdn.example/x.jpg"},
        {"id": "file", "image": "file:///etc/passwd"},
        {"id": "abs", "image": "/etc/passwd"},
        {"id": "bucket", "image": "s3://someone-else/private.jpg"},
        {"id": "climb", "image": "../../secrets/key.jpg"},
    ]
    table = pa.table({
        "id": [r["id"] for r in rows], "image": [r["image"] for r in rows],
        "image_width": [400] * len(rows), "image_height": [300] * len(rows),
        "manifest_row": list(range(len(rows))),
    })  # fmt: skip
    cfg_ = config_mod.from_dict({
        "input": {"manifest": "m.parquet", "image_root": "s3://catalogue/images"},
        "defaults": {"aspect_ratio": "1:1"}, "output": {"uri": str(tmp_path / "out")},
    })  # fmt: skip
    plan = {r["id"]: r for r in plan_manifest(cfg_, table).to_pylist()}
    assert {k for k, r in plan.items() if r["status"] == "ok"} == {"rel", "under", "web"}
    for rid in ("file", "abs", "bucket", "climb"):
        assert (plan[rid]["status"], plan[rid]["error_code"]) == (
            "failed",
            "image_access_denied",
        ), rid
    assert "outside input.image_root" in plan["file"]["error_message"]
    assert "climbs out of input.image_root" in plan["climb"]["error_message"]


def test_outpaint_manifest_refuses_a_url_inside_unless_allowed(cdn, tmp_path):
    from pipeline.cli import main

    assert (
        main(["manifest", cdn.url(""), "--out", str(tmp_path / "m.csv"), "--aspect-ratio", "1:1"])
        == 2
    )
    assert not (tmp_path / "m.csv").exists() and cdn.reset() == {}

"""Labels and rights metadata of outputs: the IPTC digital source type that shops and
the EU AI Act ask of AI-edited images, and the source's own creator / copyright /
credit carried over.

- ``label``: an XMP packet (``Iptc4xmpExt:DigitalSourceType`` = an IPTC NewsCodes URI)
  on every output with generated pixels; none where nothing was generated.
- ``Rights``: read once at decode from the source: its EXIF (orientation reset to 1,
  since the pixels are already upright; GPS dropped unless asked; maker notes,
  thumbnail and pixel dimensions dropped, since they describe another image), its XMP
  rights and description properties (``dc``, ``xmpRights``, ``photoshop``,
  ``Iptc4xmpCore``/``Ext``, ``plus``; not the editing history or camera settings), and
  IPTC-IIM fields mapped to their XMP equivalents where the XMP lacks them.

Source XMP is untrusted XML: it is parsed with ``defusedxml`` (no entity expansion, no
external references), and a packet that does not parse is dropped, never the row.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from PIL import Image

from ..config import NEWSCODES

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "plus": "http://ns.useplus.org/ldf/xmp/1.0/",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)
CARRIED_NS = frozenset(
    NS[k] for k in ("dc", "xmpRights", "photoshop", "Iptc4xmpCore", "Iptc4xmpExt", "plus")
)
_RDF = "{" + NS["rdf"] + "}"
_DST = "{" + NS["Iptc4xmpExt"] + "}DigitalSourceType"
XMP_LIMIT = 60_000  # a JPEG APP1 segment holds at most 65,502 bytes of XMP

_ORIENTATION, _GPS_IFD, _EXIF_IFD = 0x0112, 0x8825, 0x8769
_DROPPED_EXIF = (
    0x927C,
    0xA002,
    0xA003,
    0xA005,
)  # maker note, pixel X/Y dimensions, interop pointer
# IPTC-IIM (record 2) -> (XMP property, container): By-line, copyright notice, credit, source, caption, title
_IIM = {
    (2, 80): ("dc", "creator", "Seq"),
    (2, 116): ("dc", "rights", "Alt"),
    (2, 110): ("photoshop", "Credit", None),
    (2, 115): ("photoshop", "Source", None),
    (2, 120): ("dc", "description", "Alt"),
    (2, 5): ("dc", "title", "Alt"),
}


def source_type_uri(setting: str, learned: bool) -> str | None:
    """``output.digital_source_type`` -> the term's URI (None: no label). ``auto``: a
    learned model's output is ``compositeWithTrainedAlgorithmicMedia``, a classical
    fill's ``compositeSynthetic``."""
    if setting == "none":
        return None
    if setting == "auto":
        setting = "compositeWithTrainedAlgorithmicMedia" if learned else "compositeSynthetic"
    return setting if setting.startswith("http") else NEWSCODES + setting


@dataclass(frozen=True)
class Rights:
    """What of a source's metadata goes to its output."""

    exif: bytes | None  # EXIF to embed (with its "Exif\\0\\0" header), or None
    xmp: tuple[str, ...]  # carried XMP properties, each one serialized element


def read_rights(img: Image.Image, keep_gps: bool = False) -> Rights:
    """The source's carried metadata (call on the decoded image, before transposing)."""
    return Rights(_exif(img, keep_gps), _xmp_properties(img))


def _exif(img: Image.Image, keep_gps: bool) -> bytes | None:
    try:
        exif = Image.Exif()  # a copy: the image's own (orientation included) is for exif_transpose
        raw = img.info.get("exif")
        exif.load(raw if raw else img.getexif().tobytes())
        if not len(exif):
            return None
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1  # the pixels are upright already
        if not keep_gps and _GPS_IFD in exif:
            del exif[_GPS_IFD]
        sub = exif.get_ifd(_EXIF_IFD)
        for tag in _DROPPED_EXIF:
            sub.pop(tag, None)
        data = exif.tobytes()
        return data if len(data) < XMP_LIMIT else None
    except Exception:  # noqa: BLE001 - malformed EXIF is left behind, never the row
        return None


def _parse(xmp: bytes | str):
    from defusedxml.ElementTree import fromstring

    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    start, end = text.find("<x:xmpmeta"), text.rfind("</x:xmpmeta>")
    if start >= 0 and end > start:
        text = text[start : end + len("</x:xmpmeta>")]
    elif text.lstrip().startswith("<?xpacket"):
        text = text[text.find("?>") + 2 : text.rfind("<?xpacket")]
    return fromstring(text.strip().encode("utf-8"))


def _xmp_properties(img: Image.Image) -> tuple[str, ...]:
    raw = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    props: dict[str, str] = {}
    if raw:
        try:
            root = _parse(raw)
        except Exception:  # noqa: BLE001 - not XML (or hostile): carry nothing from it
            root = None
        for desc in root.iter(_RDF + "Description") if root is not None else ():
            for name, value in desc.attrib.items():  # properties written as attributes
                if name.startswith("{") and name[1:].split("}")[0] in CARRIED_NS and name != _DST:
                    el = ET.Element(name)
                    el.text = value
                    props.setdefault(name, ET.tostring(el, encoding="unicode"))
            for child in desc:
                if (
                    child.tag.startswith("{")
                    and child.tag[1:].split("}")[0] in CARRIED_NS
                    and child.tag != _DST
                ):
                    props.setdefault(child.tag, ET.tostring(child, encoding="unicode"))
    for name, el in _iim(img).items():
        props.setdefault(name, ET.tostring(el, encoding="unicode"))
    return tuple(props.values())


def _iim(img: Image.Image) -> dict[str, ET.Element]:
    """IPTC-IIM fields (JPEG APP13, TIFF) as the XMP elements they map to."""
    try:
        from PIL import IptcImagePlugin

        info = IptcImagePlugin.getiptcinfo(img) or {}
    except Exception:  # noqa: BLE001
        return {}
    out = {}
    for key, (prefix, name, container) in _IIM.items():
        values = info.get(key)
        if values is None:
            continue
        values = values if isinstance(values, list) else [values]
        texts = [v.decode("utf-8", "replace").strip() for v in values if v]
        if not texts:
            continue
        tag = f"{{{NS[prefix]}}}{name}"
        el = ET.Element(tag)
        if container is None:
            el.text = texts[0]
        else:
            box = ET.SubElement(el, _RDF + container)
            for t in texts if container == "Seq" else texts[:1]:
                li = ET.SubElement(box, _RDF + "li")
                li.text = t
                if container == "Alt":
                    li.set("{http://www.w3.org/XML/1998/namespace}lang", "x-default")
        out[tag] = el
    return out


def xmp_packet(rights: Rights | None, source_type: str | None) -> bytes | None:
    """The output's XMP packet: carried properties plus the digital source type (None:
    nothing to write). Past the JPEG segment limit the carried properties give way; the
    label never does."""
    props = list(rights.xmp) if rights is not None else []
    if not props and not source_type:
        return None
    packet = _packet(props, source_type)
    if len(packet) > XMP_LIMIT:
        packet = _packet([], source_type) if source_type else None
    return packet


def _packet(props: list[str], source_type: str | None) -> bytes:
    root = ET.Element("{" + NS["x"] + "}xmpmeta")
    rdf = ET.SubElement(root, _RDF + "RDF")
    desc = ET.SubElement(rdf, _RDF + "Description", {_RDF + "about": ""})
    for text in props:
        desc.append(ET.fromstring(text))  # our own serialization of a parsed element: trusted
    if source_type:
        ET.SubElement(desc, _DST).text = source_type
    body = ET.tostring(root, encoding="unicode")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        + body
        + '\n<?xpacket end="w"?>'
    ).encode("utf-8")


def read_source_type(xmp: bytes | str | None) -> str | None:
    """The ``Iptc4xmpExt:DigitalSourceType`` of an XMP packet (tests, the review page)."""
    if not xmp:
        return None
    try:
        root = _parse(xmp)
    except Exception:  # noqa: BLE001
        return None
    for desc in root.iter(_RDF + "Description"):
        if _DST in desc.attrib:
            return desc.attrib[_DST]
        el = desc.find(_DST)
        if el is not None:
            return (el.text or "").strip() or el.get(_RDF + "resource")
    return None


# ------------------------------------------------------------------ C2PA Content Credentials

MIME = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}


class ContentCredentials:
    """C2PA signing of generated outputs with ``c2pa-python``: a manifest whose actions are
    ``c2pa.opened`` (the source, as the parent ingredient) and ``c2pa.edited`` with the
    digital source type. The signer is built once per process, from a PEM chain at
    ``output.c2pa.cert`` and a key read from the worker's own environment."""

    def __init__(self, cfg, version: str = ""):
        self.cfg = cfg
        self.version = version
        self._signer = None

    def __getstate__(self):  # workers build their own signer (ctypes objects do not pickle)
        return {**self.__dict__, "_signer": None}

    def signer(self):
        """The c2pa signer; ``ConfigError`` naming the key when it cannot be built (checked at start)."""
        if self._signer is not None:
            return self._signer
        import os

        from ..common import storage
        from ..config import ConfigError

        try:
            import c2pa
        except ImportError:
            raise ConfigError(
                "output.c2pa needs c2pa-python: pip install 'outpaint[c2pa]'"
            ) from None
        key = os.environ.get(self.cfg.key_env)
        if not key:
            raise ConfigError(
                f"output.c2pa.key_env: the environment variable {self.cfg.key_env} (the PEM private "
                "key) is not set"
            )
        try:
            fs, path = storage.filesystem(self.cfg.cert, self.cfg.storage_options)
            cert = storage.retry(fs.cat_file, path)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(
                f"output.c2pa.cert: {self.cfg.cert} cannot be read ({type(e).__name__}: {e})"
            ) from None
        try:
            info = c2pa.C2paSignerInfo(
                alg=self.cfg.alg.encode(),
                sign_cert=cert,
                private_key=key.encode(),
                ta_url=self.cfg.ta_url.encode() if self.cfg.ta_url else None,
            )
            self._signer = c2pa.Signer.from_info(info)
        except Exception as e:  # noqa: BLE001 - wrong key, wrong algorithm, malformed PEM
            raise ConfigError(
                f"output.c2pa: cannot build a signer from output.c2pa.cert and the key in "
                f"{self.cfg.key_env}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        return self._signer

    def sign(
        self, data: bytes, fmt: str, source_type: str, parent: bytes, parent_format: str, title: str
    ) -> bytes:
        """``data`` (an encoded output) with a signed manifest embedded."""
        import io
        import json

        import c2pa

        manifest = {
            "claim_generator_info": [{"name": "outpaint", "version": self.version}],
            "title": title,
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.edited",
                                "digitalSourceType": source_type,
                                "description": "canvas extended by outpainting; original pixels kept",
                            }
                        ]
                    },
                }
            ],
        }
        builder = c2pa.Builder(json.dumps(manifest))
        try:
            builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
            builder.add_ingredient(
                {"title": "source", "relationship": "parentOf"},
                MIME.get(parent_format, "image/png"),
                io.BytesIO(parent),
            )
            out = io.BytesIO()
            builder.sign(self.signer(), MIME[fmt], io.BytesIO(data), out)
            return out.getvalue()
        finally:
            builder.close()

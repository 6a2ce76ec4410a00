"""Hikvision ANPR event push (ISAPI "HTTP listening"): multipart/form-data with an XML part.

    --boundary
    Content-Disposition: form-data; name="anpr.xml"; filename="anpr.xml"
    Content-Type: application/xml

    <EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
      <macAddress>44:19:b6:6d:24:85</macAddress> <dateTime>2026-01-01T08:00:00+08:00</dateTime>
      <eventType>ANPR</eventType> <UUID>...</UUID> <isDataRetransmission>false</isDataRetransmission>
      <ANPR><licensePlate>京A12345</licensePlate> <confidenceLevel>97</confidenceLevel>
            <direction>forward</direction> <plateColor>blue</plateColor></ANPR>
    </EventNotificationAlert>
    --boundary  (then licensePlatePicture.jpg, detectionPicture.jpg: ignored)

The camera is known by ``macAddress`` (the reader's ``serialno`` holds the MAC; case and separators do
not matter). ``UUID`` identifies the read across re-pushes; ``isDataRetransmission`` true marks a record
stored while the platform was unreachable. A bare XML body (no multipart) is accepted too. Other event
types (heartbeats, video loss) are answered and otherwise ignored. Namespaces are ignored; a DOCTYPE is
refused (no entity expansion can be smuggled in).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime

from drivers.lpr_push import BadPush, PlateRead, camera_id, confidence, plate_text

VENDOR = "hikvision"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)
_COLOUR_PREFIX = "蓝黄绿白黑"  # some firmware prefixes the plate colour: 蓝京A12345


class NotAnpr(Exception):
    """A well-formed Hikvision event that is no plate read (heartbeat, video loss...) from ``camera``."""

    def __init__(self, event: str, camera: str) -> None:
        super().__init__(event)
        self.event = event
        self.camera = camera


def looks_like(body: bytes, content_type: str) -> bool:
    """Multipart, or XML (by its content type or its first byte): the parser then names what is wrong."""
    return "multipart/" in content_type.lower() or "xml" in content_type.lower() or body.lstrip()[:1] == b"<"


def xml_part(body: bytes, content_type: str) -> bytes:
    """The XML part of a multipart body (or the body itself when it is bare XML)."""
    if not content_type.lower().startswith("multipart/"):
        return body
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise BadPush(400, "multipart without a boundary")
    delim = b"--" + m.group(1).encode("latin-1")
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, sep, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = head.decode("latin-1").lower()
        data = data[:-2] if data.endswith(b"\r\n") else data
        if "xml" in headers or data.lstrip().startswith(b"<"):
            return data
    raise BadPush(400, "multipart has no XML part")


def parse(body: bytes, content_type: str) -> PlateRead:
    """Raises BadPush, or NotAnpr for an event that carries no plate."""
    xml = xml_part(body, content_type)
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise BadPush(400, "XML with a DOCTYPE or ENTITY is refused")
    try:
        root = ET.fromstring(xml)
    except (ET.ParseError, LookupError, ValueError) as exc:  # an unknown or multi-byte declared encoding
        raise BadPush(400, f"bad XML: {exc}") from None
    if _local(root.tag) != "EventNotificationAlert":
        raise BadPush(400, f"XML root is {_local(root.tag)!r}, not EventNotificationAlert")
    fields = {_local(e.tag): e for e in root}
    event = _text(fields.get("eventType"))
    if event is None:
        raise BadPush(400, "eventType: missing")
    mac = camera_id(_text(fields.get("macAddress")), "macAddress")
    if event.upper() != "ANPR":
        raise NotAnpr(event, mac)
    anpr = fields.get("ANPR")
    if anpr is None:
        raise BadPush(400, "ANPR: missing")
    a = {_local(e.tag): e for e in anpr}
    plate = plate_text(_text(a.get("licensePlate")), "ANPR.licensePlate")
    if len(plate) > 2 and plate[0] in _COLOUR_PREFIX and not plate[1].isascii():
        plate = plate[1:]
    raw_conf = _text(a.get("confidenceLevel"))
    if raw_conf is None:
        raise BadPush(400, "ANPR.confidenceLevel: missing")
    conf = confidence(raw_conf, "ANPR.confidenceLevel")
    retrans = (_text(fields.get("isDataRetransmission")) or "false").lower()
    if retrans not in ("true", "false"):
        raise BadPush(400, "isDataRetransmission: must be true or false")
    return PlateRead(VENDOR, mac, plate, conf, _text(fields.get("UUID")), retrans == "true",
                     _when(_text(fields.get("dateTime"))), _text(a.get("direction")),
                     _text(a.get("plateColor")))  # fmt: skip


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise BadPush(400, "dateTime: not ISO 8601") from None
    if t.tzinfo is None:
        return None  # a local time without offset cannot be aged safely
    return t.timestamp()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(e: ET.Element | None) -> str | None:
    if e is None or e.text is None or not e.text.strip():
        return None
    return e.text.strip()

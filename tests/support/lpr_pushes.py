"""Camera-style pushes of the three plate-camera dialects, as the cameras send them (tests and bench)."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

CST = timezone(timedelta(hours=8))
BOUNDARY = "MIME_boundary_7d3a"


def vzenith(
    serial: str,
    plate: str,
    *,
    conf: Any = 96,
    plateid: Any = 1,
    offline: Any = 0,
    sec: Any = None,
    image_bytes: int = 0,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "license": plate,
        "confidence": conf,
        "colorType": 1,
        "plateid": plateid,
        "isoffline": offline,
        "timeStamp": {"Timeval": {"sec": int(time.time()) if sec is None else sec, "usec": 0}},
        "triggerType": 8,
    }
    if image_bytes:
        result["imageFile"] = base64.b64encode(b"\xff\xd8" + b"\x00" * (image_bytes - 2)).decode()
        result["imageFileLen"] = image_bytes
    return {
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "IVS",
            "ipaddr": "192.168.1.100",
            "serialno": serial,
            "result": {"PlateResult": result},
        }
    }


def hik_xml(
    mac: str,
    plate: str,
    *,
    conf: str = "97",
    uuid: str | None = "c1d2",
    retrans: str = "false",
    when: datetime | None = None,
    event: str = "ANPR",
) -> bytes:
    t = (when or datetime.now(CST)).isoformat(timespec="seconds")
    uuid_el = f"<UUID>{uuid}</UUID>" if uuid is not None else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">'
        f"<ipAddress>192.168.1.64</ipAddress><portNo>80</portNo><protocol>HTTP</protocol>"
        f"<macAddress>{mac}</macAddress><channelID>1</channelID><dateTime>{t}</dateTime>"
        f"<activePostCount>1</activePostCount><eventType>{event}</eventType><eventState>active</eventState>"
        f"<eventDescription>ANPR</eventDescription>{uuid_el}"
        f"<isDataRetransmission>{retrans}</isDataRetransmission>"
        f"<ANPR><country>CN</country><licensePlate>{plate}</licensePlate><line>1</line>"
        f"<direction>forward</direction><confidenceLevel>{conf}</confidenceLevel>"
        f"<plateType>92TypeCivil</plateType><plateColor>blue</plateColor></ANPR>"
        "</EventNotificationAlert>"
    ).encode()


def multipart(xml: bytes | None, *, picture: bytes = b"\xff\xd8jpeg\xff\xd9") -> tuple[bytes, str]:
    """(body, content type) of an ISAPI push: the XML part, then a picture part."""
    parts = []
    if xml is not None:
        parts.append(
            b'Content-Disposition: form-data; name="anpr.xml"; filename="anpr.xml"\r\n'
            b"Content-Type: application/xml\r\n\r\n" + xml
        )
    parts.append(
        b'Content-Disposition: form-data; name="licensePlatePicture.jpg"; filename="lp.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + picture
    )
    delim = b"--" + BOUNDARY.encode()
    body = b"".join(delim + b"\r\n" + p + b"\r\n" for p in parts) + delim + b"--\r\n"
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def dahua(
    device: str, plate: Any, *, conf: Any = 92, when: datetime | None = None, tz: Any = 8
) -> dict[str, Any]:
    t = when or datetime.now(CST)
    snap: dict[str, Any] = {
        "DeviceID": device,
        "SnapTime": t.strftime("%Y-%m-%d %H:%M:%S"),
        "AccurateTime": t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}",
        "Direction": "Obverse",
    }
    if tz is not None:
        snap["TimeZone"] = tz
    return {
        "Picture": {
            "SnapInfo": snap,
            "Plate": {"PlateNumber": plate, "Confidence": conf, "PlateColor": "Blue"},
            "NormalPic": {"Content": base64.b64encode(b"\xff\xd8pic").decode()},
        }
    }


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()

"""The hardware probes of `edge doctor` without a running daemon (the other checks: edge/doctor_checks.py).

Each is short and lets go at once: a serial port is opened with ``exclusive=True`` (the lock pyserial
and pymodbus take, so a port someone holds is reported busy, never shared), a Modbus unit gets one
read of coil 0 with the bus timeout, a camera one frame, an NFC path one open; the broker sees its own
client id with a clean, non-persistent session (the gateway's id would take over the daemon's session
and its queued whitelist messages). Blocking libraries run in daemon threads with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from typing import Any

from edge.doctor_checks import Check, Status, in_thread, port_free

# --- Modbus probe (no daemon) ------------------------------------------------------------------


async def probe_bus(bus_id: str, bcfg: Any, units: dict[int, list[str]]) -> list[Check]:
    """Read coil 0 of each unit once with the bus timeout and time it. RTU only when the port is free."""
    from pymodbus.exceptions import ModbusException

    from drivers.modbus_pdu import make_client, reason

    def each(status: Status, detail: str) -> list[Check]:
        return [
            Check(_unit_name(bus_id, u), status, f"{detail} ({', '.join(users)})")
            for u, users in units.items()
        ]

    if bcfg.type == "modbus_rtu":
        busy = await in_thread(lambda: port_free(bcfg.port), 5.0)
        if busy is not None:
            return each("fail", f"not probed: {bcfg.port} {busy}")
    client = make_client(bus_id, bcfg, lambda _sending, data: data)
    where = bcfg.port if bcfg.type == "modbus_rtu" else f"{bcfg.host}:{bcfg.port}"
    try:
        try:
            connected = await asyncio.wait_for(client.connect(), bcfg.timeout + 3.0)
        except (TimeoutError, OSError):
            connected = False
        if not connected:
            return each("fail", f"cannot open {where}")
        out = []
        for unit, users in units.items():
            name, on = _unit_name(bus_id, unit), f"({', '.join(users)})"
            t0 = time.perf_counter()
            try:
                resp = await asyncio.wait_for(
                    client.read_coils(0, count=1, device_id=unit), bcfg.timeout + 1.0
                )
            except (TimeoutError, ModbusException, OSError) as exc:
                why = reason(exc)
                why = "no answer" if why in ("timeout", "no response") else why
                out.append(Check(name, "fail", f"{why} within {bcfg.timeout:g} s on {where} {on}"))
                continue
            rtt = round((time.perf_counter() - t0) * 1e3, 1)
            data = {"bus": bus_id, "unit": unit, "rtt_ms": rtt}
            if resp.isError():
                text = f"answered in {rtt} ms with Modbus exception {resp.exception_code} (alive) {on}"
                out.append(Check(name, "ok", text, data))
            elif rtt > bcfg.probe_timeout_s * 1e3:
                text = (f"answered in {rtt} ms: slower than probe_timeout {bcfg.probe_timeout_s:g} s, so a "
                        f"failed poll is retried late; raise buses.{bus_id}.probe_timeout {on}")  # fmt: skip
                out.append(Check(name, "warn", text, data))
            else:
                out.append(Check(name, "ok", f"answered in {rtt} ms {on}", data))
        return out
    finally:
        client.close()


def _unit_name(bus_id: str, unit: int) -> str:
    return f"modbus {bus_id} unit {unit}"


# --- readers (no daemon) -----------------------------------------------------------------------


async def probe_reader(rid: str, rcfg: Any, lpr_listen: str | None) -> Check:
    name = f"reader {rid} ({rcfg.type})"
    try:
        if rcfg.type == "serial":
            busy = await in_thread(lambda: port_free(rcfg.port), 5.0)
            return (
                Check(name, "ok", f"{rcfg.port} opens")
                if busy is None
                else Check(name, "fail", f"{rcfg.port} {busy}")
            )
        if rcfg.type == "camera":
            return await in_thread(lambda: _camera_frame(name, rcfg.source), 15.0)
        if rcfg.type == "nfc":
            return await in_thread(lambda: _nfc_open(name, rcfg.device), 10.0)
        if rcfg.type == "lpr":
            where = f"the lpr listener {lpr_listen}" if lpr_listen else "the lpr listener"
            return Check(
                name, "ok", f"camera {rcfg.serialno} pushes to {where}; only the daemon sees its pushes"
            )
    except TimeoutError:
        return Check(name, "fail", "the device did not answer the probe in time (wedged driver or device?)")
    return Check(name, "warn", f"no offline probe for type {rcfg.type}: run with the daemon for its state")


def _camera_frame(name: str, source: int | str) -> Check:
    try:
        from drivers.camera_source import open_capture

        t0 = time.perf_counter()
        cap, why = open_capture(source)
    except ImportError as exc:
        return Check(name, "fail", f"OpenCV is not installed ({exc})")
    if cap is None:
        return Check(name, "fail", why or f"cannot open {source}")
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        return Check(name, "fail", f"{source} opened but gave no frame")
    ms = round((time.perf_counter() - t0) * 1e3)
    h, w = frame.shape[:2]
    return Check(name, "ok", f"{source}: a {w}x{h} frame in {ms} ms", {"width": w, "height": h})


def _nfc_open(name: str, device: str) -> Check:
    try:
        import nfc
    except ImportError as exc:
        return Check(name, "fail", f"nfcpy is not installed ({exc})")
    clf = nfc.ContactlessFrontend()
    try:
        opened = clf.open(device)
    except Exception as exc:  # nfcpy raises IOError and its own errors for busy / absent devices
        return Check(name, "fail", f"{device}: {exc or type(exc).__name__}")
    try:
        if not opened:
            return Check(
                name, "fail", f"no NFC reader found on {device} (plugged in? held by another process?)"
            )
        return Check(name, "ok", f"{device}: {clf.device or 'reader found'}")
    finally:
        clf.close()


def lpr_listener(listen: str) -> Check:
    """Without the daemon the listener's address must be free (another process there takes the pushes)."""
    host, _, port = listen.rpartition(":")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except (OSError, ValueError) as exc:
        why = "in use by another process" if getattr(exc, "errno", None) == 98 else str(exc)
        return Check("lpr listener", "fail", f"{listen}: {why}")
    return Check("lpr listener", "ok", f"{listen} is free for the daemon's listener")


# --- broker (no daemon) ------------------------------------------------------------------------


def broker(m: Any, gateway_id: str, timeout: float) -> Check:
    """Connect, TLS and log in as the config says; CONNACK decides. Its own client id, clean session."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    name = "cloud broker"
    where = f"{m.host}:{m.port}"
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{gateway_id}-doctor-{os.getpid()}",
                    protocol=paho.MQTTv5, reconnect_on_failure=False)  # fmt: skip
    if m.username is not None:
        c.username_pw_set(m.username, m.password)
    if m.tls is not None:
        for key in ("ca", "cert", "key"):
            path = getattr(m.tls, key)
            if path is not None and not os.access(path, os.R_OK):
                return Check(name, "fail", f"mqtt.tls.{key} {path} is missing or unreadable")
        try:
            tls = m.tls
            c.tls_set(ca_certs=str(tls.ca) if tls.ca else None, certfile=str(tls.cert) if tls.cert else None,
                      keyfile=str(tls.key) if tls.key else None, cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
        except (OSError, ValueError, ssl.SSLError) as exc:
            return Check(name, "fail", f"cannot set up TLS: {exc}")
        if m.tls.insecure_skip_hostname:
            c.tls_insecure_set(True)
    got: list[Any] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: got.append(rc)
    c.connect_timeout = timeout
    t0 = time.perf_counter()
    try:
        c.connect(m.host, m.port, keepalive=10, clean_start=True)
    except ssl.SSLCertVerificationError as exc:
        return Check(
            name, "fail", f"{where}: TLS certificate problem: {exc.verify_message or exc} (check mqtt.tls.ca)"
        )
    except ssl.SSLError as exc:
        return Check(name, "fail", f"{where}: TLS handshake failed: {exc.reason or exc} (check mqtt.tls.*)")
    except socket.gaierror as exc:
        return Check(name, "fail", f"cannot resolve {m.host!r}: {exc.strerror or exc}")
    except (OSError, ValueError) as exc:
        return Check(name, "fail", f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc}")
    try:
        deadline = time.monotonic() + timeout
        while not got and time.monotonic() < deadline:
            if c.loop(timeout=0.1) != paho.MQTT_ERR_SUCCESS:
                break
        if not got:
            hint = " (TLS: does the broker want a client certificate?)" if m.tls else ""
            return Check(name, "fail", f"{where}: no CONNACK within {timeout:g} s{hint}")
        rc = got[0]
        if rc.is_failure:
            hint = " (check mqtt.username / mqtt.password)" if rc.value in (0x86, 0x87, 0x8C) else ""
            return Check(name, "fail", f"{where}: broker refused the connection: {rc} ({rc.value}){hint}")
        ms = round((time.perf_counter() - t0) * 1e3)
        how = ["TLS" if m.tls else "no TLS", f"logged in as {m.username}" if m.username else "anonymous"]
        return Check(name, "ok", f"{where}: connected ({', '.join(how)}) in {ms} ms", {"connect_ms": ms})
    finally:
        with contextlib.suppress(Exception):
            c.disconnect()

"""Gateway configuration: one YAML file validated by pydantic, errors naming key path, file and line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from drivers.modbus import BusConfig
from drivers.registry import DEVICE_KINDS, READER_TYPES, SECTIONS, load_drivers
from edge.token_keys import public_key_from_b64
from edge.yaml_load import Lines, YamlProblem, load_yaml

MAX_BYTES = 256 * 1024  # a gateway config is a few KB; past this it is a wrong file, not a config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        """A NUL in a name or path passes YAML but breaks every system call later: refuse it here."""
        if isinstance(v, str | Path) and "\0" in str(v):
            raise ValueError("a NUL character is not allowed here")
        return v


class GatewaySection(_Strict):
    site: str = Field(min_length=1, description="site (community) id; tokens' `iss` must equal it")
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="gateway id; MQTT client id")
    timezone: str = Field("UTC", description="IANA zone of the site, for weekly windows")
    data_dir: Path = Field(Path("var"), description="whitelist, outbox, replay cache (relative: to config)")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a tzdata dir, a huge name
            raise ValueError(f"unknown time zone {v[:64]!r}") from exc
        return v


_TEN_YEARS_S = 10 * 365 * 86400  # a token lifetime past this is a typo, not a policy


class MaxLifetime(_Strict):
    resident: int = Field(300, gt=0, le=_TEN_YEARS_S)
    visitor: int = Field(7 * 86400, gt=0, le=_TEN_YEARS_S)
    staff: int = Field(86400, gt=0, le=_TEN_YEARS_S)


class LegacyEjyy(_Strict):
    """ejyy's own AES codes (edge/legacy_ejyy.py): anyone holding this key can forge them for anyone
    the whitelist admits, so they are off unless this section says ``enabled: true``."""

    enabled: bool = Field(description="required: true accepts ejyy AES codes (forgeable with the key)")
    key: str = Field(repr=False, description="ejyy config crypto.key as written there: 32 UTF-8 bytes")
    iv: str = Field(repr=False, description="ejyy config crypto.iv as written there: 16 UTF-8 bytes")
    max_age_s: int = Field(300, ge=1, le=86400, description="accepted this long after the code was minted")

    @field_validator("key", "iv")
    @classmethod
    def _length(cls, v: str, info: Any) -> str:
        size = 32 if info.field_name == "key" else 16  # aes-256-cbc, as ejyy's utils/crypto.ts
        if len(v.encode("utf-8")) != size:
            raise ValueError(f"must be {size} bytes in UTF-8 (aes-256-cbc), got {len(v.encode('utf-8'))}")
        return v


class TrustSection(_Strict):
    keys: dict[str, str] = Field(default_factory=dict, description="kid -> base64url Ed25519 public key")
    leeway_s: int = Field(5, ge=0, le=300)
    max_lifetime_s: MaxLifetime = Field(default_factory=MaxLifetime)
    require_clock_sync: bool = Field(
        True, description="deny time-bound credentials with clock_unsynced while the clock is unsynchronised"
    )
    legacy_ejyy: LegacyEjyy | None = Field(
        None, description="opt-in: accept e家宜业's legacy AES QR codes (docs/security.md: forgeable)"
    )

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for kid, key in v.items():
            try:
                public_key_from_b64(key)  # the trust policy's own decoder: refused here, not at start
            except ValueError as exc:
                raise ValueError(f"key {kid!r}: {exc}") from exc
        return v


class OutboxSection(_Strict):
    max_events: int = Field(3_000_000, ge=1000, description="bound on disk; oldest dropped only past it")
    flush_interval_s: float = Field(
        1.0, gt=0, le=60, description="fsync period: what a power cut can lose at most"
    )


class RateLimitSection(_Strict):
    denials: int = Field(10, ge=0, le=10_000, description="denials at one reader within window_s (0: off)")
    window_s: float = Field(60.0, gt=0, le=86400)
    cooldown_s: float = Field(60.0, ge=0, le=86400, description="every presentation there denied meanwhile")


class MqttTls(_Strict):
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure_skip_hostname: bool = False

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together (mutual TLS)")
        return self


class MqttSection(_Strict):
    host: str
    port: int = Field(1883, gt=0, lt=65536)
    username: str | None = None
    password: str | None = None
    tls: MqttTls | None = None
    keepalive_s: int = Field(5, ge=2, le=600, description="short, so a dead link is noticed in seconds")
    connect_timeout_s: float = Field(10.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    session_expiry_s: int = Field(7 * 86400, ge=60)
    health_interval_s: float = Field(30.0, gt=0, le=60)
    inflight: int = Field(20, ge=1, le=1000, description="event messages awaiting PUBACK at once")


class MetricsSection(_Strict):
    listen: str | None = Field(
        None, description="host:port of the Prometheus endpoint (e.g. 127.0.0.1:9108); none: off"
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        host, sep, port = (v or "").rpartition(":")
        if v is not None and (not sep or not host or not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError("listen must be host:port (e.g. 127.0.0.1:9108)")
        return v

    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, None when off."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ConfigBase(_Strict):
    """The core sections. Device, reader and extra sections come from the driver registry: the
    ``Config`` model below is built from it, so this file names no device kind."""

    gateway: GatewaySection
    trust: TrustSection = Field(default_factory=TrustSection)
    buses: dict[str, BusConfig] = Field(default_factory=dict)
    outbox: OutboxSection = Field(default_factory=OutboxSection)
    rate_limit: RateLimitSection = Field(default_factory=RateLimitSection)
    mqtt: MqttSection | None = None
    metrics: MetricsSection | None = None  # Prometheus endpoint, off unless `listen` is set
    log: dict[str, Any] = Field(default_factory=dict)

    # --- what the app and the CLI ask of any config --------------------------------------
    def devices(self) -> Iterator[tuple[str, str, Any]]:
        """(section, device id, config model) of every device of every registered kind."""
        for section in DEVICE_KINDS:
            for dev_id, dev in (getattr(self, section, None) or {}).items():
                yield section, dev_id, dev

    def reader_models(self) -> dict[str, Any]:
        return dict(getattr(self, "readers", None) or {})

    def section(self, name: str) -> Any:
        """An extra section's model (e.g. ``fire``), None when absent."""
        return getattr(self, name, None)

    def reader_device(self) -> dict[str, str]:
        """reader id -> device id (a reader serves exactly one device)."""
        out: dict[str, str] = {}
        for _section, dev_id, dev in self.devices():
            for rid in getattr(dev, "readers", None) or ():
                out[rid] = dev_id
        return out

    # --- cross-references, for every kind alike ------------------------------------------
    @model_validator(mode="after")
    def _references(self) -> ConfigBase:
        seen: dict[str, tuple[Any, ...]] = {}
        serving: dict[str, tuple[Any, ...]] = {}
        readers = self.reader_models()
        for section, dev_id, dev in self.devices():
            loc = (section, dev_id)
            if dev_id in seen:
                raise _RefError(loc, f"device id {dev_id!r} is already used by {{other}}", other=seen[dev_id])
            seen[dev_id] = loc
            for key, bus in _bus_refs(dev):
                if bus not in self.buses:
                    raise _RefError((*loc, *key), f"no bus {bus!r} in buses")
            for i, rid in enumerate(getattr(dev, "readers", None) or ()):
                if rid not in readers:
                    raise _RefError((*loc, "readers", i), f"no reader {rid!r} in readers")
                if rid in serving:
                    msg = f"reader {rid!r} already serves {{other}}"
                    raise _RefError((*loc, "readers", i), msg, other=serving[rid], shown=2)
                serving[rid] = (*loc, "readers", i)
        for name in SECTIONS:
            sec = self.section(name)
            for key, bus in _bus_refs(sec) if sec is not None else []:
                if bus not in self.buses:
                    raise _RefError((name, *key), f"no bus {bus!r} in buses")
            refs = getattr(sec, "device_refs", None)
            for key, dev_id in refs() if callable(refs) else []:
                if dev_id not in seen:
                    raise _RefError((name, *key), f"no device {dev_id!r} (devices: {', '.join(seen) or 'none'})")
        self._one_driver_per_output()
        return self

    def _one_driver_per_output(self) -> None:
        """Two devices on one relay output would cut each other's release: refuse, in every device
        section (any dict of models that list their `outputs()`), not only doors."""
        driven: dict[tuple[str, int, int], tuple[Any, ...]] = {}
        for section, dev_id, dev in self.devices():
            outputs = getattr(dev, "outputs", None)
            for bus, unit, coil, key in outputs() if callable(outputs) else []:
                loc = (section, dev_id, *(key if isinstance(key, tuple) else (key,)))
                first = driven.setdefault((bus, unit, coil), loc)
                if first != loc:
                    msg = f"relay bus {bus!r} unit {unit} coil {coil} is already driven by {{other}}"
                    raise _RefError(loc, msg, other=first)


def _bus_refs(model: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(key path, bus id) of every bus a model names: its own ``bus_refs()`` or its ``bus`` field."""
    refs = getattr(model, "bus_refs", None)
    if callable(refs):
        return list(refs())
    bus = getattr(model, "bus", None)
    return [(("bus",), bus)] if isinstance(bus, str) else []


def _build_config_model() -> type[ConfigBase]:
    """``Config``: the core sections plus one per registered device kind, reader type and section."""
    load_drivers()
    fields: dict[str, Any] = {}
    for kind in DEVICE_KINDS.values():
        fields[kind.section] = (dict[str, kind.model], Field(default_factory=dict))  # type: ignore[name-defined]
    models = tuple(r.model for r in READER_TYPES.values())
    if models:
        union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007 - a runtime tuple
        reader = Annotated[union, Field(discriminator="type")]  # type: ignore[valid-type]
        fields["readers"] = (dict[str, reader], Field(default_factory=dict))  # type: ignore[valid-type]
    for sec in SECTIONS.values():
        fields[sec.name] = (sec.model | None, None)
    return create_model("Config", __base__=ConfigBase, **fields)


Config = _build_config_model()


class _RefError(ValueError):
    """A cross-reference problem at key path `loc`; `other` is the key path it clashes with, if any.

    A clash is reported at the later of the two lines, naming the earlier one: the same message
    whatever order the driver registry lists the sections in. `msg` names the other as ``{other}``,
    shown by its first `shown` keys (all when None)."""

    def __init__(
        self, loc: tuple[Any, ...], msg: str, other: tuple[Any, ...] | None = None, shown: int | None = None
    ) -> None:
        super().__init__(msg if other is None else msg.format(other=_key_text(other[:shown])))
        self.loc, self.other, self.msg, self.shown = loc, other, msg, shown

    def located(self, lines: Lines) -> tuple[tuple[Any, ...], str]:
        """(key path to report at, message) with the line of the other key path."""
        if self.other is None:
            return self.loc, self.msg
        loc, other = self.loc, self.other
        if (_line_for(other, lines) or 0) > (_line_for(loc, lines) or 0):
            loc, other = other, loc
        text = self.msg.format(other=_key_text(other[: self.shown]))
        return loc, f"{text} (line {_line_for(other, lines)})"


class ConfigError(Exception):
    """A config problem, each line naming file:line, key path and what is wrong."""

    def __init__(self, path: Path, problems: list[tuple[int | None, str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for line, key, msg in self.problems:
            where = f"{self.path}:{line}" if line else str(self.path)
            lines.append(f"{where}: {key or '(top)'}: {msg}")
        return "\n".join(lines)


# --- loading ----------------------------------------------------------------------------


def _line_for(loc: tuple[Any, ...], lines: Lines) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds the union tag (e.g. 'modbus_rtu') into the location: drop what is not in the YAML.
    tags = {"modbus_rtu", "modbus_tcp", *READER_TYPES}
    return tuple(p for p in loc if not (isinstance(p, str) and p in tags))


def _key_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc[:12]:  # a path past 12 levels is a nesting error: its start says where
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    if len(loc) > 12:
        out += "..."
    return out


def parse_config(text: str, path: Path) -> Config:
    try:
        data, lines = load_yaml(text)
    except YamlProblem as exc:
        raise ConfigError(path, [(line, _key_text(loc), msg) for line, loc, msg in exc.problems]) from None
    if not isinstance(data, dict):
        raise ConfigError(path, [(1, "", "the file must be a YAML mapping with a `gateway` section")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            ctx_err = (err.get("ctx") or {}).get("error")
            msg = err["msg"].removeprefix("Value error, ")
            if isinstance(ctx_err, _RefError):
                loc, msg = ctx_err.located(lines)
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?)"
            problems.append((_line_for(loc, lines), _key_text(loc), msg))
        raise ConfigError(path, problems) from None
    if not cfg.gateway.data_dir.is_absolute():
        cfg.gateway.data_dir = (path.parent / cfg.gateway.data_dir).resolve()
    for reader in cfg.reader_models().values():
        resolve = getattr(reader, "resolve_paths", None)
        if callable(resolve):
            resolve(path.parent)  # its own relative paths (a camera's file source) follow the config file
        if hasattr(reader, "port") and not Path(reader.port).is_absolute():
            reader.port = os.path.abspath(path.parent / reader.port)  # never follow links: udev's move
    for bus in cfg.buses.values():
        if bus.type == "modbus_rtu" and not Path(bus.port).is_absolute():
            bus.port = os.path.abspath(path.parent / bus.port)
    if cfg.mqtt and cfg.mqtt.tls:
        for name in ("ca", "cert", "key"):
            p = getattr(cfg.mqtt.tls, name)
            if p is not None and not p.is_absolute():
                setattr(cfg.mqtt.tls, name, (path.parent / p).resolve())
    return cfg


def _read_text(path: Path) -> str:
    """The file as text: bounded in size before it is read whole, UTF-8 or the line of the bad byte."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, [(None, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_BYTES:
        msg = f"larger than {MAX_BYTES // 1024} KiB, the limit for a config file (one is a few KB)"
        raise ConfigError(path, [(None, "", msg)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - raw.rfind(b"\n", 0, exc.start)
        msg = f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {col} ({exc.reason}); save the file as UTF-8"
        raise ConfigError(path, [(line, "", msg)]) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    return parse_config(_read_text(path), path)

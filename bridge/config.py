"""The bridge's config model (`edge-bridge run -c bridge.yaml`): which ejyy rows feed which gateway.

A gateway serves one ejyy community; each of its devices is one ejyy device row (entrance,
elevator or park) and a zone of that gateway. Residents get the zones of the devices that serve
their houses' buildings (``buildings`` empty = the whole community), so the mapping lives here,
not in ejyy, which has no notion of zones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DbConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = "ejyy"
    unix_socket: str | None = None


class MqttConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    client_id: str | None = None  # default: edge-bridge-<random>, one per instance
    share_group: str = "ejyy-bridge"  # instances in one group split the event stream


class DeviceConfig(_Strict):
    kind: Literal["entrance", "elevator", "park"]
    ejyy_id: int  # id in ejyy_iot_entrance / ejyy_iot_elevator / ejyy_iot_park
    zone: str
    buildings: list[int] = Field(default_factory=list)  # ejyy_building_info ids; empty = all
    floors: dict[int, list[int]] = Field(default_factory=dict)  # elevator: building id -> floors
    gate: str | None = None  # park: ejyy_iot_park_log.gate (default: the device name)


class GatewayConfig(_Strict):
    site: str | None = None  # default: the bridge's site
    community_id: int
    devices: dict[str, DeviceConfig]
    # Entries that admit e家宜业's old AES codes (edge/legacy_ejyy.py): only for a community that opted
    # in (trust.legacy_ejyy on its gateways) while it migrates; those codes are forgeable by key holders.
    legacy_codes: bool = False


class CodesConfig(_Strict):
    listen: str | None = None  # host:port of the HTTP endpoint; None = off
    api_token: str | None = None  # required bearer token when listening
    resident_ttl_s: int = Field(60, ge=5, le=300)
    visitor_max_s: int = Field(86400, ge=60, le=604800)


class BridgeConfig(_Strict):
    site: str
    db: DbConfig = Field(default_factory=DbConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    signing_key: Path  # JSON {"kid", "private"} as written by `edge cloud keygen`
    poll_s: float = Field(1.0, gt=0)  # cheap change probe (fingerprint) per gateway
    full_diff_s: float = Field(30.0, gt=0)  # full rebuild + key-set diff even without a change
    snapshot_part: int = Field(10_000, ge=1)
    visitor_grace_s: int = 0  # keep expired visitors this long (the gateway denies them anyway)
    batch_max: int = Field(200, ge=1)  # events messages per database transaction
    codes: CodesConfig = Field(default_factory=CodesConfig)
    gateways: dict[str, GatewayConfig]

    @model_validator(mode="after")
    def _unique_devices(self) -> BridgeConfig:
        seen: dict[tuple[str, int], str] = {}
        for gw, g in self.gateways.items():
            for name, d in g.devices.items():
                key = (d.kind, d.ejyy_id)
                if key in seen:
                    raise ValueError(f"{d.kind} {d.ejyy_id} is served twice ({seen[key]}, {gw}/{name})")
                seen[key] = f"{gw}/{name}"
        return self

    def site_of(self, gateway: str) -> str:
        return self.gateways[gateway].site or self.site

    def root(self, gateway: str) -> str:
        return f"edge/v1/{self.site_of(gateway)}/{gateway}"

    def gateway_of_topic(self, topic: str) -> str | None:
        """``edge/v1/{site}/{gw}/...`` -> gw when it is one of ours (and of that site)."""
        parts = topic.split("/")
        if len(parts) < 5 or parts[:2] != ["edge", "v1"]:
            return None
        gw = parts[3]
        return gw if gw in self.gateways and self.site_of(gw) == parts[2] else None

    def device_by_ejyy(self, kind: str, ejyy_id: int) -> tuple[str, str] | None:
        for gw, g in self.gateways.items():
            for name, d in g.devices.items():
                if d.kind == kind and d.ejyy_id == ejyy_id:
                    return gw, name
        return None


def load_config(path: Path | str) -> BridgeConfig:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    cfg = BridgeConfig.model_validate(data)
    if not cfg.signing_key.is_absolute():
        cfg.signing_key = (Path(path).parent / cfg.signing_key).resolve()
    return cfg

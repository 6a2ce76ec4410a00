"""The one small interface every device kind (door, barrier, elevator, ...) implements.

edge/app.py and the cloud commands dispatch through it and never branch on a kind: a grant calls
``grant``, a remote action calls ``act``, the fire linkage calls ``fire``, health reads ``online``.
Each kind lives in its own module in ``drivers/`` with its pydantic config model and registers itself
(drivers/registry.py). Safety is part of the contract: ``start`` and ``stop`` leave every output in its
safe state and switch nothing on (unless the fire state says so at start), ``stop`` releases nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from edge.engine import DeviceContext
from edge.model import Decision, Method, Result

if TYPE_CHECKING:
    from drivers.inputs import InputHub, ScopedInputs
    from drivers.modbus_bus import ModbusBus


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An event a device reports on its own (an alarm, an input change); the app adds id and time and
    commits it to the outbox."""

    device: str
    method: Method
    result: Result
    reason: str
    credential: str = ""
    subject: str | None = None
    reader: str | None = None
    direction: str | None = None
    floors: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """A granted presentation or command for a device to act on. ``decision.floors`` are the floors
    the credential allows (elevators intersect them with the car's); ``seconds`` overrides how long a
    remote grant lasts; ``key`` identifies the credential for per-credential state (passback)."""

    decision: Decision
    method: Method
    reader: str | None = None
    key: str | None = None
    seconds: float | None = None
    t_in: float = 0.0  # time.perf_counter() of the presentation's last byte (latency accounting)


@dataclass
class DeviceEnv:
    """What the app hands every device: the buses, the shared board inputs, and the event sink."""

    buses: Mapping[str, ModbusBus]
    inputs: InputHub | ScopedInputs  # devices get a ScopedInputs (its watches go with it on rebuild)
    emit: Callable[[EventSpec], None]
    state_dir: Any = None  # pathlib.Path of the data dir, for kinds that persist state
    extra: dict[str, Any] = field(default_factory=dict)


class Device(ABC):
    """Base of every device kind. Subclasses set ``kind`` and ``actions`` and implement the methods."""

    kind: ClassVar[str] = "device"
    actions: ClassVar[frozenset[str]] = frozenset()  # remote actions (mqtt.md `act`) it supports

    def __init__(self, device_id: str, cfg: Any, env: DeviceEnv) -> None:
        self.device_id = device_id
        self.cfg = cfg
        self.env = env

    # --- identity, for the app and the engine -----------------------------------------------
    @property
    def zone(self) -> str:
        return str(self.cfg.zone)

    @property
    def readers(self) -> tuple[str, ...]:
        return tuple(getattr(self.cfg, "readers", ()) or ())

    @property
    @abstractmethod
    def online(self) -> bool:
        """Whether every board it needs answers."""

    @property
    def error(self) -> str | None:
        return None

    def context(self, key: str | None = None) -> DeviceContext:
        """The plain values the decision engine needs about this device; ``key`` ("card:04A1...") names
        the credential, for per-credential state such as a barrier's anti-passback."""
        return DeviceContext(self.device_id, self.zone, "normal", self.online)

    def units(self) -> set[tuple[str, int]]:
        """(bus id, unit) of every board it drives or reads: the app maps board health to devices."""
        return set()

    def inputs(self) -> dict[str, tuple[str, int, int]]:
        """The board inputs it watches, by role: role -> (bus id, unit, discrete input). Kinds register
        their watches from this at start, so it is what they actually read."""
        return {}

    def input_states(self) -> dict[str, bool | None]:
        """Each watched input's last debounced value, for `edge status` (None: not read yet)."""
        return {role: self.env.inputs.value(*where) for role, where in self.inputs().items()}

    def actuation_timeout_s(self) -> float:
        """The longest a grant may wait for its outputs before it counts as failed."""
        return 3.0

    # --- lifecycle --------------------------------------------------------------------------
    @abstractmethod
    async def start(self, *, fire: bool = False) -> None:
        """Outputs to their safe state (or, with ``fire``, straight to the fire release)."""

    @abstractmethod
    async def stop(self) -> None:
        """Outputs to their safe state; releases nothing, never moves a barrier down."""

    # --- acting -------------------------------------------------------------------------------
    @abstractmethod
    async def grant(self, grant: Grant) -> None:
        """Act on a grant. Raises DeviceUnavailable (or TimeoutError) when it could not."""

    async def act(self, action: str, args: Mapping[str, Any]) -> str | None:
        """A remote action of ``actions``: None when done, else an error code (mqtt.md)."""
        return "unsupported"

    def action_facts(self, action: str, args: Mapping[str, Any], error: str | None) -> dict[str, Any]:
        """The optional event fields (mqtt.md ``direction``, ``floors``) of a remote or local action's
        event, so a remote open at a barrier says which way it let a vehicle through like a card does."""
        direction = self.context().direction
        return {} if direction is None else {"direction": direction}

    async def fire(self, active: bool) -> None:  # noqa: B027 - a kind without outputs does nothing
        """Fire linkage: release (``active``) or restore normal operation."""

    def status(self) -> dict[str, Any]:
        """Kind-specific state for `edge status` (mode, arm position, floors enabled...)."""
        return {"kind": self.kind}


@dataclass
class ServiceEnv(DeviceEnv):
    """A section service (the fire linkage, the plate-camera listener) also sees every device and
    reader by id."""

    devices: Mapping[str, Device] = field(default_factory=dict)
    readers: Mapping[str, Any] = field(default_factory=dict)


class Service:
    """A section that is not a device collection (``fire``): it may be a command target by ``name``."""

    name: ClassVar[str] = "service"
    actions: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cfg: Any, env: ServiceEnv) -> None:
        self.cfg = cfg
        self.env = env

    def holds(self, device_id: str) -> bool:
        """Whether the device must start in its released state (a fire on at start-up)."""
        return False

    async def start(self) -> None:
        """After the first read of every board, before any device is driven."""

    async def started(self) -> None:
        """After every device has started."""

    async def stop(self) -> None:
        """At shutdown (state that must survive a restart is kept on disk)."""

    async def act(self, action: str, args: Mapping[str, Any]) -> str | None:
        return "unsupported"

    def status(self) -> dict[str, Any]:
        return {}

"""Elevator commands (elevator_call, elevator_grant): no elevator driver exists yet, so every
elevator command is refused as ``unsupported`` rather than pretending to have done it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.tokens import CommandClaims

if TYPE_CHECKING:
    from edge.cloud.commands import CommandContext


async def run(ctx: CommandContext, c: CommandClaims) -> str | None:
    return "unsupported"

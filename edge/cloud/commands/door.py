"""`open` (a door or a barrier) and the door modes `hold_open`, `lock`, `normal` (also the manual
reset of a fire when addressed to the `fire` target): dispatched to the target's Device.act."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.tokens import CommandClaims

if TYPE_CHECKING:
    from edge.cloud.commands import CommandContext


async def run(ctx: CommandContext, c: CommandClaims) -> str | None:
    return await ctx.gate.act(c.target, c.act, c.args())

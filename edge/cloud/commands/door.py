"""Door / barrier commands: open (a pulse) and the door modes hold_open, lock, normal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.tokens import CommandClaims

if TYPE_CHECKING:
    from edge.cloud.commands import CommandContext


async def open_(ctx: CommandContext, c: CommandClaims) -> str | None:
    return await ctx.gate.remote_open(c.target, c.by)


async def set_mode(ctx: CommandContext, c: CommandClaims) -> str | None:
    mode = c.act
    if mode not in ("hold_open", "lock", "normal"):
        return "unsupported"
    return await ctx.gate.set_mode(c.target, mode)

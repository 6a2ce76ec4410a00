"""`elevator_call` (`floor`: pulse that floor's hall call) and `elevator_grant` (`floors` for
`seconds`): dispatched to the target's Device.act; a target that is no elevator refuses them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.tokens import CommandClaims

if TYPE_CHECKING:
    from edge.cloud.commands import CommandContext


async def run(ctx: CommandContext, c: CommandClaims) -> str | None:
    return await ctx.gate.act(c.target, c.act, c.args())

"""`elevator_call` (`floor`: pulse that floor's hall call) and `elevator_grant` (`floors` for
`seconds`): dispatched to the target's Device.act; a target that is no elevator refuses them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.tokens import CommandClaims

if TYPE_CHECKING:
    from edge.cloud.commands import CommandContext


def args_of(c: CommandClaims) -> dict[str, Any]:
    """The action arguments of a command: what the device acts on and what its event reports."""
    return {"floor": c.floor, "floors": c.floors, "seconds": c.seconds, "by": c.by}


async def run(ctx: CommandContext, c: CommandClaims) -> str | None:
    return await ctx.gate.act(c.target, c.act, args_of(c))

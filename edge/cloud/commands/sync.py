"""The `sync` command: publish R/sync/request now (the gateway's whole whitelist is re-checked)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.tokens import CommandClaims

if TYPE_CHECKING:
    from edge.cloud.commands import CommandContext


async def run(ctx: CommandContext, c: CommandClaims) -> str | None:
    ctx.request_sync()
    return None

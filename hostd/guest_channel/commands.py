"""What hostd asks of the guest agent: a full report, a ping, a shutdown or a reboot.

A command goes out once a version is agreed; its answer (a pong, a
CommandResult matched by the command's sequence number) is awaited within a
deadline. When the channel closes, every command still waiting fails with
AgentUnavailable.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from virtplane.v1 import guest_channel_pb2 as gc

from hostd import guest_info
from hostd.config import ChannelLimits
from hostd.errors import AgentRefused, AgentUnavailable
from hostd.guest_channel.facts import GuestFacts
from hostd.guest_channel.socket_loop import SocketLoop


class GuestCommands:
    """The commands of one channel, and the answers awaited."""

    def __init__(
        self,
        limits: ChannelLimits,
        loop: SocketLoop,
        facts: GuestFacts,
        agreed: Callable[[], bool],
        monotonic: Callable[[], float],
    ) -> None:
        """agreed: whether a version is agreed with the agent now."""
        self._limits = limits
        self._loop = loop
        self._facts = facts
        self._agreed = agreed
        self._monotonic = monotonic
        self._pending: dict[int, asyncio.Future[gc.CommandResult]] = {}
        self._pongs: dict[bytes, asyncio.Future[None]] = {}

    @property
    def _vm_id(self) -> str:
        return self._facts.vm_id

    async def refresh(self) -> None:
        """Asks the agent for a full report; it arrives like any other."""
        await self._send(gc.HostMessage(refresh=gc.Refresh()))

    async def ping(self, within: float) -> float:
        """Round trip to the agent, in seconds."""
        payload = secrets.token_bytes(8)
        pong = asyncio.get_running_loop().create_future()
        self._pongs[payload] = pong
        start = self._monotonic()
        try:
            await self._send(gc.HostMessage(ping=gc.Ping(payload=payload)))
            await asyncio.wait_for(pong, within)
        except TimeoutError:
            raise AgentUnavailable(self._vm_id, f"no pong within {within:g} s") from None
        finally:
            self._pongs.pop(payload, None)
        return self._monotonic() - start

    async def power(self, action: str, delay_seconds: int, message: str, within: float) -> None:
        """Asks the agent to shut down ("shutdown") or reboot ("reboot") the
        guest; returns once the agent accepted, raises AgentUnavailable or
        AgentRefused otherwise."""
        if action == "shutdown":
            command = gc.HostMessage(
                shutdown=gc.Shutdown(delay_seconds=delay_seconds, message=message)
            )
        else:
            command = gc.HostMessage(reboot=gc.Reboot(delay_seconds=delay_seconds, message=message))
        result = asyncio.get_running_loop().create_future()
        sequence = await self._send(command, result)
        try:
            answer = await asyncio.wait_for(result, within)
        except TimeoutError:
            raise AgentUnavailable(
                self._vm_id, f"no answer to {action} within {within:g} s"
            ) from None
        finally:
            self._pending.pop(sequence, None)
        if not answer.accepted:
            raise AgentRefused(self._vm_id, action, answer.error)

    async def _send(
        self,
        message: gc.HostMessage,
        result: asyncio.Future[gc.CommandResult] | None = None,
    ) -> int:
        if not self._loop.connected or not self._agreed():
            raise AgentUnavailable(self._vm_id, "the agent is not connected")
        sequence = self._loop.post(message)
        if result is not None:
            self._pending[sequence] = result
        await self._loop.flush()
        return sequence

    def on_pong(self, message: gc.GuestMessage, received: int) -> None:
        self._facts.seen(received)
        waiter = self._pongs.get(message.pong.payload)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_command_result(self, message: gc.GuestMessage, received: int) -> None:
        answer = gc.CommandResult()
        answer.CopyFrom(message.command_result)
        answer.error = guest_info.clean_text(answer.error, self._limits.max_string)
        waiter = self._pending.get(answer.command_sequence)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def fail_waiting(self) -> None:
        """The channel closed: every command still waiting fails."""
        waiters: list[asyncio.Future[Any]] = [*self._pending.values(), *self._pongs.values()]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(AgentUnavailable(self._vm_id, "the channel closed"))
        self._pending.clear()
        self._pongs.clear()

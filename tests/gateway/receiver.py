"""A real HTTP server on a free loopback port that records the callbacks it receives and answers
with scripted status codes (then 200)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sagaway.cli.gateway import _Server
from tests.harness.waiting import eventually
from tests.servers.tansu import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str


@dataclass
class CallbackReceiver:
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: Request) -> Response:
        self.received.append(
            Received(dict(request.headers), await request.body(), request.url.path)
        )
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Location": self.url("/elsewhere")} if 300 <= status < 400 else None
        return Response(status_code=status, headers=headers)

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        await eventually(
            lambda: len(self.received) >= count,
            timeout_s=timeout_s,
            what=f"{count} callbacks at {self.url()}",
            interval_s=0.01,
        )


async def start_receiver(receiver: CallbackReceiver) -> tuple[_Server, asyncio.Task[None]]:
    receiver.port = receiver.port or free_port()
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    server = _Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    await eventually(  # uvicorn exposes `started` as a flag, not an event
        lambda: server.started, timeout_s=5, what="the receiver to listen", interval_s=0.01
    )
    return server, task


async def stop_receiver(server: _Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await task

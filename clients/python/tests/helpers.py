"""asyncio helpers for the tests: a run() with a deadline, condition waits,
an event collector and a loopback TCP proxy whose connections can be cut."""

import asyncio
from typing import Awaitable, Callable, List, Union

from switchyard import Client, Event, Gap

TIMEOUT = 60.0  # generous: the machine may be loaded


def run(coro: Awaitable, timeout: float = 120.0):
    """Run a test's coroutine on a fresh event loop, failing past timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(cond: Callable[[], Union[bool, Awaitable[bool]]], timeout: float = TIMEOUT, what: str = "") -> None:
    """Wait until cond() (sync or async) is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = cond()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


class Collector:
    """Consumes a client's events() in a task and keeps what came."""

    def __init__(self, client: Client) -> None:
        self.items: List[Union[Event, Gap]] = []
        self.task = asyncio.ensure_future(self._consume(client))

    async def _consume(self, client: Client) -> None:
        async for item in client.events():
            self.items.append(item)

    @property
    def events(self) -> List[Event]:
        return [i for i in self.items if isinstance(i, Event)]

    @property
    def messages(self) -> List[str]:
        return [e.message for e in self.events]

    async def wait_for(self, n: int, timeout: float = TIMEOUT) -> List[Event]:
        """Wait for at least n events; fails if the stream ended first."""
        await until(lambda: len(self.events) >= n or self.task.done(), timeout, f"{n} events (have {len(self.events)})")
        if self.task.done() and len(self.events) < n:
            self.task.result()  # raises what ended the stream
            raise AssertionError(f"the stream ended after {len(self.events)} events")
        return self.events

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


async def in_session(client: Client, session: str, participant: str, url: str = None) -> bool:
    """Whether the node (url, else the client's) lists participant as an
    online member of session."""
    try:
        body = await client.request("GET", f"/v1/gateway/sessions/{session}", url=url)
    except Exception:
        return False
    return any(p.get("participant_id") == participant and p.get("online") is True for p in body.get("participants", []))


class Proxy:
    """A loopback TCP proxy. cut() kills every connection, as a network
    failure would; while refusing, new connections are closed at once;
    while swallowing, what the server sends is dropped (kept in swallowed)
    instead of reaching the client, as on a link that went dead silently."""

    def __init__(self, target_url: str) -> None:
        host, port = target_url.split("://", 1)[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.refusing = False
        self.swallowing = False
        self.swallowed = bytearray()
        self.server = None
        self.writers: List[asyncio.StreamWriter] = []
        self.tasks: List[asyncio.Task] = []

    async def __aenter__(self) -> "Proxy":
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        self.cut()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers += [writer, up_writer]
        self.tasks += [asyncio.ensure_future(self._pipe(reader, up_writer)),
                       asyncio.ensure_future(self._pipe(up_reader, writer, downstream=True))]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream=False) -> None:
        try:
            while data := await reader.read(65536):
                if downstream and self.swallowing:
                    self.swallowed += data
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

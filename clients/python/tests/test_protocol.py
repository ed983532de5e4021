"""The client against scripted WebSocket servers on loopback: the frames and
close codes a real node sends only under faults (4000, 1001, a restarted
numbering, a replayed duplicate, unknown frames), checked one by one."""

import asyncio
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pytest
import websockets

from helpers import TIMEOUT, Collector, run
from switchyard import AttachRefused, Client, Event, Gap, NotAnswered

FAST = dict(min_backoff=0.01, max_backoff=0.05)


@dataclass
class Conn:
    server: str
    ws: Any
    query: dict
    authorization: str
    done: asyncio.Future

    async def send(self, *frames: dict) -> None:
        """Send frames as one message (newline-separated, as batch=1 does)."""
        await self.ws.send("\n".join(json.dumps(f) for f in frames))

    async def recv(self) -> dict:
        return json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))

    async def close(self, code: int) -> None:
        await self.ws.close(code, "scripted")
        self.done.set_result(None)


class Servers:
    """Scripted servers; each connection is handed to the test to drive."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.conns: asyncio.Queue = asyncio.Queue()
        self.servers = {}
        self.all = []

    async def __aenter__(self) -> "Servers":
        for name in self.names:
            self.servers[name] = await websockets.serve(self._handler(name), "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self.all:  # let every handler return
            if not c.done.done():
                c.done.set_result(None)
        for s in self.servers.values():
            s.close()
            await s.wait_closed()

    def url(self, name: str) -> str:
        host, port = list(self.servers[name].sockets)[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def _handler(self, name: str):
        async def handle(ws):
            request = getattr(ws, "request", None)  # websockets >= 14
            path = ws.path if request is None else request.path
            headers = ws.request_headers if request is None else request.headers
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            done = asyncio.get_running_loop().create_future()
            conn = Conn(name, ws, query, headers.get("Authorization", ""), done)
            self.all.append(conn)
            await self.conns.put(conn)
            await done
        return handle

    async def next(self) -> Conn:
        return await asyncio.wait_for(self.conns.get(), TIMEOUT)


def welcome(seq: int = 0, resumed: bool = False) -> dict:
    return {"type": "welcome", "participant_id": "bob", "node": "n", "sessions": ["s1"], "seq": seq,
            "resumed": resumed}


def event(seq: int) -> dict:
    return {"type": "event", "seq": seq, "event_id": f"e{seq}", "session_id": "s1",
            "event": {"sender_id": "alice", "sender_type": "ai", "event_type": "message", "message": str(seq)}}


def test_reconnects_resumes_rotates_and_acks():
    """Batched frames are split; a replayed duplicate and unknown or error
    frames are not handed over; 4000, 1001 and 1000 each lead to a
    reconnect to the next URL with resume_from = the last seq (a gap counts
    as received); acks are cumulative; a welcome with a lower seq (the
    numbering restarted) resets the position."""

    async def main():
        async with Servers("a", "b") as srv, \
                Client(srv.url("a"), token="tok", participant_id="bob", sessions=["s1"], also_urls=[srv.url("b")],
                       ack=True, batch=True, **FAST) as bob:
            col = Collector(bob)

            c = await srv.next()
            assert (c.server, c.authorization) == ("a", "Bearer tok")
            assert c.query == {"participant_id": ["bob"], "participant_type": ["ai"], "session_id": ["s1"],
                               "batch": ["1"]}
            await c.send(welcome(), event(1), event(2))
            await c.send(event(2), {"type": "from_the_future"}, {"type": "error", "code": "x", "detail": "y"})
            await col.wait_for(2)
            while (await c.recv()) != {"type": "ack", "seq": 2}:
                pass
            await c.close(4000)

            c = await srv.next()
            assert (c.server, c.query["resume_from"]) == ("b", ["2"])
            await c.send(welcome(5, True), {"type": "gap", "from_seq": 3, "to_seq": 4}, event(5))
            await col.wait_for(3)
            await c.close(1001)

            c = await srv.next()
            assert (c.server, c.query["resume_from"]) == ("a", ["5"])
            await c.send(welcome(5, True), event(6))
            await col.wait_for(4)
            await c.close(1000)

            c = await srv.next()
            assert (c.server, c.query["resume_from"]) == ("b", ["6"])
            await c.send(welcome(1), event(2))  # this participant's numbering restarted
            await col.wait_for(5)
            while (await c.recv())["seq"] != 2:
                pass
            assert bob.last_seq == 2
            await col.stop()

            assert col.items == [Event(1, "e1", "s1", event(1)["event"]), Event(2, "e2", "s1", event(2)["event"]),
                                 Gap(3, 4), Event(5, "e5", "s1", event(5)["event"]),
                                 Event(6, "e6", "s1", event(6)["event"]), Event(2, "e2", "s1", event(2)["event"])]

    run(main())


def test_a_policy_close_stops_the_client():
    """Close 1008 ends events() with AttachRefused and no second attempt;
    a socket submit pending at that moment gets the same error."""

    async def main():
        async with Servers("a") as srv, Client(srv.url("a"), participant_id="bob", **FAST) as bob:
            col = Collector(bob)
            c = await srv.next()
            await c.send(welcome())
            submit = asyncio.ensure_future(bob.submit_over_socket({"event_type": "message", "session_id": "s1"}))
            assert (await c.recv())["type"] == "submit"
            await c.close(1008)
            with pytest.raises(AttachRefused) as err:
                await asyncio.wait_for(col.task, TIMEOUT)
            assert err.value.status == 1008
            with pytest.raises(NotAnswered):
                await submit
            assert srv.conns.empty()

    run(main())


def test_frames_of_the_wrong_shape_are_skipped():
    """A node (or something in between) sending JSON of the wrong shape --
    null, an array, a string seq -- must not end the stream: such frames are
    skipped, as the Go client skips what does not decode."""

    async def main():
        async with Servers("a") as srv, Client(srv.url("a"), participant_id="bob", **FAST) as bob:
            col = Collector(bob)
            c = await srv.next()
            await c.ws.send("\n".join([json.dumps(welcome()), "null", "[1]", '"x"',
                                       json.dumps({"type": "event", "seq": "x"}),
                                       json.dumps({"type": "gap", "from_seq": None, "to_seq": 3}),
                                       json.dumps({"type": "event", "seq": 1, "event": "not an object"}),
                                       json.dumps(event(1))]))
            await col.wait_for(1)
            await c.send(event(2))
            await col.wait_for(2)
            await col.stop()
            assert col.items == [Event(1, "e1", "s1", event(1)["event"]), Event(2, "e2", "s1", event(2)["event"])]

    run(main())

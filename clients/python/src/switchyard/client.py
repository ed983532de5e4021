"""An asyncio client for Switchyard participants.

It attaches over a WebSocket, reconnects with exponential backoff and full
jitter (trying the next node URL each time), resumes from the last seq it
received so that nothing inside the mailbox window is lost or repeated,
optionally acknowledges, and submits events over REST or over the socket.
It behaves like the Go package ``client`` of the same repository.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import random
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, TypedDict, Union

import websockets

__all__ = [
    "AttachRefused",
    "Client",
    "Event",
    "Gap",
    "GatewayEvent",
    "NotAnswered",
    "SwitchyardError",
    "Welcome",
]

log = logging.getLogger("switchyard")

# websockets < 14 names the extra request headers "extra_headers"; the newer
# implementation that websockets.connect points to since 14 says
# "additional_headers".
_HEADERS_KW = (
    "additional_headers"
    if "additional_headers" in inspect.signature(websockets.connect).parameters
    else "extra_headers"
)

_POLICY_VIOLATION = 1008

# An HTTP status other than 101 at attach: InvalidStatusCode (status_code)
# from the implementation of websockets < 14, InvalidStatus (response) from
# the newer one.
_INVALID_STATUS = tuple(
    getattr(websockets.exceptions, name)
    for name in ("InvalidStatusCode", "InvalidStatus")
    if hasattr(websockets.exceptions, name)
)


class GatewayEvent(TypedDict, total=False):
    """A GatewayEvent as the REST API takes it (see docs/SPEC.md, section 2)."""

    sender_id: str
    sender_type: str  # "human" or "ai"
    event_type: str
    message: str
    session_id: str
    sender_gateway_url: str
    metadata: Dict[str, Any]
    recipient_id: str
    event_id: str


@dataclass(frozen=True)
class Event:
    """An event delivered to this participant, numbered by ``seq``."""

    seq: int
    event_id: str
    session_id: Optional[str]
    event: Dict[str, Any]

    @property
    def message(self) -> Optional[str]:
        return self.event.get("message")

    @property
    def sender_id(self) -> Optional[str]:
        return self.event.get("sender_id")

    @property
    def event_type(self) -> Optional[str]:
        return self.event.get("event_type")


@dataclass(frozen=True)
class Gap:
    """Events ``from_seq`` to ``to_seq`` (inclusive) were dropped from the
    mailbox before they could be delivered: they will not come."""

    from_seq: int
    to_seq: int


@dataclass(frozen=True)
class Welcome:
    """The first frame of a connection. ``seq`` is the newest seq assigned to
    the participant; ``resumed`` says whether replay starts earlier."""

    participant_id: str
    node: str
    sessions: List[str] = field(default_factory=list)
    seq: int = 0
    resumed: bool = False


class SwitchyardError(Exception):
    """The node answered with an error: ``status`` is the HTTP status (or the
    status of a ``result`` frame); ``code``, ``detail`` and ``field`` come
    from the error body, and ``retry_after`` (whole seconds, or None) on a
    429 or a 503 that says when to come back."""

    def __init__(self, status: int, code: str = "", detail: str = "",
                 field: Optional[str] = None, body: Any = None) -> None:
        super().__init__(f"switchyard: {status} {code}: {detail}".rstrip(": "))
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.body = body
        ra = body.get("retry_after") if isinstance(body, dict) else None
        self.retry_after: Optional[int] = ra if isinstance(ra, int) else None

    @classmethod
    def from_body(cls, status: int, body: Any) -> "SwitchyardError":
        if isinstance(body, (bytes, str)):
            try:
                body = json.loads(body)
            except ValueError:
                body = {"detail": body.decode(errors="replace") if isinstance(body, bytes) else body}
        if not isinstance(body, dict):
            body = {}
        return cls(status, str(body.get("code", "")), str(body.get("detail", "")), body.get("field"), body)


class AttachRefused(SwitchyardError):
    """The node refused the participant for good: an HTTP 4xx at attach (a
    bad credential or request), or a close with 1008 (policy, e.g. a
    participant token attaching as someone else; ``status`` is 1008).
    Reconnecting cannot fix it, so the client stops."""


class NotAnswered(ConnectionError):
    """A frame sent over the socket got no answer because the connection or
    the client closed first. A submit may or may not have been accepted:
    submit it again with the same ``event_id`` and the node delivers it once."""


_END = object()  # ends the events() stream


def _is_seq(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _well_formed(f: Dict[str, Any]) -> bool:
    """Whether the fields this client reads have the types SPEC section 3 gives."""
    kind = f.get("type")
    if kind == "event":
        return _is_seq(f.get("seq")) and isinstance(f.get("event", {}), dict)
    if kind == "gap":
        return _is_seq(f.get("from_seq")) and _is_seq(f.get("to_seq"))
    if kind == "welcome":
        return _is_seq(f.get("seq", 0)) and isinstance(f.get("sessions", []), list)
    if kind == "result":
        return isinstance(f.get("status", 0), int)
    return True


class Client:
    """A participant's connection to Switchyard that survives drops.

    Use it as an async context manager and iterate over :meth:`events`::

        async with Client("http://127.0.0.1:8787", api_key="k",
                          participant_id="bob", sessions=["s1"]) as bob:
            async for item in bob.events():
                if isinstance(item, Event):
                    print(item.seq, item.message)

    Arguments:
        url: base URL of a node (http, https, ws or wss).
        api_key, token: the credential (at most one), sent as
            ``Authorization: Bearer``.
        participant_id, participant_type: who attaches ("ai" or "human").
        sessions: joined on every attach (join() and leave() update it).
        resume_from: the last seq the caller already has (from an earlier
            run); the first attach replays what came after it. Later
            attaches always resume from the last seq received.
        ack: send a cumulative ``{"type":"ack","seq":N}`` once the caller
            has consumed event N (coalesced).
        batch: let the node pack several frames into one message.
        also_urls: more nodes; each reconnect tries the next URL.
        min_backoff, max_backoff: bounds in seconds of the wait between
            reconnects; each wait is random up to the current bound, which
            doubles from min_backoff to max_backoff (full jitter).
        open_timeout: seconds an attach may take.
        request_timeout: seconds a REST call may take.
        max_pending: the most events (and gaps) received but not yet taken
            from :meth:`events` (default 1000). When the buffer is full the
            client stops reading from the socket; the node then holds the
            rest in the mailbox (closing a connection that falls too far
            behind with 4000) and the client resumes from it: nothing is
            dropped and memory stays bounded.
    """

    def __init__(
        self,
        url: str,
        *,
        participant_id: str,
        api_key: Optional[str] = None,
        token: Optional[str] = None,
        participant_type: str = "ai",
        sessions: Sequence[str] = (),
        resume_from: Optional[int] = None,
        ack: bool = False,
        batch: bool = False,
        also_urls: Sequence[str] = (),
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        open_timeout: float = 10.0,
        request_timeout: float = 30.0,
        max_pending: int = 1000,
    ) -> None:
        if not participant_id:
            raise ValueError("participant_id is required")
        if api_key and token:
            raise ValueError("give api_key or token, not both")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if participant_type not in ("ai", "human"):
            raise ValueError('participant_type must be "ai" or "human"')
        self.urls: List[str] = [u.rstrip("/") for u in (url, *also_urls)]
        for u in self.urls:
            if urllib.parse.urlsplit(u).scheme.lower() not in ("http", "https", "ws", "wss"):
                raise ValueError(f"node URL {u!r}: want http:// or https://")
        self.participant_id = participant_id
        self.participant_type = participant_type
        self.sessions: List[str] = list(sessions)
        self.ack = ack
        self.batch = batch
        self.min_backoff = max(min_backoff, 0.001)
        self.max_backoff = max(max_backoff, self.min_backoff)
        self.open_timeout = open_timeout
        self.request_timeout = request_timeout
        self._credential = api_key or token
        self.max_pending = max_pending
        self._received = resume_from or 0  # the newest seq received: where a reconnect resumes
        self._last_seq = resume_from or 0  # the newest seq handed to the caller
        self._resume = resume_from is not None
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_pending)
        self._ended = False  # no more items will be queued
        # Set when the caller takes an item or a socket call starts waiting:
        # either may let a reader blocked on a full buffer go on.
        self._nudge = asyncio.Event()
        # This connection dropped deliveries (the buffer was full while a
        # socket call waited for its answer): it is replaced, resuming from
        # the last seq received, once no call waits.
        self._overflowed = False
        self._attached = asyncio.Event()
        self._ack_wanted = asyncio.Event()
        self._consumed = 0  # the newest seq the caller has consumed
        self._ws: Any = None
        self._url: Optional[str] = None
        self._welcomed = False
        self._waiters: Dict[str, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._task: Optional[asyncio.Task] = None
        self._closed = False
        self._error: Optional[BaseException] = None
        self.welcome: Optional[Welcome] = None
        """The welcome frame of the current (or last) connection."""

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> "Client":
        self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background (``async with`` and
        :meth:`events` do it for you)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Close the connection for good; :meth:`events` ends."""
        self._closed = True
        if self._task is None:
            self._end()
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    @property
    def last_seq(self) -> int:
        """The seq of the last event (or gap end) handed to the caller by
        :meth:`events`, or ``resume_from``: keep it to resume a later run.
        Events received but still waiting in the buffer do not count, so a
        later run with ``resume_from=last_seq`` gets them again."""
        return self._last_seq

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_attached(self, timeout: Optional[float] = None) -> Welcome:
        """Wait until a connection is attached (its welcome frame came)."""
        await self._wait_ready(timeout)
        assert self.welcome is not None
        return self.welcome

    # -- receiving ---------------------------------------------------------

    async def events(self) -> AsyncIterator[Union[Event, Gap]]:
        """Yield every event (and every gap) in order, across reconnects.

        It ends when :meth:`close` is called and raises :class:`AttachRefused`
        when the node refuses the participant for good. Only one consumer
        should iterate. With ``ack=True`` an event counts as consumed once
        the caller asks for the next item.
        """
        self.start()
        while True:
            if self._ended and self._queue.empty():
                item: Any = _END
            else:
                item = await self._queue.get()
                self._nudge.set()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            self._last_seq = item.seq if isinstance(item, Event) else max(self._last_seq, item.to_seq)
            yield item
            if self.ack and isinstance(item, Event) and item.seq > self._consumed:
                self._consumed = item.seq
                self._ack_wanted.set()

    # -- sending -----------------------------------------------------------

    async def submit(self, event: GatewayEvent, *, url: Optional[str] = None) -> Dict[str, Any]:
        """Submit an event over REST (POST /v1/gateway/events) to the node
        this client is attached to (else the first URL, or ``url``).

        ``sender_id`` and ``sender_type`` default to this participant.
        Returns the answer, e.g. ``{"status":"ok","event_id":…,"recipients":N}``;
        raises :class:`SwitchyardError` on any other status.
        """
        body = dict(event)
        body.setdefault("sender_id", self.participant_id)
        body.setdefault("sender_type", self.participant_type)
        return await self.request("POST", "/v1/gateway/events", body, url=url)

    async def submit_over_socket(self, event: GatewayEvent, *, timeout: Optional[float] = 30.0) -> Dict[str, Any]:
        """Submit an event over the WebSocket and wait for the node's answer
        (``sender_id`` and ``sender_type`` default to this participant).

        Returns the answer body as :meth:`submit` does and raises
        :class:`SwitchyardError` on a non-200 status, :class:`NotAnswered`
        when the connection drops first (resubmit with the same
        ``event_id``), ``asyncio.TimeoutError`` after ``timeout`` seconds.
        """
        return await self._call({"type": "submit", "event": dict(event)}, timeout)

    async def join(self, session_id: str, *, timeout: Optional[float] = 30.0) -> Dict[str, Any]:
        """Join a session over the socket; later attaches join it too."""
        answer = await self._call({"type": "join", "session_id": session_id}, timeout)
        if session_id not in self.sessions:
            self.sessions.append(session_id)
        return answer

    async def leave(self, session_id: str, *, timeout: Optional[float] = 30.0) -> Dict[str, Any]:
        """Leave a session over the socket; later attaches do not join it."""
        answer = await self._call({"type": "leave", "session_id": session_id}, timeout)
        if session_id in self.sessions:
            self.sessions.remove(session_id)
        return answer

    async def request(self, method: str, path: str, body: Any = None, *, url: Optional[str] = None) -> Dict[str, Any]:
        """Call a JSON REST endpoint (e.g. ``GET /v1/gateway/members``) with
        this client's credential; returns the decoded answer and raises
        :class:`SwitchyardError` on a status >= 300 (urllib's errors, such as
        ``URLError``, when the node cannot be reached)."""
        base = (url or self._url or self.urls[0]).rstrip("/")
        base = base.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        return await asyncio.to_thread(self._http, method, base + path, body)

    def _http(self, method: str, url: str, body: Any) -> Dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._credential:
            headers["Authorization"] = "Bearer " + self._credential
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.request_timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            with e:
                raise SwitchyardError.from_body(e.code, e.read()) from None
        return json.loads(raw) if raw.strip() else {}

    async def _call(self, frame: Dict[str, Any], timeout: Optional[float]) -> Dict[str, Any]:
        """Send a frame with an id and wait for its result frame."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        ws = await self._wait_ready(timeout)
        frame["id"] = f"c{next(self._ids)}"
        answer = loop.create_future()
        self._waiters[frame["id"]] = answer
        self._nudge.set()  # a reader blocked on a full buffer must read on, or the answer never comes
        try:
            try:
                await ws.send(json.dumps(frame))
            except websockets.ConnectionClosed:
                raise NotAnswered("the connection closed before the answer") from None
            left = None if deadline is None else max(deadline - loop.time(), 0)
            result = await asyncio.wait_for(answer, left)
        finally:
            self._waiters.pop(frame["id"], None)
        status = int(result.get("status", 0))
        body = result.get("body")
        if status != 200:
            raise SwitchyardError.from_body(status, body)
        return body if isinstance(body, dict) else {}

    async def _wait_ready(self, timeout: Optional[float]) -> Any:
        """The attached connection, once there is one."""
        self.start()
        if self._ws is None and self._task is not None and not self._task.done():
            waiter = asyncio.ensure_future(self._attached.wait())
            try:
                done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if not done:
                raise asyncio.TimeoutError("no connection attached in time")
        if self._ws is None:
            if self._error is not None:
                raise self._error
            raise NotAnswered("the client is closed")
        return self._ws

    # -- the connection loop -------------------------------------------------

    async def _run(self) -> None:
        backoff = self.min_backoff
        try:
            for attempt in itertools.count():
                url = self.urls[attempt % len(self.urls)]
                self._welcomed = False
                try:
                    await self._connection(url)
                    reason: Any = "the connection closed"
                except AttachRefused:
                    raise
                except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
                    reason = e
                if self._welcomed:
                    backoff = self.min_backoff  # it worked for a while: start over
                self._resume = self._resume or self._received > 0
                wait = random.uniform(0, backoff)
                log.debug("switchyard: %s (%s); reconnecting in %.3fs", reason, url, wait)
                await asyncio.sleep(wait)
                backoff = min(2 * backoff, self.max_backoff)
        except asyncio.CancelledError:
            pass  # close()
        except AttachRefused as e:
            self._error = e
        except Exception as e:  # a bug: end the stream with it rather than hang
            log.exception("switchyard: the connection loop failed")
            self._error = e
        finally:
            self._closed = True
            self._end()

    def _end(self) -> None:
        """No more items: events() ends once the buffer is empty."""
        self._ended = True
        try:
            self._queue.put_nowait(_END)  # wakes a consumer waiting on an empty buffer
        except asyncio.QueueFull:
            pass  # the consumer is not waiting: it sees _ended once it has drained

    def _attach_uri(self, base: str) -> str:
        scheme, rest = base.split("://", 1) if "://" in base else ("", base)
        scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}[scheme.lower()]
        query: List[Any] = [("participant_id", self.participant_id),
                            ("participant_type", self.participant_type)]
        query += [("session_id", s) for s in self.sessions]
        if self._resume or self._received > 0:
            query.append(("resume_from", str(self._received)))
        if self.batch:
            query.append(("batch", "1"))
        return f"{scheme}://{rest}/v1/gateway/ws?{urllib.parse.urlencode(query)}"

    async def _connection(self, url: str) -> None:
        """Run one connection until it closes."""
        headers = {"Authorization": "Bearer " + self._credential} if self._credential else {}
        try:
            ws = await websockets.connect(self._attach_uri(url), open_timeout=self.open_timeout,
                                          max_size=None, close_timeout=5, **{_HEADERS_KW: headers})
        except _INVALID_STATUS as e:
            response = getattr(e, "response", None)
            if response is not None:
                self._refused(response.status_code, response.body or b"")
            else:
                self._refused(e.status_code, b"")
            raise
        acker = asyncio.ensure_future(self._ack_loop(ws)) if self.ack else None
        self._overflowed = False
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode(errors="replace")
                for line in message.split("\n"):
                    if line.strip():
                        # Waits while the buffer is full: no more is read
                        # from the socket until the caller takes some.
                        await self._frame(ws, url, line)
                if self._overflowed and not self._waiters:
                    return  # replaced: the next connection resumes from what was received
        except websockets.ConnectionClosed as e:
            if e.rcvd is not None and e.rcvd.code == _POLICY_VIOLATION:
                raise AttachRefused(_POLICY_VIOLATION, "policy_violation", e.rcvd.reason) from None
            raise
        finally:
            if acker is not None:
                acker.cancel()
            self._ws = None
            self._attached.clear()
            for answer in self._waiters.values():  # answers that will never come
                if not answer.done():
                    answer.set_exception(NotAnswered("the connection closed before the answer"))
            self._waiters.clear()
            # While the buffer was full, websockets stopped reading too, so
            # the node's close frame would never be read and close() would
            # wait out close_timeout: discard what is still unread (nothing
            # of it was counted as received) while closing.
            discard = asyncio.ensure_future(self._discard(ws))
            try:
                await asyncio.shield(ws.close())
            finally:
                discard.cancel()

    @staticmethod
    async def _discard(ws: Any) -> None:
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass

    @staticmethod
    def _refused(status: int, body: bytes) -> None:
        if 400 <= status < 500 and status != 429:
            err = SwitchyardError.from_body(status, body)
            raise AttachRefused(status, err.code or "attach_refused", err.detail, err.field, err.body)

    async def _frame(self, ws: Any, url: str, line: str) -> None:
        try:
            f = json.loads(line)
        except ValueError:
            log.warning("switchyard: a frame does not decode; skipped")
            return
        if not isinstance(f, dict) or not _well_formed(f):
            # A frame of the wrong shape must not end the stream (the Go
            # client skips what does not decode): skip it.
            log.warning("switchyard: a frame of the wrong shape; skipped: %.200s", line)
            return
        kind = f.get("type")
        if kind == "event":
            seq = int(f.get("seq", 0))
            if seq <= self._received:
                return  # replayed twice (a race at reconnect): already received
            if await self._enqueue(Event(seq, f.get("event_id", ""), f.get("session_id"), f.get("event") or {})):
                self._received = seq
        elif kind == "gap":
            gap = Gap(int(f.get("from_seq", 0)), int(f.get("to_seq", 0)))
            if await self._enqueue(gap):
                self._received = max(self._received, gap.to_seq)
        elif kind == "result":
            answer = self._waiters.pop(str(f.get("id")), None)
            if answer is not None and not answer.done():
                answer.set_result(f)
        elif kind == "welcome":
            self.welcome = Welcome(f.get("participant_id", ""), f.get("node", ""), list(f.get("sessions") or []),
                                   int(f.get("seq", 0)), bool(f.get("resumed", False)))
            if self.welcome.seq < self._received:
                # The node's numbering for this participant restarted (its
                # mailbox could not be had): events from now on are new.
                self._received = self.welcome.seq
                self._last_seq = min(self._last_seq, self.welcome.seq)
                self._consumed = min(self._consumed, self.welcome.seq)
            self._ws, self._url, self._welcomed = ws, url, True
            self._attached.set()
        elif kind == "error":
            log.warning("switchyard: the node rejected a frame: %s: %s", f.get("code"), f.get("detail"))
        # other types: newer than this client; ignored

    async def _enqueue(self, item: Union[Event, Gap]) -> bool:
        """Queue item, waiting while the buffer is full (backpressure). While
        a socket call waits for its answer, which comes behind the unread
        events, it drops item instead (and every later one of this
        connection) and returns False: that connection is then replaced."""
        while not self._overflowed:
            if not self._queue.full():
                self._queue.put_nowait(item)
                return True
            if self._waiters:
                self._overflowed = True
                break
            self._nudge.clear()
            await self._nudge.wait()
        return False

    async def _ack_loop(self, ws: Any) -> None:
        """Send the newest consumed seq whenever it moves (coalesced)."""
        sent = 0
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            seq = self._consumed
            if seq > sent:
                try:
                    await ws.send(json.dumps({"type": "ack", "seq": seq}))
                except websockets.ConnectionClosed:
                    return
                sent = seq

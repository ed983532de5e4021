"""The Python client against real `switchyard serve` nodes on loopback.

Every test ends with a marker event and waits for it, so "exactly once, in
order" is checked on everything before it without sleeping."""

import asyncio
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import switchyard
from conftest import API_KEY, mint_token
from helpers import TIMEOUT, Collector, Proxy, in_session, run, until
from switchyard import AttachRefused, Client, Event, Gap, NotAnswered, SwitchyardError

FAST = dict(min_backoff=0.05, max_backoff=0.5)


def sender(url: str, participant_id: str = "alice", **kw) -> Client:
    """A client used for REST calls only (it never attaches)."""
    return Client(url, api_key=API_KEY, participant_id=participant_id, **kw)


async def submit_range(alice: Client, session: str, first: int, last: int, url: str = None) -> None:
    for i in range(first, last + 1):
        answer = await alice.submit({"event_type": "message", "session_id": session, "message": str(i)}, url=url)
        assert answer["status"] == "ok", answer


def assert_exactly(events, first: int, last: int) -> None:
    """Messages first..last, once each, in order, with contiguous seqs."""
    assert [e.message for e in events] == [str(i) for i in range(first, last + 1)]
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} metric")


def mailbox_events(url: str) -> float:
    return metric(url, "switchyard_mailbox_events")


def test_attach_receives_in_order_and_acks(start_node):
    """Attach with an API key (batch=1, acks on): 50 events arrive once each,
    in order, numbered by contiguous seqs; the acks let the node free them."""
    node = start_node()

    async def main():
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"],
                          ack=True, batch=True) as bob:
            col = Collector(bob)
            welcome = await bob.wait_attached(TIMEOUT)
            assert (welcome.participant_id, welcome.sessions, welcome.node) == ("bob", ["s1"], "n1")
            alice = sender(node.url)
            await submit_range(alice, "s1", 1, 50)
            events = await col.wait_for(50)
            assert_exactly(events, 1, 50)
            assert {(e.sender_id, e.event_type, e.session_id) for e in events} == {("alice", "message", "s1")}
            assert bob.last_seq == events[-1].seq
            # Every event was consumed and acknowledged: the mailbox is empty.
            await until(lambda: mailbox_events(node.url) == 0, what="acks to empty the mailbox")
            await col.stop()

    run(main())


def test_submit_over_rest_and_socket_join_leave(start_node):
    """submit() (REST) and submit_over_socket() deliver and return the
    answer; refusals raise SwitchyardError with status, code and field;
    join() and leave() over the socket change what arrives."""
    node = start_node()

    async def main():
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"]) as bob, \
                Client(node.url, api_key=API_KEY, participant_id="alice", participant_type="human",
                       sessions=["s1"]) as alice:
            col = Collector(bob)
            await bob.wait_attached(TIMEOUT)
            await alice.wait_attached(TIMEOUT)

            answer = await alice.submit_over_socket({"event_type": "message", "session_id": "s1", "message": "1"})
            assert answer["status"] == "ok" and answer["event_id"] and answer["recipients"] == 1
            answer = await alice.submit({"event_type": "message", "session_id": "s1", "message": "2",
                                         "event_id": "rest-2"})
            assert (answer["status"], answer["event_id"], answer["recipients"]) == ("ok", "rest-2", 1)
            events = await col.wait_for(2)
            assert_exactly(events, 1, 2)
            assert {(e.sender_id, e.event["sender_type"]) for e in events} == {("alice", "human")}
            assert events[1].event_id == "rest-2"

            with pytest.raises(SwitchyardError) as err:
                await alice.submit_over_socket({"event_type": "message", "session_id": "empty"})
            assert (err.value.status, err.value.code) == (404, "recipient_not_found")
            with pytest.raises(SwitchyardError) as err:
                await alice.submit({"session_id": "s1", "message": "no event_type"})
            assert (err.value.status, err.value.field) == (422, "event_type")
            assert err.value.detail

            await bob.join("s2")
            assert bob.sessions == ["s1", "s2"]
            await alice.submit_over_socket({"event_type": "message", "session_id": "s2", "message": "3"})
            await col.wait_for(3)
            assert col.events[2].session_id == "s2"
            await bob.leave("s2")
            assert bob.sessions == ["s1"]
            with pytest.raises(SwitchyardError) as err:
                await alice.submit_over_socket({"event_type": "message", "session_id": "s2", "message": "x"})
            assert err.value.status == 404
            await alice.submit_over_socket({"event_type": "message", "session_id": "s1", "message": "4"})
            assert_exactly(await col.wait_for(4), 1, 4)
            await col.stop()

    run(main())


def test_resumed_client_gets_every_missed_event_once(start_node):
    """The link to the client goes dead: events 6-15 are written by the node
    but never reach the client, then the connection is cut and stays down
    while 16-25 are submitted. The client reconnects with resume_from and
    gets exactly 6-25, once each, in order, seqs following on (without
    resume_from, 6-15 would be lost: the node wrote them)."""
    node = start_node()

    async def main():
        async with Proxy(node.url) as px, \
                Client(px.url, api_key=API_KEY, participant_id="bob", sessions=["s1"], batch=True, **FAST) as bob:
            col = Collector(bob)
            await bob.wait_attached(TIMEOUT)
            alice = sender(node.url)
            await submit_range(alice, "s1", 1, 5)
            await col.wait_for(5)

            px.swallowing = True
            await submit_range(alice, "s1", 6, 15)
            await until(lambda: b'"message":"15"' in px.swallowed, what="the node to write event 15")
            px.refusing = True
            px.cut()
            px.swallowing = False
            await until(lambda: not bob.connected, what="the client to notice the cut")
            assert len(col.events) == 5
            await submit_range(alice, "s1", 16, 25)
            px.refusing = False

            await col.wait_for(25)
            assert bob.welcome.resumed
            await submit_range(alice, "s1", 26, 26)  # the marker
            assert_exactly(await col.wait_for(26), 1, 26)
            assert not [i for i in col.items if isinstance(i, Gap)]
            await col.stop()

    run(main())


def test_client_survives_connection_cuts_under_load(start_node):
    """Like the Go client's test: 300 events while the TCP connection is cut
    every 50; each arrives exactly once, in order."""
    node = start_node()

    async def main():
        async with Proxy(node.url) as px, \
                Client(px.url, api_key=API_KEY, participant_id="bob", sessions=["s1"], ack=True, **FAST) as bob:
            col = Collector(bob)
            await bob.wait_attached(TIMEOUT)
            alice = sender(node.url)
            for start in range(1, 301, 50):
                await submit_range(alice, "s1", start, start + 49)
                px.cut()
            await submit_range(alice, "s1", 301, 301)
            assert_exactly(await col.wait_for(301), 1, 301)
            await col.stop()

    run(main())


def test_client_follows_a_drain_to_the_next_node(start_node):
    """Two nodes; bob is on n1 and knows both URLs. n1 gets SIGTERM while
    events flow through n2: bob moves to n2 (close 1001, resume) and gets
    every event once, in order."""
    n1 = start_node()
    n2 = start_node("--join", n1.gossip)

    async def main():
        alice = sender(n2.url)

        async def both_alive():
            members = (await alice.request("GET", "/v1/gateway/members"))["members"]
            return sum(m["state"] == "alive" for m in members) == 2

        await until(both_alive, what="two alive members")
        async with Client(n1.url, api_key=API_KEY, participant_id="bob", sessions=["s1"], also_urls=[n2.url],
                          batch=True, ack=True, **FAST) as bob:
            col = Collector(bob)
            assert (await bob.wait_attached(TIMEOUT)).node == "n1"
            await until(lambda: in_session(alice, "s1", "bob"), what="n2 to route to bob")
            await submit_range(alice, "s1", 1, 50)
            n1.terminate()
            await submit_range(alice, "s1", 51, 150)
            assert_exactly(await col.wait_for(150), 1, 150)
            assert bob.welcome.node == "n2"
            await col.stop()

    run(main())


def test_token_impersonation_and_bad_credentials_refused(start_node):
    """A participant token attaches only as its own participant and sends
    only as it: otherwise close 1008 / 403, and the client stops for good
    (AttachRefused) instead of retrying. A wrong API key: 401."""
    secret = "py-client-test-secret"
    node = start_node("--token-secret", secret)
    bob_token = mint_token("bob", secret)
    s1_token = mint_token("carol", secret, "s1")

    async def main():
        async def refusal(client: Client) -> AttachRefused:
            with pytest.raises(AttachRefused) as err:
                async with client:
                    async for _ in client.events():
                        pass
            return err.value

        err = await refusal(Client(node.url, token=bob_token, participant_id="mallory", **FAST))
        assert err.status == 1008
        err = await refusal(Client(node.url, token=s1_token, participant_id="carol", sessions=["s9"], **FAST))
        assert err.status == 1008
        err = await refusal(Client(node.url, api_key="wrong", participant_id="bob", **FAST))
        assert err.status == 401

        async with Client(node.url, token=bob_token, participant_id="bob", sessions=["s1"]) as bob:
            await bob.wait_attached(TIMEOUT)
            with pytest.raises(SwitchyardError) as e:
                await bob.submit({"sender_id": "alice", "event_type": "message", "session_id": "s1"})
            assert (e.value.status, e.value.code) == (403, "forbidden")
            with pytest.raises(SwitchyardError) as e:
                await bob.submit_over_socket({"sender_id": "alice", "event_type": "message", "session_id": "s1"})
            assert e.value.status == 403

    run(main())


def test_gap_when_the_mailbox_overflowed(start_node):
    """With --mailbox-size 5, a participant away for 20 events comes back
    (a new Client with resume_from) to a Gap naming what was dropped, then
    the 5 events still held, in order."""
    node = start_node("--mailbox-size", "5")

    async def main():
        alice = sender(node.url)
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"]) as bob:
            col = Collector(bob)
            await bob.wait_attached(TIMEOUT)
            await submit_range(alice, "s1", 1, 1)
            await col.wait_for(1)
            await col.stop()
        last = bob.last_seq
        await until(lambda: _not(in_session(alice, "s1", "bob")), what="bob offline")
        await submit_range(alice, "s1", 2, 21)

        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"], resume_from=last) as bob2:
            col = Collector(bob2)
            events = await col.wait_for(5)
            await col.stop()
        gap = col.items[0]
        assert isinstance(gap, Gap) and gap.from_seq == last + 1, col.items
        assert events[0].seq == gap.to_seq + 1
        assert_exactly(events, 17, 21)
        assert events[-1].seq == last + 20

    run(main())


async def _not(aw):
    return not await aw


def test_socket_submit_without_answer_raises_not_answered(start_node):
    """A submit over the socket whose result frame never comes (the link
    dies first) raises NotAnswered; the retry with the same event_id, after
    the reconnect, is delivered once."""
    node = start_node()

    async def main():
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"]) as bob, \
                Proxy(node.url) as px, \
                Client(px.url, api_key=API_KEY, participant_id="alice", sessions=["s1"], **FAST) as alice:
            col = Collector(bob)
            alice_col = Collector(alice)
            await bob.wait_attached(TIMEOUT)
            await alice.wait_attached(TIMEOUT)
            event = {"event_type": "message", "session_id": "s1", "message": "1", "event_id": "once"}

            px.swallowing = True
            pending = asyncio.ensure_future(alice.submit_over_socket(event))
            await col.wait_for(1)  # the node took it, but its answer is swallowed
            px.cut()
            px.swallowing = False
            with pytest.raises(NotAnswered):
                await pending

            answer = await alice.submit_over_socket(event)  # waits for the reconnect
            assert answer["event_id"] == "once"
            await alice.submit_over_socket({"event_type": "message", "session_id": "s1", "message": "2"})
            assert_exactly(await col.wait_for(2), 1, 2)
            await alice_col.stop()
            await col.stop()

    run(main())


def test_close_ends_events_and_does_not_reconnect(start_node):
    """close() ends events() and the participant goes offline for good;
    a socket submit after it raises NotAnswered."""
    node = start_node()

    async def main():
        alice = sender(node.url)
        bob = Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"], **FAST)
        col = Collector(bob)
        await bob.wait_attached(TIMEOUT)
        await until(lambda: in_session(alice, "s1", "bob"), what="bob online")
        await bob.close()
        await asyncio.wait_for(col.task, TIMEOUT)  # events() ended without error
        assert not bob.connected
        await until(lambda: _not(in_session(alice, "s1", "bob")), what="bob offline")
        with pytest.raises(NotAnswered):
            await bob.submit_over_socket({"event_type": "message", "session_id": "s1"})

    run(main())


def test_readme_example_runs(start_node, tmp_path):
    """The README's example (an echo bot) works as written against a node."""
    node = start_node()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, SWITCHYARD_URL=node.url, SWITCHYARD_API_KEY=API_KEY,
               PYTHONPATH=str(Path(switchyard.__file__).resolve().parent.parent))
    out = open(tmp_path / "example.out", "wb")
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=out, stderr=subprocess.STDOUT)

    async def main():
        async with Client(node.url, api_key=API_KEY, participant_id="alice", participant_type="human",
                          sessions=["s1"]) as alice:
            col = Collector(alice)
            await until(lambda: in_session(alice, "s1", "echo-bot"), what="the example to attach")
            await alice.submit({"event_type": "message", "session_id": "s1", "message": "hi"})
            events = await col.wait_for(1)
            assert (events[0].sender_id, events[0].message) == ("echo-bot", "echo: hi")
            await col.stop()

    try:
        run(main())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
    assert "1 alice hi" in (tmp_path / "example.out").read_text()


def test_bounded_buffer_backpressure_and_slow_consumer_close(start_node):
    """max_pending bounds the events waiting for the caller: while the caller
    does not read, the buffer never holds more than max_pending and the client
    stops reading the socket, so the node (small --write-queue-bytes) closes
    it with 4000. Once the caller reads, it gets every event exactly once, in
    order (the client resumed from the mailbox)."""
    node = start_node("--write-queue-bytes", "65536")
    n, big = 240, "x" * 32768  # ~8 MB: more than the socket buffers of a reader that stopped

    async def main():
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"],
                          max_pending=20, **FAST) as bob:
            first = await bob.wait_attached(TIMEOUT)
            alice = sender(node.url)
            most = 0

            async def watch():
                nonlocal most
                while True:
                    most = max(most, bob._queue.qsize())
                    await asyncio.sleep(0.005)

            watcher = asyncio.ensure_future(watch())
            for i in range(1, n + 1):
                answer = await alice.submit({"event_type": "message", "session_id": "s1", "message": f"{i} {big}"})
                assert answer["status"] == "ok", answer
            await until(lambda: metric(node.url, "switchyard_slow_consumers_total") >= 1,
                        what="a slow-consumer close (4000)")
            await submit_range(alice, "s1", n + 1, n + 1)  # the marker
            got = []
            async for item in bob.events():
                assert isinstance(item, Event), item
                got.append(item)
                if len(got) == n + 1:
                    break
            watcher.cancel()
            assert [e.message.split(" ")[0] for e in got] == [str(i) for i in range(1, n + 2)]
            assert [e.seq for e in got] == list(range(got[0].seq, got[0].seq + n + 1))
            assert most <= 20, most
            assert bob.welcome is not first  # it reconnected after the 4000

    run(main())


def test_last_seq_counts_only_events_handed_over(start_node):
    """last_seq (kept to resume a later run) is the last event events()
    handed over, not the last one received into the buffer: a later run
    resuming from it gets the events that were still waiting."""
    node = start_node()

    async def main():
        alice = sender(node.url)
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"], **FAST) as bob:
            await bob.wait_attached(TIMEOUT)
            await submit_range(alice, "s1", 1, 5)
            await until(lambda: bob._queue.qsize() == 5, what="5 events buffered")
            assert bob.last_seq == 0
            events = bob.events()
            two = [await events.__anext__(), await events.__anext__()]
            assert [e.message for e in two] == ["1", "2"]
            assert bob.last_seq == two[1].seq
            kept = bob.last_seq
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"],
                          resume_from=kept, **FAST) as bob2:
            col = Collector(bob2)
            assert_exactly(await col.wait_for(3), 3, 5)
            await col.stop()

    run(main())


def test_close_is_prompt_while_the_buffer_is_full(start_node):
    """With the buffer full the socket is not read, so the node's close frame
    cannot be either: close() must not wait out websockets' close_timeout."""
    node = start_node()

    async def main():
        bob = Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"], max_pending=2, **FAST)
        await bob.wait_attached(TIMEOUT)
        await submit_range(sender(node.url), "s1", 1, 100)  # 2 in the buffer, the rest unread
        await until(lambda: bob._queue.full(), what="a full buffer")
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await bob.close()
        assert loop.time() - t0 < 2.5, loop.time() - t0

    run(main())


def test_socket_call_answered_while_the_buffer_is_full(start_node):
    """A consumer that replies over the socket from inside its events() loop
    while the buffer is full gets its answer (the result frame comes behind
    unread events), and still every event exactly once, in order."""
    node = start_node()

    async def main():
        async with Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"],
                          max_pending=5, **FAST) as bob:
            await bob.wait_attached(TIMEOUT)
            alice = sender(node.url)
            await submit_range(alice, "s1", 1, 50)
            await until(lambda: bob._queue.full(), what="a full buffer")
            got = []
            async for item in bob.events():
                got.append(item)
                if len(got) == 1:
                    await bob.join("s2", timeout=10)  # a socket call, answered by a result frame
                    await submit_range(alice, "s1", 51, 51)  # the marker
                if len(got) == 51:
                    break
            assert_exactly(got, 1, 51)

    run(main())


def test_rate_limited_submits_say_when_to_retry(start_node):
    """Past the credential's rate limit a REST submit and a socket submit are
    refused 429 rate_limited, and SwitchyardError carries retry_after."""
    node = start_node("--rate-limit", "0.001", "--rate-burst", "3")

    async def main():
        async with switchyard.Client(node.url, api_key=API_KEY, participant_id="bob", sessions=["s1"]) as bob:
            await bob.wait_attached(30)  # the attach took one token
            event = {"event_type": "message", "session_id": "s1", "message": "hi"}
            for _ in range(2):  # the last two tokens; nobody else is in s1
                with pytest.raises(switchyard.SwitchyardError) as err:
                    await bob.submit(event)
                assert err.value.status == 404
            for send in (bob.submit, bob.submit_over_socket):
                with pytest.raises(switchyard.SwitchyardError) as err:
                    await send(event)
                assert (err.value.status, err.value.code) == (429, "rate_limited")
                assert err.value.retry_after is not None and err.value.retry_after >= 1

    asyncio.run(main())

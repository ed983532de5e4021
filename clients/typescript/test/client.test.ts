// The client against real `switchyard serve` processes on loopback.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  ConnectionClosedError, PermanentError, SwitchyardClient, SwitchyardError,
  type ClientOptions, type Delivery, type EventFrame, type WebSocketConstructor,
} from "../src/index.js";
import { API_KEY, gatedDomWebSocket, mintToken, post, startNode, take, waitFor, within, type Node } from "./helpers.js";

let counter = 0;
/** A fresh name, so that tests sharing a node do not meet. */
const fresh = (p: string) => `${p}-${++counter}-${process.pid}`;

const clients = new Set<SwitchyardClient>();
function client(opts: ClientOptions): SwitchyardClient {
  const c = new SwitchyardClient({ apiKey: API_KEY, minBackoffMs: 20, maxBackoffMs: 300, ...opts });
  clients.add(c);
  return c;
}
async function closeAll() {
  await Promise.all([...clients].map((c) => c.close()));
  clients.clear();
}

function messages(ds: Delivery[]): (string | undefined)[] {
  return ds.map((d) => (d.type === "event" ? d.event.message : `gap ${d.from_seq}-${d.to_seq}`));
}

function assertContiguous(ds: Delivery[], from: number) {
  assert.deepEqual(ds.map((d) => (d as EventFrame).seq), ds.map((_, i) => from + i), "seqs contiguous");
}

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => String(a + i));

describe("single node", () => {
  let node: Node;
  before(async () => {
    node = await startNode({ name: "solo" });
  });
  after(async () => {
    await closeAll();
    await node?.stop();
  });

  test("attaches and receives every event once, in order, with batch=1 and without", async () => {
    const s = fresh("s");
    const bob = client({ url: node.url, participantId: fresh("bob"), sessions: [s], batch: true });
    const carol = client({ url: node.url, participantId: fresh("carol"), sessions: [s] });
    const w = await within(bob.connect());
    assert.equal(w.type, "welcome");
    assert.deepEqual(w.sessions, [s]);
    await within(carol.connect());
    for (let i = 1; i <= 30; i++) await post(node.url, { session_id: s, message: String(i) });
    for (const c of [bob, carol]) {
      const got = await take(c.events(), 30);
      assert.deepEqual(messages(got), range(1, 30));
      assertContiguous(got, (got[0] as EventFrame).seq);
      assert.equal((got[0] as EventFrame).event.sender_id, "alice");
    }
  });

  test("submits over REST and over the socket; errors are typed", async () => {
    const s = fresh("s");
    const bobId = fresh("bob");
    const bob = client({ url: node.url, participantId: bobId, sessions: [s] });
    const carol = client({ url: node.url, participantId: fresh("carol"), sessions: [s] });
    await within(bob.connect());
    await within(carol.connect());

    const rest = await within(bob.submit({ event_type: "message", session_id: s, message: "over rest" }));
    assert.equal(rest.status, "ok");
    assert.equal(rest.recipients, 1);
    const sock = await within(bob.submitOverSocket({ event_type: "message", session_id: s, message: "over socket", event_id: "e-1" }));
    assert.equal(sock.status, "ok");
    assert.equal(sock.event_id, "e-1");

    const got = await take(carol.events(), 2);
    assert.deepEqual(messages(got), ["over rest", "over socket"]);
    for (const d of got) {
      assert.equal(d.type === "event" && d.event.sender_id, bobId);
      assert.equal(d.type === "event" && d.event.sender_type, "ai");
    }

    await assert.rejects(bob.submitOverSocket({ event_type: "message", session_id: fresh("empty") }), (err: unknown) => {
      assert.ok(err instanceof SwitchyardError);
      assert.equal(err.status, 404);
      assert.equal(err.code, "recipient_not_found");
      return true;
    });
    await assert.rejects(bob.submitOverSocket({ event_type: "", session_id: s }), (err: unknown) => {
      assert.ok(err instanceof SwitchyardError);
      assert.equal(err.status, 422);
      assert.match(err.field ?? "", /event_type/);
      return true;
    });
    await assert.rejects(bob.submit({ event_type: "", session_id: s }), (err: unknown) => {
      assert.ok(err instanceof SwitchyardError);
      assert.equal(err.status, 422);
      assert.match(err.field ?? "", /event_type/);
      return true;
    });
  });

  test("join and leave frames change the sessions", async () => {
    const s = fresh("s");
    const bob = client({ url: node.url, participantId: fresh("bob") });
    await within(bob.connect());
    const joined = await within(bob.join(s));
    assert.deepEqual(joined, { status: "ok", session_id: s });
    await post(node.url, { session_id: s, message: "while joined" });
    assert.deepEqual(messages(await take(bob.events(), 1)), ["while joined"]);
    assert.deepEqual(await within(bob.leave(s)), { status: "ok", session_id: s });
    await assert.rejects(post(node.url, { session_id: s, message: "after leaving" }), /404/);
  });

  test("a resumed client gets every missed event exactly once, in order (browser adapter, acks)", async () => {
    const s = fresh("s");
    const token = mintToken("dora");
    const { DomWS, gate, cut } = gatedDomWebSocket();
    const dora = client({ url: node.url, participantId: "dora", token, apiKey: undefined, sessions: [s], WebSocket: DomWS, ack: true });
    const it = dora.events();
    await within(dora.connect());
    // The browser adapter puts the credential in the query, not a header.
    assert.equal(new URL(gate.urls[0]).searchParams.get("access_token"), token);
    for (let i = 1; i <= 3; i++) await post(node.url, { session_id: s, message: String(i) });
    const first = await take(it, 3);
    assert.deepEqual(messages(first), ["1", "2", "3"]);
    const last = (first[2] as EventFrame).seq;
    // Consumed events are acked, cumulatively: one ack covers the three at most.
    const next = it.next(); // marks the third consumed
    await waitFor(() => gate.sent.some((f) => JSON.parse(f).type === "ack" && JSON.parse(f).seq === last), 20_000, "ack");
    assert.ok(gate.sent.filter((f) => JSON.parse(f).type === "ack").length <= 3);

    cut(); // the network goes away; reconnects fail until the gate opens
    await waitFor(() => !dora.connected, 20_000, "disconnect");
    const attempts = gate.urls.length;
    await waitFor(() => gate.urls.length > attempts, 20_000, "a failed reconnect attempt");
    for (let i = 4; i <= 13; i++) {
      const r = await post(node.url, { session_id: s, message: String(i) });
      assert.equal(r.recipients, 1);
    }
    gate.duplicate = true; // the client drops what it already has
    gate.open = true;
    const first2 = await within(next);
    assert.equal(first2.done, false);
    const missed = [first2.value as Delivery, ...(await take(it, 9))];
    assert.deepEqual(messages(missed), range(4, 13));
    assertContiguous(missed, last + 1);
    const resumedFrom = new URL(gate.urls[gate.urls.length - 1]).searchParams.get("resume_from");
    assert.equal(resumedFrom, String(last));
    // Nothing more (no duplicate) before a marker sent now.
    await post(node.url, { session_id: s, message: "marker" });
    assert.deepEqual(messages(await take(it, 1)), ["marker"]);
  });

  const platform = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  test("the platform WebSocket (Node's own, a WHATWG one) works as the browser adapter", { skip: !platform && "no globalThis.WebSocket (run node with --experimental-websocket)" }, async () => {
    const s = fresh("s");
    const token = mintToken("lena");
    const lena = client({ url: node.url, participantId: "lena", token, apiKey: undefined, sessions: [s], WebSocket: platform, batch: true, ack: true });
    const it = lena.events();
    await within(lena.connect());
    const r = await within(lena.submitOverSocket({ event_type: "message", session_id: s, message: "to nobody" }).catch((e) => e));
    assert.ok(r instanceof SwitchyardError && r.status === 404, String(r));
    for (let i = 1; i <= 5; i++) await post(node.url, { session_id: s, message: String(i) });
    const got = await take(it, 5);
    assert.deepEqual(messages(got), range(1, 5));
    assertContiguous(got, (got[0] as EventFrame).seq);
  });

  test("resumeFrom: a new client picks up where an earlier one stopped (Node adapter)", async () => {
    const s = fresh("s");
    const id = fresh("erin");
    const first = client({ url: node.url, participantId: id, sessions: [s], ack: true });
    const it = first.events();
    await within(first.connect());
    for (let i = 1; i <= 3; i++) await post(node.url, { session_id: s, message: String(i) });
    assert.deepEqual(messages(await take(it, 3)), ["1", "2", "3"]);
    const last = first.lastSeq;
    await first.close();
    assert.deepEqual(await it.next(), { done: true, value: undefined });
    await assert.rejects(first.submitOverSocket({ event_type: "message", session_id: s }), ConnectionClosedError);

    for (let i = 4; i <= 8; i++) await post(node.url, { session_id: s, message: String(i) });
    const second = client({ url: node.url, participantId: id, sessions: [s], resumeFrom: last });
    const w = await within(second.connect());
    assert.equal(w.resumed, true);
    const it2 = second.events();
    const got = await take(it2, 5);
    assert.deepEqual(messages(got), range(4, 8));
    assertContiguous(got, last + 1);
    await post(node.url, { session_id: s, message: "marker" });
    assert.deepEqual(messages(await take(it2, 1)), ["marker"]);
  });

  test("a token acting as someone else: 403 over REST and the socket, and 1008 at attach ends reconnecting", async () => {
    const s = fresh("s");
    const token = mintToken("frank");
    const frank = client({ url: node.url, participantId: "frank", token, apiKey: undefined, sessions: [s] });
    await within(frank.connect());
    const other = { sender_id: "mallory", sender_type: "ai" as const, event_type: "message", session_id: s };
    for (const attempt of [() => frank.submit(other), () => frank.submitOverSocket(other)]) {
      await assert.rejects(attempt(), (err: unknown) => {
        assert.ok(err instanceof SwitchyardError, String(err));
        assert.equal(err.status, 403);
        return true;
      });
    }

    let disconnects = 0;
    const mallory = client({ url: node.url, participantId: "mallory", token, apiKey: undefined, onDisconnect: () => disconnects++ });
    await assert.rejects(within(mallory.connect()), (err: unknown) => {
      assert.ok(err instanceof PermanentError, String(err));
      assert.equal(err.closeCode, 1008);
      return true;
    });
    await assert.rejects(mallory.events().next(), PermanentError);
    assert.equal(disconnects, 0, "no reconnect after 1008");

    const bad = new Error("the callback gave up");
    const seen: number[] = [];
    const jack = client({
      url: node.url, participantId: fresh("jack"), sessions: [s],
      onEvent: (f) => {
        seen.push(f.seq);
        throw bad;
      },
    });
    await within(jack.connect());
    await post(node.url, { session_id: s, message: "one" });
    await assert.rejects(within(jack.done), (err) => err === bad);
    assert.equal(seen.length, 1);
    assert.equal(jack.connected, false);

    const badKey = client({ url: node.url, participantId: fresh("gina"), apiKey: "wrong" });
    await assert.rejects(within(badKey.connect()), (err: unknown) => {
      assert.ok(err instanceof PermanentError, String(err));
      assert.equal(err.httpStatus, 401);
      return true;
    });
  });
});

test("a gap frame is surfaced when the mailbox overflowed", async (t) => {
  const node = await startNode({ name: "small", args: ["--mailbox-size", "4"] });
  t.after(() => node.stop());
  const s = fresh("s");
  const id = fresh("hank");
  const first = client({ url: node.url, participantId: id, sessions: [s] });
  t.after(() => first.close());
  await within(first.connect());
  await post(node.url, { session_id: s, message: "1" });
  assert.deepEqual(messages(await take(first.events(), 1)), ["1"]);
  const last = first.lastSeq;
  await first.close();
  for (let i = 2; i <= 11; i++) await post(node.url, { session_id: s, message: String(i) });

  const gaps: Delivery[] = [];
  const got: Delivery[] = [];
  const second = client({
    url: node.url, participantId: id, sessions: [s], resumeFrom: last,
    onEvent: (f) => got.push(f), onGap: (g) => gaps.push(g),
  });
  t.after(() => second.close());
  await within(second.connect());
  await waitFor(() => got.length > 0 && (got[got.length - 1] as EventFrame).event.message === "11", 20_000, "event 11");
  assert.equal(gaps.length, 1);
  const gap = gaps[0];
  assert.ok(gap.type === "gap");
  assert.equal(gap.from_seq, last + 1);
  assertContiguous(got, gap.to_seq + 1);
  assert.deepEqual(messages(got), range(11 - got.length + 1, 11));
  assert.ok(got.length <= 4);
  assert.equal(second.lastSeq, last + 10);
});

test("after its node restarts (mailbox lost), the client reconnects (Node adapter, 1006) and takes the new numbering", async (t) => {
  const first = await startNode({ name: "restart-1" });
  t.after(() => first.stop());
  const s = fresh("s");
  const kim = client({ url: first.url, participantId: fresh("kim"), sessions: [s] });
  t.after(() => kim.close());
  const it = kim.events();
  await within(kim.connect());
  for (let i = 1; i <= 2; i++) await post(first.url, { session_id: s, message: `old ${i}` });
  assert.deepEqual(messages(await take(it, 2)), ["old 1", "old 2"]);
  assert.ok(kim.lastSeq >= 2);

  await first.stop(); // SIGKILL: the connection drops (1006) and the mailbox is gone
  const second = await startNode({ name: "restart-2", port: Number(new URL(first.url).port) });
  t.after(() => second.stop());
  await waitFor(() => kim.connected, 30_000, "reconnect to the restarted node");
  for (let i = 1; i <= 3; i++) await post(second.url, { session_id: s, message: `new ${i}` });
  const got = await take(it, 3);
  assert.deepEqual(messages(got), ["new 1", "new 2", "new 3"]);
  assertContiguous(got, (got[0] as EventFrame).seq);
});

test("a draining node's client reconnects to the other node and misses nothing", async (t) => {
  const a = await startNode({ name: "drain-a", args: ["--drain-timeout", "5s"] });
  t.after(() => a.stop());
  const b = await startNode({ name: "drain-b", join: a.gossip });
  t.after(() => b.stop());
  await waitFor(async () => {
    for (const n of [a, b]) {
      const res = await fetch(n.url + "/v1/gateway/members", { headers: { Authorization: `Bearer ${API_KEY}` } });
      const { members } = (await res.json()) as { members: { state: string }[] };
      if (members.filter((m) => m.state === "alive").length !== 2) return false;
    }
    return true;
  }, 30_000, "a two-node cluster");

  const s = fresh("s");
  const welcomes: string[] = [];
  const ivy = client({ url: a.url, alsoUrls: [b.url], participantId: fresh("ivy"), sessions: [s], onWelcome: (w) => welcomes.push(w.node) });
  t.after(() => ivy.close());
  const it = ivy.events();
  assert.equal((await within(ivy.connect())).node, "drain-a");
  await waitFor(async () => (await fetch(`${b.url}/v1/gateway/sessions/${s}`, { headers: { Authorization: `Bearer ${API_KEY}` } })).status === 200, 20_000, "b sees the session");
  for (let i = 1; i <= 3; i++) await post(b.url, { session_id: s, message: String(i) });
  const before = await take(it, 3);
  assert.deepEqual(messages(before), ["1", "2", "3"]);

  assert.equal(await a.stop("SIGTERM"), 0, "a drains and exits 0");
  await waitFor(() => welcomes.includes("drain-b") && ivy.connected, 30_000, "welcome from b");
  for (let i = 4; i <= 8; i++) await post(b.url, { session_id: s, message: String(i) });
  const after = await take(it, 5);
  assert.deepEqual(messages(after), range(4, 8));
  assertContiguous(after, (after[0] as EventFrame).seq);
  await post(b.url, { session_id: s, message: "marker" });
  assert.deepEqual(messages(await take(it, 1)), ["marker"]);
});

after(closeAll);

test("options are checked; close() before connecting ends everything", async () => {
  assert.throws(() => new SwitchyardClient({ url: "ftp://127.0.0.1:1", participantId: "x" }), TypeError);
  assert.throws(() => new SwitchyardClient({ url: "http://127.0.0.1:1", participantId: "" }), TypeError);
  const c = new SwitchyardClient({ url: "http://127.0.0.1:1", participantId: "x" });
  await within(c.close());
  await within(c.done);
  await assert.rejects(c.connect(), ConnectionClosedError);
  assert.deepEqual(await within(c.events().next()), { done: true, value: undefined });
  await assert.rejects(c.submitOverSocket({ event_type: "message", session_id: "s" }), ConnectionClosedError);
});

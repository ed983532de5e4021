// Bounds: the events buffer (maxPending, with backpressure), what lastSeq
// counts, deadlines on socket answers, and the reconnect backoff floor.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  RequestTimeoutError, SwitchyardClient,
  type ClientOptions, type Delivery, type EventFrame, type WebSocketLike,
} from "../src/index.js";
import { API_KEY, freePort, gatedDomWebSocket, post, startNode, take, waitFor, within, type Node } from "./helpers.js";

let counter = 0;
const fresh = (p: string) => `${p}-${++counter}-${process.pid}`;
const clients = new Set<SwitchyardClient>();
function client(opts: ClientOptions): SwitchyardClient {
  const c = new SwitchyardClient({ apiKey: API_KEY, minBackoffMs: 20, maxBackoffMs: 300, ...opts });
  clients.add(c);
  return c;
}
const queued = (c: SwitchyardClient) => (c as unknown as { queue: Delivery[] }).queue.length;
const texts = (ds: Delivery[]) => ds.map((d) => (d.type === "event" ? d.event.message?.split(" ")[0] : "gap"));
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => String(a + i));
function assertContiguous(ds: Delivery[]) {
  const first = (ds[0] as EventFrame).seq;
  assert.deepEqual(ds.map((d) => (d as EventFrame).seq), ds.map((_, i) => first + i), "seqs contiguous");
}
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(url + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  if (!line) throw new Error(`no metric ${name}`);
  return Number(line.split(" ")[1]);
}

describe("bounded buffer", () => {
  let node: Node;
  before(async () => {
    node = await startNode({ name: "bounds", args: ["--write-queue-bytes", "65536"] });
  });
  after(async () => {
    await Promise.all([...clients].map((c) => c.close()));
    clients.clear();
    await node?.stop();
  });

  test("Node adapter: a consumer that does not read holds at most maxPending; the node closes it 4000; then every event once, in order", async () => {
    const s = fresh("s");
    const bob = client({ url: node.url, participantId: fresh("bob"), sessions: [s], maxPending: 20, batch: true });
    await within(bob.connect());
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, queued(bob))), 5);
    const n = 240;
    const big = "x".repeat(32 * 1024); // ~8 MB in all: more than the socket buffers of a reader that stopped
    try {
      for (let i = 1; i <= n; i++) await post(node.url, { session_id: s, message: `${i} ${big}` });
      await waitFor(async () => (await metric(node.url, "switchyard_slow_consumers_total")) >= 1, 30_000, "a 4000 close");
      await post(node.url, { session_id: s, message: String(n + 1) }); // the marker
      const got = await take(bob.events(), n + 1);
      assert.deepEqual(texts(got), range(1, n + 1));
      assertContiguous(got);
    } finally {
      clearInterval(watch);
    }
    assert.ok(most <= 20, `the buffer held ${most}`);
  });

  test("browser adapter (cannot pause): a full buffer drops what does not fit, reattaches at half, loses nothing", async () => {
    const s = fresh("s");
    const { DomWS, gate } = gatedDomWebSocket();
    const dora = client({ url: node.url, participantId: fresh("dora"), sessions: [s], WebSocket: DomWS, maxPending: 5 });
    await within(dora.connect());
    for (let i = 1; i <= 30; i++) await post(node.url, { session_id: s, message: String(i) });
    await waitFor(() => queued(dora) === 5, 20_000, "a full buffer");
    const attempts = gate.urls.length;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(gate.urls.length, attempts, "no reconnect while the buffer is full");
    assert.equal(queued(dora), 5);
    assert.ok(dora.connected);
    await post(node.url, { session_id: s, message: "31" });
    const got = await take(dora.events(), 31);
    assert.deepEqual(texts(got), range(1, 31));
    assertContiguous(got);
  });

  test("a socket call made from the events() loop while the buffer is full is answered (Node adapter)", async () => {
    const s = fresh("s");
    const bob = client({ url: node.url, participantId: fresh("bob"), sessions: [s], maxPending: 5 });
    await within(bob.connect());
    for (let i = 1; i <= 50; i++) await post(node.url, { session_id: s, message: String(i) });
    await waitFor(() => queued(bob) === 5, 20_000, "a full buffer");
    await new Promise((r) => setTimeout(r, 200));
    const it = bob.events();
    const got = await take(it, 1);
    await within(bob.join(fresh("s2")), 10_000, "the join answer");
    await post(node.url, { session_id: s, message: "51" }); // the marker
    got.push(...(await take(it, 50)));
    assert.deepEqual(texts(got), range(1, 51));
    assertContiguous(got);
  });

  test("lastSeq counts what was handed over, not what waits in the buffer", async () => {
    const s = fresh("s");
    const id = fresh("erin");
    const erin = client({ url: node.url, participantId: id, sessions: [s] });
    await within(erin.connect());
    for (let i = 1; i <= 5; i++) await post(node.url, { session_id: s, message: String(i) });
    await waitFor(() => queued(erin) === 5, 20_000, "5 queued");
    assert.equal(erin.lastSeq, 0);
    const two = await take(erin.events(), 2);
    assert.equal(erin.lastSeq, (two[1] as EventFrame).seq);
    const kept = erin.lastSeq;
    await erin.close();
    const again = client({ url: node.url, participantId: id, sessions: [s], resumeFrom: kept });
    assert.deepEqual(texts(await take(again.events(), 3)), ["3", "4", "5"]);
  });
});

test("a socket answer that never comes times out (requestTimeoutMs) and leaves nothing pending", async () => {
  // A node that welcomes and then never answers.
  class Silent implements WebSocketLike {
    readyState = 0;
    onopen: ((ev: any) => void) | null = null;
    onmessage: ((ev: { data: any }) => void) | null = null;
    onerror: ((ev: any) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    constructor(_url: string) {
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
        this.onmessage?.({ data: JSON.stringify({ type: "welcome", participant_id: "p", node: "n", sessions: [], seq: 0, resumed: false }) });
      }, 0);
    }
    send(_data: string) {}
    close(code = 1000, reason = "") {
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
  }
  const c = new SwitchyardClient({ url: "http://127.0.0.1:1", participantId: "p", WebSocket: Silent, requestTimeoutMs: 200 });
  try {
    await within(c.connect());
    await assert.rejects(within(c.submitOverSocket({ event_type: "message", session_id: "s" }), 5_000), RequestTimeoutError);
    await assert.rejects(within(c.join("s2"), 5_000), RequestTimeoutError);
    assert.equal((c as unknown as { pending: Map<string, unknown> }).pending.size, 0);
  } finally {
    await c.close();
  }
});

test("minBackoffMs 0 does not reconnect in a tight loop", async () => {
  const port = await freePort(); // nothing listens there
  let attempts = 0;
  const c = new SwitchyardClient({ url: `http://127.0.0.1:${port}`, participantId: "p", minBackoffMs: 0, maxBackoffMs: 200, onDisconnect: () => attempts++ });
  c.connect().catch(() => {});
  await new Promise((r) => setTimeout(r, 1000));
  await c.close();
  assert.ok(attempts < 40, `${attempts} attempts in 1 s`);
});

test("frames of the wrong shape are skipped, not thrown out of the socket handler", async () => {
  const frames = [
    JSON.stringify({ type: "welcome", participant_id: "p", node: "n", sessions: [], seq: 0, resumed: false }),
    "null", "[1]", '"x"', "{}",
    JSON.stringify({ type: "event", seq: "7" }),
    JSON.stringify({ type: "gap", from_seq: null, to_seq: 3 }),
    JSON.stringify({ type: "event", seq: 1, event_id: "e1", event: { message: "1" } }),
  ];
  class Scripted implements WebSocketLike {
    readyState = 0;
    onopen: ((ev: any) => void) | null = null;
    onmessage: ((ev: { data: any }) => void) | null = null;
    onerror: ((ev: any) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    constructor(_url: string) {
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
        for (const f of frames) this.onmessage?.({ data: f });
      }, 0);
    }
    send(_data: string) {}
    close(code = 1000, reason = "") {
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
  }
  const c = new SwitchyardClient({ url: "http://127.0.0.1:1", participantId: "p", WebSocket: Scripted });
  try {
    const got = await take(c.events(), 1);
    assert.deepEqual(texts(got), ["1"]);
    assert.equal(c.lastSeq, 1);
  } finally {
    await c.close();
  }
});

// Test helpers: real `switchyard serve` child processes on loopback, a
// DOM-style WebSocket built on `ws` (to exercise the browser adapter in
// Node), and small waiting helpers. Everything started here is killed at
// the latest when the test process exits.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { WebSocket as WS } from "ws";
import type { Delivery, WebSocketLike } from "../src/index.js";

export const BIN = process.env.SWITCHYARD_BIN ?? fileURLToPath(new URL("../../../../bin/switchyard", import.meta.url));
export const API_KEY = "test-key";
export const TOKEN_SECRET = "test-token-secret-0123456789abcdef";

const children = new Set<ChildProcess>();
const killAll = () => {
  for (const c of children) c.kill("SIGKILL");
};
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(1);
  });
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", resolve);
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

export interface Node {
  name: string;
  url: string;
  gossip: string;
  proc: ChildProcess;
  exited: Promise<number | null>;
  output(): string;
  /** Sends the signal (SIGKILL by default) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startNode(opts: { name: string; args?: string[]; join?: string; port?: number } = { name: "n1" }): Promise<Node> {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run go build -o bin/switchyard ./cmd/switchyard`);
  const port = opts.port ?? (await freePort());
  const gossipPort = await freePort();
  const gossip = `127.0.0.1:${gossipPort}`;
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--gossip-bind", gossip, "--api-key", API_KEY,
    "--token-secret", TOKEN_SECRET, "--node-name", opts.name, "--log-level", "warn", ...(opts.args ?? [])];
  if (opts.join) args.push("--join", opts.join);
  const proc = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(proc);
  let out = "";
  const keep = (b: Buffer) => {
    out = (out + b.toString()).slice(-8000);
  };
  proc.stdout!.on("data", keep);
  proc.stderr!.on("data", keep);
  const exited = new Promise<number | null>((resolve) =>
    proc.once("exit", (code) => {
      children.delete(proc);
      resolve(code);
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const node: Node = {
    name: opts.name, url, gossip, proc, exited,
    output: () => out,
    stop: async (signal = "SIGKILL") => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
  let dead = false;
  void exited.then(() => (dead = true));
  try {
    await waitFor(async () => {
      if (dead) throw new Error(`switchyard exited early:\n${out}`);
      try {
        return (await fetch(url + "/readyz")).status === 200;
      } catch {
        return false;
      }
    }, 20_000, "node ready");
  } catch (err) {
    await node.stop();
    throw err;
  }
  return node;
}

/** Polls cond (every 20 ms) until it holds; rejects after timeoutMs. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Rejects if p does not settle within ms (generous: a loaded machine is slow, not broken). */
export async function within<T>(p: Promise<T>, ms = 20_000, what = "answer"): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`timed out: ${what}`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

/** Takes the next n deliveries from an events() iterator. */
export async function take(it: AsyncIterator<Delivery>, n: number): Promise<Delivery[]> {
  const got: Delivery[] = [];
  while (got.length < n) {
    const r = await within(it.next(), 20_000, `delivery ${got.length + 1} of ${n}`);
    if (r.done) throw new Error(`iterator ended after ${got.length} of ${n}`);
    got.push(r.value);
  }
  return got;
}

/** Submits over REST with the API key, independently of the client under test. */
export async function post(url: string, event: Record<string, unknown>): Promise<any> {
  const res = await fetch(url + "/v1/gateway/events", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify({ sender_id: "alice", sender_type: "human", event_type: "message", ...event }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`submit: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

export function mintToken(participantId: string): string {
  return execFileSync(BIN, ["token", "--participant-id", participantId], {
    env: { ...process.env, SWITCHYARD_TOKEN_SECRET: TOKEN_SECRET },
  }).toString().trim();
}

/**
 * A constructor with the DOM WebSocket API built on `ws`, as a browser
 * would give it (no headers), plus a gate: while closed, new connections
 * fail like an unreachable node (close 1006). It records URLs and sent
 * frames, and with gate.duplicate hands every message over twice.
 */
export function gatedDomWebSocket() {
  const gate = { open: true, duplicate: false, urls: [] as string[], sent: [] as string[], live: new Set<WS>() };
  class DomWS implements WebSocketLike {
    readyState = 0;
    onopen: ((ev: any) => void) | null = null;
    onmessage: ((ev: { data: any }) => void) | null = null;
    onerror: ((ev: any) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    ws?: WS;
    constructor(url: string) {
      gate.urls.push(url);
      if (!gate.open) {
        setTimeout(() => {
          this.readyState = 3;
          this.onerror?.({});
          this.onclose?.({ code: 1006, reason: "" });
        }, 0);
        return;
      }
      const ws = (this.ws = new WS(url, { perMessageDeflate: false }));
      gate.live.add(ws);
      ws.on("open", () => {
        this.readyState = 1;
        this.onopen?.({});
      });
      ws.on("message", (data) => {
        this.onmessage?.({ data: data.toString() });
        if (gate.duplicate) this.onmessage?.({ data: data.toString() }); // as a buggy network or node might
      });
      ws.on("error", () => this.onerror?.({}));
      ws.on("close", (code, reason) => {
        gate.live.delete(ws);
        this.readyState = 3;
        this.onclose?.({ code, reason: reason.toString() });
      });
    }
    send(data: string) {
      gate.sent.push(data);
      this.ws!.send(data);
    }
    close(code?: number, reason?: string) {
      this.ws?.close(code, reason);
    }
  }
  /** Closes the gate and drops every live connection (as a network cut would: 1006). */
  const cut = () => {
    gate.open = false;
    for (const ws of gate.live) ws.terminate();
  };
  return { DomWS, gate, cut };
}

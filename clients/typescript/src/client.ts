import { ConnectionClosedError, PermanentError, RequestTimeoutError, SwitchyardError } from "./errors.js";
import {
  domSocketFactory,
  nodeSocketFactory,
  type Socket,
  type SocketClose,
  type SocketFactory,
  type WebSocketConstructor,
} from "./socket.js";
import type {
  ClientFrame,
  ErrorBody,
  ErrorFrame,
  EventFrame,
  GapFrame,
  ParticipantType,
  ResultFrame,
  ServerFrame,
  SessionChange,
  SocketEvent,
  SubmitResult,
  WelcomeFrame,
} from "./types.js";

/** What events() yields, in order: delivered events and gaps in the numbering. */
export type Delivery = EventFrame | GapFrame;

/** Passed to onDisconnect when a connection ends and the client will reconnect. */
export interface DisconnectInfo extends SocketClose {
  url: string;
  reconnectInMs: number;
}

export interface ClientOptions {
  /** Base URL of a node (http, https, ws or wss). */
  url: string;
  /** Further nodes: each reconnect tries the next URL of [url, ...alsoUrls]. */
  alsoUrls?: string[];
  /** An API key, sent as the bearer credential. */
  apiKey?: string;
  /** A participant token (HS256 JWT), sent as the bearer credential. */
  token?: string;
  participantId: string;
  /** Default "ai". */
  participantType?: ParticipantType;
  /** Sessions joined on every attach (join/leave keep this list up to date). */
  sessions?: string[];
  /** The last seq the caller already has (from an earlier run): the first attach replays what came after it. */
  resumeFrom?: number;
  /** Send a cumulative ack once events are consumed. */
  ack?: boolean;
  /** Let the node pack several frames into one message. */
  batch?: boolean;
  /**
   * The most deliveries received but not yet taken from events() (default
   * 1000). When the buffer is full the client stops reading from the socket
   * (Node adapter: it pauses it) until events() has taken it down to half,
   * then reads again. Where it cannot pause (browsers), or while a socket
   * call waits for its answer, it reads on but drops the events past the
   * bound without counting them as received, and at half reconnects with
   * resume_from from the last one kept: the node keeps the rest in the mailbox (closing a
   * connection that falls too far behind with 4000). Nothing is dropped and
   * memory stays bounded. Not used with onEvent.
   */
  maxPending?: number;
  /** How long a socket frame with an id (submitOverSocket, join, leave) waits for its answer, in ms (default 30000). */
  requestTimeoutMs?: number;
  /** Reconnect waits are random up to a bound that doubles from minBackoffMs (default 100, at least 1) to maxBackoffMs (default 5000). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * A constructor with the DOM WebSocket API. Default: the `ws` package in
   * Node, globalThis.WebSocket elsewhere. With this adapter the credential
   * goes as access_token in the query, as browsers cannot set headers.
   */
  WebSocket?: WebSocketConstructor;
  /** Callback mode: events go here instead of to events(). */
  onEvent?: (frame: EventFrame) => void;
  /** Gaps in callback mode. */
  onGap?: (frame: GapFrame) => void;
  onWelcome?: (frame: WelcomeFrame) => void;
  /** A client frame was rejected; the connection stays open. */
  onErrorFrame?: (frame: ErrorFrame) => void;
  onDisconnect?: (info: DisconnectInfo) => void;
}

interface Pending {
  resolve(f: ResultFrame): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

const isNode = typeof process !== "undefined" && !!process.versions?.node;

/**
 * A participant's connection to Switchyard that survives drops: it
 * reconnects with exponential backoff and full jitter (trying the next node
 * URL each time), resumes from the last seq received so that nothing still in
 * the mailbox is lost or repeated, optionally acks, and submits events.
 */
export class SwitchyardClient {
  private readonly opts: ClientOptions;
  private readonly urls: string[];
  private readonly credential?: string;
  private readonly sessions: string[];
  private readonly minBackoff: number;
  private readonly maxBackoff: number;
  private readonly maxPending: number;
  private readonly requestTimeout: number;

  /** The newest seq received (queued): where a reconnect resumes. */
  private seq = 0;
  /** The newest seq handed to the caller: lastSeq. */
  private handedSeq = 0;
  private consumedSeq = 0;
  private ackedSeq = 0;
  private ackScheduled = false;
  private nextId = 0;

  private factory?: SocketFactory;
  private socket: Socket | null = null;
  private welcome: WelcomeFrame | null = null;
  private currentUrl: string;
  private readonly pending = new Map<string, Pending>();

  private loop?: Promise<void>;
  private closed = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private welcomeWaiters: { resolve(w: WelcomeFrame): void; reject(e: Error): void }[] = [];

  private readonly queue: Delivery[] = [];
  private taker: (() => void) | null = null;
  /** This connection stopped reading because the buffer filled. */
  private paused = false;
  /** This connection had to drop a delivery (the buffer was full): it is closed and resumed once there is room. */
  private overflowed = false;
  private iterating = false;

  /**
   * Settles when the client stops for good: resolves after close(), rejects
   * with the PermanentError (or the error a callback threw) that stopped it.
   */
  readonly done: Promise<void>;
  private settleDone!: (err: Error | null) => void;

  constructor(opts: ClientOptions) {
    if (!opts.url) throw new TypeError("switchyard: url is required");
    if (!opts.participantId) throw new TypeError("switchyard: participantId is required");
    this.opts = opts;
    this.urls = [opts.url, ...(opts.alsoUrls ?? [])];
    for (const u of this.urls) wsURL(u); // throws on a bad URL
    this.credential = opts.token ?? opts.apiKey;
    this.sessions = [...(opts.sessions ?? [])];
    // At least 1 ms: a zero bound would double to zero and reconnect in a tight loop.
    this.minBackoff = Math.max(opts.minBackoffMs ?? 100, 1);
    this.maxPending = opts.maxPending ?? 1000;
    if (!(this.maxPending >= 1)) throw new TypeError("switchyard: maxPending must be at least 1");
    this.requestTimeout = opts.requestTimeoutMs ?? 30_000;
    this.maxBackoff = Math.max(opts.maxBackoffMs ?? 5000, this.minBackoff);
    this.currentUrl = opts.url;
    if (opts.resumeFrom !== undefined) this.seq = this.handedSeq = this.consumedSeq = this.ackedSeq = opts.resumeFrom;
    this.done = new Promise((resolve, reject) => {
      this.settleDone = (err) => (err ? reject(err) : resolve());
    });
    this.done.catch(() => {}); // rejections are for those who await it
  }

  /**
   * The seq of the last event (or gap end) handed to the caller (by events()
   * or onEvent/onGap), or resumeFrom: keep it to resume a later run.
   * Deliveries still waiting in the buffer do not count, so a later run
   * with resumeFrom = lastSeq gets them again.
   */
  get lastSeq(): number {
    return this.handedSeq;
  }

  /** Whether a connection is up (its welcome frame arrived). */
  get connected(): boolean {
    return this.welcome !== null;
  }

  /**
   * Starts attaching (if not started) and resolves with the welcome frame of
   * the current or next connection. Rejects with PermanentError when the node
   * refuses for good, or ConnectionClosedError after close().
   */
  connect(): Promise<WelcomeFrame> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new ConnectionClosedError("switchyard: the client is closed"));
    this.start();
    if (this.welcome) return Promise.resolve(this.welcome);
    return new Promise((resolve, reject) => this.welcomeWaiters.push({ resolve, reject }));
  }

  /**
   * Event and gap frames in order, each event once. Iteration ends after
   * close(), and throws the PermanentError that stopped the client. Breaking
   * out of the loop leaves the client running; events() may be called again.
   * With ack on, an event counts as consumed when the loop asks for the next.
   */
  events(): AsyncIterableIterator<Delivery> {
    if (this.opts.onEvent) throw new Error("switchyard: events() is not available with onEvent");
    if (this.iterating) throw new Error("switchyard: one events() iterator at a time");
    this.iterating = true;
    this.start();
    let handed: number | undefined;
    const done = (): IteratorResult<Delivery> => {
      this.iterating = false;
      return { done: true, value: undefined };
    };
    const release = () => {
      if (handed !== undefined) this.consumed(handed);
      handed = undefined;
    };
    const it: AsyncIterableIterator<Delivery> = {
      [Symbol.asyncIterator]: () => it,
      next: async () => {
        release();
        const d = await this.take();
        if (!d) return done();
        this.handed(d);
        if (d.type === "event") handed = d.seq;
        return { done: false, value: d };
      },
      return: async () => {
        release();
        return done();
      },
    };
    return it;
  }

  /** Submits over REST (POST /v1/gateway/events); sender_id and sender_type default to this participant. */
  async submit(event: SocketEvent, init: { signal?: AbortSignal } = {}): Promise<SubmitResult> {
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (this.credential) headers.Authorization = `Bearer ${this.credential}`;
    const body = {
      sender_id: this.opts.participantId,
      sender_type: this.opts.participantType ?? "ai",
      ...event,
    };
    const res = await fetch(httpURL(this.currentUrl) + "/v1/gateway/events", {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: init.signal,
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (res.status !== 200) {
      throw new SwitchyardError(res.status, (parsed as ErrorBody) ?? { detail: text.slice(0, 200) || undefined });
    }
    return parsed as SubmitResult;
  }

  /**
   * Submits over the socket (a submit frame), resolved by the matching
   * result frame; rejects with SwitchyardError on a non-200 answer, and with
   * ConnectionClosedError when not connected or the connection drops first
   * (submit again with the same event_id: the node delivers it once).
   */
  async submitOverSocket(event: SocketEvent): Promise<SubmitResult> {
    const id = this.newId();
    return (await this.request({ type: "submit", id, event })) as SubmitResult;
  }

  /** Joins a session (a join frame); later attaches join it too. */
  async join(sessionId: string): Promise<SessionChange> {
    const body = (await this.request({ type: "join", id: this.newId(), session_id: sessionId })) as SessionChange;
    if (!this.sessions.includes(sessionId)) this.sessions.push(sessionId);
    return body;
  }

  /** Leaves a session (a leave frame); later attaches leave it out. */
  async leave(sessionId: string): Promise<SessionChange> {
    const body = (await this.request({ type: "leave", id: this.newId(), session_id: sessionId })) as SessionChange;
    const i = this.sessions.indexOf(sessionId);
    if (i >= 0) this.sessions.splice(i, 1);
    return body;
  }

  /** Acks what was consumed, closes the connection (1000) and stops reconnecting. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.flushAck();
      this.socket?.close(1000, "");
      this.wake?.();
      this.taker?.();
      for (const w of this.welcomeWaiters.splice(0)) w.reject(new ConnectionClosedError("switchyard: the client is closed"));
      if (!this.loop) this.settleDone(null); // never started
    }
    await this.loop;
  }

  // --- internals ----------------------------------------------------------

  private start(): void {
    if (this.loop || this.closed) return;
    this.loop = this.run()
      .catch((err: Error) => this.fail(err))
      .finally(() => this.settleDone(this.failure));
  }

  private async run(): Promise<void> {
    this.factory ??= await pickFactory(this.opts.WebSocket);
    let backoff = this.minBackoff;
    let resume = this.opts.resumeFrom !== undefined;
    for (let attempt = 0; !this.closed && !this.failure; attempt++) {
      const url = this.urls[attempt % this.urls.length];
      const { connected, close } = await this.session(url, resume);
      if (this.closed || this.failure) return;
      const permanent = permanentError(close);
      if (permanent) return this.fail(permanent);
      if (connected) backoff = this.minBackoff; // it worked for a while: start over
      resume ||= this.seq > 0;
      const wait = Math.random() * backoff;
      this.opts.onDisconnect?.({ ...close, url, reconnectInMs: wait });
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
      backoff = Math.min(2 * backoff, this.maxBackoff);
    }
  }

  /** One connection; resolves when it ends. */
  private session(base: string, resume: boolean): Promise<{ connected: boolean; close: SocketClose }> {
    return new Promise((resolve) => {
      let connected = false;
      this.currentUrl = base;
      this.paused = this.overflowed = false;
      const sock = this.factory!(this.attachURL(base, resume), this.credential, {
        open: () => {},
        message: (data) => {
          for (const line of data.split("\n")) {
            if (this.closed || this.failure) return; // stopping: hand nothing more over
            if (!line.trim()) continue;
            let f: ServerFrame;
            try {
              f = JSON.parse(line);
            } catch {
              continue; // not JSON: skipped, as the Go client does
            }
            // JSON of the wrong shape (null, an array, a seq that is not a
            // number) would throw below, out of the socket's event handler
            // (an uncaught exception in Node) or corrupt the resume point:
            // skipped too.
            if (!wellFormed(f)) continue;
            if (f.type === "welcome") connected = true;
            try {
              this.handle(f);
            } catch (err) {
              // A callback threw: stop, as the Go client's Run returns the handler's error.
              this.fail(err instanceof Error ? err : new Error(String(err)));
              this.socket?.close(1000, "");
              return;
            }
          }
        },
        close: (c) => {
          this.socket = null;
          this.welcome = null;
          for (const p of this.pending.values()) {
            clearTimeout(p.timer);
            p.reject(new ConnectionClosedError());
          }
          this.pending.clear();
          resolve({ connected, close: c });
        },
      });
      this.socket = sock;
      if (this.closed || this.failure) sock.close(1000, "");
    });
  }

  private handle(f: ServerFrame): void {
    switch (f.type) {
      case "welcome":
        if (f.seq < this.seq) {
          // The node's numbering for this participant restarted (its
          // mailbox could not be had): events from now on are new.
          this.seq = f.seq;
          this.handedSeq = Math.min(this.handedSeq, f.seq);
          this.consumedSeq = Math.min(this.consumedSeq, f.seq);
          this.ackedSeq = Math.min(this.ackedSeq, f.seq);
        }
        this.welcome = f;
        for (const w of this.welcomeWaiters.splice(0)) w.resolve(f);
        this.opts.onWelcome?.(f);
        this.flushAck();
        return;
      case "event":
        if (f.seq <= this.seq) return; // replayed twice (a race at reconnect): already had
        if (this.deliver(f)) this.seq = f.seq;
        return;
      case "gap":
        if (this.deliver(f)) this.seq = Math.max(this.seq, f.to_seq);
        return;
      case "result": {
        const p = this.pending.get(f.id);
        if (!p) return;
        this.pending.delete(f.id);
        clearTimeout(p.timer);
        p.resolve(f);
        return;
      }
      case "error":
        this.opts.onErrorFrame?.(f);
        return;
    }
  }

  /** Hands d over or queues it; false when it was dropped (the buffer is full) and must come again. */
  private deliver(d: Delivery): boolean {
    if (this.opts.onEvent) {
      this.handed(d);
      if (d.type === "event") {
        this.opts.onEvent(d);
        this.consumed(d.seq);
      } else this.opts.onGap?.(d);
      return true;
    }
    if (this.overflowed || this.queue.length >= this.maxPending) {
      // Frames the socket had already read when it paused: drop this one
      // and everything after it on this connection, which is closed once
      // there is room; the reconnect resumes right before it.
      this.overflowed = true;
      return false;
    }
    this.queue.push(d);
    this.taker?.();
    if (this.queue.length >= this.maxPending && !this.paused && this.pending.size === 0 && this.socket?.pause) {
      this.paused = true;
      this.socket.pause();
    }
    // Where the socket cannot pause (browsers), or while a socket call
    // waits for its answer (which comes behind the unread events), reading
    // goes on and the events past the bound are dropped (overflowed).
    return true;
  }

  private handed(d: Delivery): void {
    this.handedSeq = d.type === "event" ? d.seq : Math.max(this.handedSeq, d.to_seq);
  }

  /**
   * Reading starts again once the buffer is down to half (not at the first
   * free slot: a resumed socket hands over a whole network read at once).
   */
  private get lowWater(): number {
    return Math.floor(this.maxPending / 2);
  }

  /** The caller took a delivery: read again if reading had stopped. */
  private madeRoom(): void {
    if (this.queue.length > this.lowWater) return;
    if (this.overflowed) {
      this.socket?.close(1000, ""); // and reconnect right before what was dropped
    } else if (this.paused) {
      this.paused = false;
      this.socket?.resume?.();
    }
  }

  private async take(): Promise<Delivery | null> {
    for (;;) {
      if (this.closed) return null;
      const d = this.queue.shift();
      if (d) {
        this.madeRoom();
        return d;
      }
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.taker = resolve));
      this.taker = null;
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.welcomeWaiters.splice(0)) w.reject(err);
    this.taker?.();
  }

  private consumed(seq: number): void {
    if (!this.opts.ack || seq <= this.consumedSeq) return;
    this.consumedSeq = seq;
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setTimeout(() => {
      // acks for events consumed in one go coalesce into one
      this.ackScheduled = false;
      this.flushAck();
    }, 0);
  }

  private flushAck(): void {
    if (!this.socket || !this.welcome || this.consumedSeq <= this.ackedSeq) return;
    this.send({ type: "ack", seq: this.consumedSeq });
    this.ackedSeq = this.consumedSeq;
  }

  private send(frame: ClientFrame): void {
    this.socket!.send(JSON.stringify(frame));
  }

  private newId(): string {
    return "c" + ++this.nextId;
  }

  private request(frame: ClientFrame & { id: string }): Promise<unknown> {
    if (!this.socket || !this.welcome) return Promise.reject(new ConnectionClosedError("switchyard: not connected"));
    return new Promise<ResultFrame>((resolve, reject) => {
      // Every waiting answer has a deadline: the map of them cannot grow
      // without bound on a node that never answers.
      const timer = setTimeout(() => {
        this.pending.delete(frame.id);
        reject(new RequestTimeoutError(`switchyard: no answer to ${frame.type} ${frame.id} within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this.pending.set(frame.id, { resolve, reject, timer });
      if (this.paused) {
        // The answer comes behind events the full buffer cannot take: read
        // on (dropping them, see deliver) so that it arrives.
        this.paused = false;
        this.socket!.resume?.();
      }
      try {
        this.send(frame);
      } catch (err) {
        this.pending.delete(frame.id);
        clearTimeout(timer);
        reject(new ConnectionClosedError(`switchyard: send failed: ${(err as Error).message}`));
      }
    }).then((r) => {
      if (r.status !== 200) throw new SwitchyardError(r.status, r.body as ErrorBody);
      return r.body;
    });
  }

  private attachURL(base: string, resume: boolean): string {
    const u = new URL(wsURL(base) + "/v1/gateway/ws");
    u.searchParams.set("participant_id", this.opts.participantId);
    u.searchParams.set("participant_type", this.opts.participantType ?? "ai");
    for (const s of this.sessions) u.searchParams.append("session_id", s);
    if (resume) u.searchParams.set("resume_from", String(this.seq));
    if (this.opts.batch) u.searchParams.set("batch", "1");
    return u.toString();
  }
}

const isSeq = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;

/** Whether the fields this client reads have the types SPEC section 3 gives. */
function wellFormed(f: unknown): f is ServerFrame {
  if (typeof f !== "object" || f === null || Array.isArray(f)) return false;
  const o = f as Record<string, unknown>;
  switch (o.type) {
    case "event":
      return isSeq(o.seq) && (o.event === undefined || (typeof o.event === "object" && o.event !== null));
    case "gap":
      return isSeq(o.from_seq) && isSeq(o.to_seq);
    case "welcome":
      return isSeq(o.seq ?? 0);
    case "result":
      return typeof o.id === "string" && typeof o.status === "number";
    default:
      return typeof o.type === "string";
  }
}

function permanentError(c: SocketClose): PermanentError | null {
  if (c.code === 1008) {
    return new PermanentError(`the node closed the connection by policy (1008): ${c.reason}`, { closeCode: 1008 });
  }
  const s = c.httpStatus;
  if (s !== undefined && s >= 400 && s < 500 && s !== 408 && s !== 429) {
    return new PermanentError(`attach refused (${s}): ${c.detail ?? ""}`, { httpStatus: s });
  }
  return null;
}

async function pickFactory(WS?: WebSocketConstructor): Promise<SocketFactory> {
  if (WS) return domSocketFactory(WS);
  if (isNode) {
    const mod = await import("ws");
    return nodeSocketFactory(mod.WebSocket);
  }
  const platform = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!platform) throw new Error("switchyard: no WebSocket implementation: pass options.WebSocket");
  return domSocketFactory(platform);
}

function trimSlash(u: string): string {
  return u.replace(/\/+$/, "");
}

/** The ws(s):// form of a node's base URL. */
function wsURL(base: string): string {
  const u = new URL(trimSlash(base));
  const scheme = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" }[u.protocol];
  if (!scheme) throw new TypeError(`switchyard: node URL ${base}: want http(s) or ws(s)`);
  return trimSlash(scheme + base.slice(u.protocol.length));
}

/** The http(s):// form of a node's base URL. */
function httpURL(base: string): string {
  return trimSlash(base.replace(/^ws(s?):/i, "http$1:"));
}

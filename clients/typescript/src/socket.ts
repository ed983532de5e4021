// A small adapter over the two WebSocket APIs the client runs on: the `ws`
// package in Node (credential in the Authorization header, HTTP status of a
// refused attach readable) and the platform WebSocket in browsers
// (credential as access_token in the query; a refused attach is a 1006).

/** How a connection ended. */
export interface SocketClose {
  code: number;
  reason: string;
  /** HTTP status when the node refused the upgrade (Node only). */
  httpStatus?: number;
  /** HTTP body of such a refusal, or the network error's message. */
  detail?: string;
}

export interface SocketHandlers {
  open(): void;
  message(data: string): void;
  /** Called exactly once, whatever happened. */
  close(c: SocketClose): void;
}

export interface Socket {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** Stop reading from the network (backpressure); absent where the platform cannot. */
  pause?(): void;
  resume?(): void;
}

/** Opens a connection to url; credential is the bearer token, if any. */
export type SocketFactory = (url: string, credential: string | undefined, h: SocketHandlers) => Socket;

/** The part of the DOM WebSocket API the browser adapter uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The browser adapter: any constructor with the DOM WebSocket API. */
export function domSocketFactory(WS: WebSocketConstructor): SocketFactory {
  return (url, credential, h) => {
    const u = new URL(url);
    if (credential) u.searchParams.set("access_token", credential);
    const sock = new WS(u.toString());
    let done = false;
    const finish = (c: SocketClose) => {
      if (!done) {
        done = true;
        h.close(c);
      }
    };
    sock.onopen = () => h.open();
    sock.onmessage = (ev) => {
      if (typeof ev.data === "string") h.message(ev.data);
    };
    sock.onerror = () => {}; // the close event that follows says it all
    sock.onclose = (ev) => finish({ code: ev.code, reason: ev.reason });
    return {
      send: (data) => sock.send(data),
      close: (code, reason) => {
        try {
          sock.close(code, reason);
        } catch {
          finish({ code: 1006, reason: "closed by the client" });
        }
      },
    };
  };
}

/** The Node adapter, on the `ws` package (loaded by the caller). */
export function nodeSocketFactory(WS: typeof import("ws").WebSocket): SocketFactory {
  return (url, credential, h) => {
    const headers: Record<string, string> = {};
    if (credential) headers.Authorization = `Bearer ${credential}`;
    const sock = new WS(url, { headers, perMessageDeflate: false, handshakeTimeout: 10_000 });
    let done = false;
    let lastError: string | undefined;
    const finish = (c: SocketClose) => {
      if (!done) {
        done = true;
        h.close(c);
      }
    };
    sock.on("open", () => h.open());
    sock.on("message", (data, isBinary) => {
      if (!isBinary) h.message(data.toString());
    });
    sock.on("error", (err) => {
      lastError = err.message;
    });
    sock.on("close", (code, reason) => finish({ code, reason: reason.toString(), detail: lastError }));
    sock.on("unexpected-response", (req, res) => {
      // The node answered the upgrade with an HTTP error: keep its status.
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      const end = () => {
        req.destroy();
        finish({ code: 1006, reason: "", httpStatus: res.statusCode, detail: body.trim() });
      };
      res.on("end", end);
      res.on("error", end);
      res.on("close", end);
    });
    return {
      send: (data) => sock.send(data),
      pause: () => sock.pause(),
      resume: () => sock.resume(),
      close: (code, reason) => {
        if (done) return;
        if (sock.readyState === sock.CONNECTING) {
          sock.terminate();
          finish({ code: 1006, reason: "closed by the client" });
        } else {
          sock.resume(); // a paused socket would never read the node's close frame
          sock.close(code, reason);
        }
      },
    };
  };
}

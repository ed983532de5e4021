import type { ErrorBody } from "./types.js";

/** A non-200 answer from the node, over REST or as a result frame. */
export class SwitchyardError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field?: string;
  /** On a 502: the event's id, to retry with. */
  readonly eventId?: string;
  /** On a 429 or a 503 that says when: whole seconds to wait before retrying. */
  readonly retryAfter?: number;
  readonly body: ErrorBody;

  constructor(status: number, body: Partial<ErrorBody> | undefined) {
    const b: ErrorBody = {
      status: "error",
      code: body?.code ?? "http_" + status,
      detail: body?.detail ?? "the node answered " + status,
      ...(body?.field !== undefined && { field: body.field }),
      ...(body?.event_id !== undefined && { event_id: body.event_id }),
      ...(body?.failed !== undefined && { failed: body.failed }),
      ...(body?.retry_after !== undefined && { retry_after: body.retry_after }),
    };
    super(`switchyard: ${status} ${b.code}: ${b.detail}`);
    this.name = "SwitchyardError";
    this.status = status;
    this.code = b.code;
    this.field = b.field;
    this.eventId = b.event_id;
    this.retryAfter = b.retry_after;
    this.body = b;
  }
}

/**
 * The connection closed before the answer to a socket frame came (or there
 * was no connection). A submit may or may not have been accepted: submit it
 * again with the same event_id, which the node delivers once.
 */
export class ConnectionClosedError extends Error {
  constructor(message = "switchyard: the connection closed before the answer") {
    super(message);
    this.name = "ConnectionClosedError";
  }
}

/** A refusal that reconnecting cannot fix: close 1008, or HTTP 4xx at attach. */
export class PermanentError extends Error {
  readonly closeCode?: number;
  readonly httpStatus?: number;
  constructor(message: string, opts: { closeCode?: number; httpStatus?: number } = {}) {
    super("switchyard: " + message);
    this.name = "PermanentError";
    this.closeCode = opts.closeCode;
    this.httpStatus = opts.httpStatus;
  }
}

/**
 * A socket frame with an id (submit, join, leave) got no answer within
 * requestTimeoutMs. A submit may or may not have been accepted: submit it
 * again with the same event_id, which the node delivers once.
 */
export class RequestTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RequestTimeoutError";
  }
}

// Wire types of the Switchyard gateway API, written from docs/openapi.yaml
// (test/schema.test.ts checks the field lists against it).

export type ParticipantType = "human" | "ai";

/** A GatewayEvent as submitted (components.schemas.EventFields / GatewayEvent). */
export interface GatewayEvent {
  sender_id: string;
  sender_type: ParticipantType;
  event_type: string;
  message?: string;
  session_id?: string;
  sender_gateway_url?: string;
  metadata?: Record<string, unknown>;
  recipient_id?: string;
  event_id?: string;
}

/** What submitOverSocket takes: sender_id and sender_type default to this participant. */
export type SocketEvent = Omit<GatewayEvent, "sender_id" | "sender_type"> &
  Partial<Pick<GatewayEvent, "sender_id" | "sender_type">>;

/** A GatewayEvent as recipients get it, with its event_id (DeliveredEvent). */
export interface DeliveredEvent extends GatewayEvent {
  event_id: string;
}

/** 200 answer to a submit (SubmitResult). */
export interface SubmitResult {
  status: "ok";
  event_id: string;
  recipients: number;
  live: number;
  queued: number;
  duplicates: number;
}

/** 200 answer to a join or leave frame (SessionChange). */
export interface SessionChange {
  status: "ok";
  session_id: string;
}

/** The error body of every endpoint (Error). */
export interface ErrorBody {
  status: "error";
  code: string;
  detail: string;
  field?: string;
  event_id?: string;
  failed?: string[];
  /** On a 429 rate_limited or a 503 that says when: whole seconds to wait. */
  retry_after?: number;
}

// --- frames the server sends ---------------------------------------------

export interface WelcomeFrame {
  type: "welcome";
  participant_id: string;
  node: string;
  sessions: string[];
  seq: number;
  resumed: boolean;
}

export interface EventFrame {
  type: "event";
  seq: number;
  event_id: string;
  traceparent?: string;
  session_id?: string;
  event: DeliveredEvent;
}

export interface GapFrame {
  type: "gap";
  from_seq: number;
  to_seq: number;
}

export interface ResultFrame {
  type: "result";
  id: string;
  status: number;
  body: SubmitResult | SessionChange | { status: "ok" } | ErrorBody;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  detail: string;
}

export type ServerFrame = WelcomeFrame | EventFrame | GapFrame | ResultFrame | ErrorFrame;

// --- frames the client sends ---------------------------------------------

export interface JoinFrame {
  type: "join";
  id?: string;
  session_id: string;
}

export interface LeaveFrame {
  type: "leave";
  id?: string;
  session_id: string;
}

export interface SubmitFrame {
  type: "submit";
  id?: string;
  event: SocketEvent;
}

export interface AckFrame {
  type: "ack";
  id?: string;
  seq: number;
}

export type ClientFrame = JoinFrame | LeaveFrame | SubmitFrame | AckFrame;

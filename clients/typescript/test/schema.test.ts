// The wire types of src/types.ts against docs/openapi.yaml: each interface
// has exactly the schema's properties, and the same required ones. The
// tables below are checked both ways by the compiler (an object literal of
// type Record<keyof T, ...> must name every key and no other), and at run
// time against the YAML.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parse } from "yaml";
import type {
  AckFrame, DeliveredEvent, ErrorBody, ErrorFrame, EventFrame, GapFrame, GatewayEvent, JoinFrame, LeaveFrame,
  ResultFrame, SessionChange, SubmitFrame, SubmitResult, WelcomeFrame,
} from "../src/index.js";

type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
/** Every key of T, each marked required (true) or optional (false), as the type says. */
type Fields<T> = { [K in keyof T]-?: K extends RequiredKeys<T> ? true : false };

const gatewayEvent: Fields<GatewayEvent> = {
  sender_id: true, sender_type: true, event_type: true, message: false, session_id: false,
  sender_gateway_url: false, metadata: false, recipient_id: false, event_id: false,
};
const deliveredEvent: Fields<DeliveredEvent> = { ...gatewayEvent, event_id: true };
const errorBody: Fields<ErrorBody> = { status: true, code: true, detail: true, field: false, event_id: false, failed: false, retry_after: false };
const submitResult: Fields<SubmitResult> = { status: true, event_id: true, recipients: true, live: true, queued: true, duplicates: true };
const sessionChange: Fields<SessionChange> = { status: true, session_id: true };
const welcome: Fields<WelcomeFrame> = { type: true, participant_id: true, node: true, sessions: true, seq: true, resumed: true };
const event: Fields<EventFrame> = { type: true, seq: true, event_id: true, traceparent: false, session_id: false, event: true };
const gap: Fields<GapFrame> = { type: true, from_seq: true, to_seq: true };
const result: Fields<ResultFrame> = { type: true, id: true, status: true, body: true };
const error: Fields<ErrorFrame> = { type: true, code: true, detail: true };
const join: Fields<JoinFrame> = { type: true, id: false, session_id: true };
const leave: Fields<LeaveFrame> = { type: true, id: false, session_id: true };
const submit: Fields<SubmitFrame> = { type: true, id: false, event: true };
const ack: Fields<AckFrame> = { type: true, id: false, seq: true };

const doc = parse(readFileSync(new URL("../../../../docs/openapi.yaml", import.meta.url), "utf8"));
const schemas: Record<string, any> = doc.components.schemas;

/** A schema's properties and required list, following allOf and $ref. */
function shape(name: string): { properties: Set<string>; required: Set<string> } {
  const s = schemas[name];
  assert.ok(s, `docs/openapi.yaml has no schema ${name}`);
  const properties = new Set<string>(Object.keys(s.properties ?? {}));
  const required = new Set<string>(s.required ?? []);
  for (const part of s.allOf ?? []) {
    const inner = part.$ref ? shape(part.$ref.replace("#/components/schemas/", "")) : { properties: new Set(Object.keys(part.properties ?? {})), required: new Set<string>(part.required ?? []) };
    inner.properties.forEach((p) => properties.add(p));
    inner.required.forEach((r) => required.add(r));
  }
  return { properties, required };
}

const cases: [string, Record<string, boolean>][] = [
  ["GatewayEvent", gatewayEvent], ["DeliveredEvent", deliveredEvent], ["Error", errorBody],
  ["SubmitResult", submitResult], ["SessionChange", sessionChange],
  ["WelcomeFrame", welcome], ["EventFrame", event], ["GapFrame", gap], ["ResultFrame", result], ["ErrorFrame", error],
  ["JoinFrame", join], ["LeaveFrame", leave], ["SubmitFrame", submit], ["AckFrame", ack],
];

for (const [name, fields] of cases) {
  test(`the ${name} type matches docs/openapi.yaml`, () => {
    const { properties, required } = shape(name);
    assert.deepEqual(Object.keys(fields).sort(), [...properties].sort(), `${name}: properties`);
    const ours = Object.entries(fields).filter(([, r]) => r).map(([k]) => k);
    assert.deepEqual(ours.sort(), [...required].sort(), `${name}: required properties`);
  });
}

test("the frame types are the ones docs/openapi.yaml lists", () => {
  assert.deepEqual(Object.keys(schemas.ServerFrame.discriminator.mapping).sort(), ["error", "event", "gap", "result", "welcome"]);
  assert.deepEqual(Object.keys(schemas.ClientFrame.discriminator.mapping).sort(), ["ack", "join", "leave", "submit"]);
  for (const [name, type] of [["WelcomeFrame", "welcome"], ["EventFrame", "event"], ["GapFrame", "gap"], ["ResultFrame", "result"],
    ["ErrorFrame", "error"], ["JoinFrame", "join"], ["LeaveFrame", "leave"], ["SubmitFrame", "submit"], ["AckFrame", "ack"]]) {
    assert.equal(schemas[name].properties.type.const, type, name);
  }
});

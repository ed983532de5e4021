// The README's example, kept identical to it by test/readme.test.ts and
// type-checked by the build.
import { SwitchyardClient, SwitchyardError } from "@switchyard/client";

const client = new SwitchyardClient({
  url: "http://127.0.0.1:8787",
  alsoUrls: ["http://127.0.0.1:8788"],  // tried in turn on reconnect
  apiKey: process.env.SWITCHYARD_API_KEY, // or token: a participant token
  participantId: "bob",
  sessions: ["s1"],
  ack: true,
});

await client.connect(); // resolves with the welcome frame

await client.submitOverSocket({ event_type: "message", session_id: "s1", message: "hi" });

for await (const f of client.events()) {
  if (f.type === "gap") {
    console.warn(`events ${f.from_seq}-${f.to_seq} were dropped from the mailbox`);
    continue;
  }
  console.log(f.seq, f.event.sender_id, f.event.message);
  if (f.event.message === "bye") break; // the client keeps running
}

try {
  await client.submit({ event_type: "message", session_id: "empty" }); // over REST
} catch (err) {
  if (err instanceof SwitchyardError) console.log(err.status, err.code, err.field);
}
await client.close();

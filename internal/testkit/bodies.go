package testkit

// SubmitBody is a typical REST submit body, for benchmarks of the submit
// path and of its decoding.
const SubmitBody = `{"sender_id":"src","sender_type":"ai","event_type":"message","session_id":"s",` +
	`"message":"a message of a typical size for an agent hand-off, about one line of text",` +
	`"metadata":{"trace":"abc","priority":2}}`

// Package tasks owns the goroutines of a long-lived component that outlive
// the call that started them: background loops (a sweeper, a serve loop)
// and work a timer starts later. A Group starts them and hands each the
// group's context; once stopped it cancels that context and refuses new
// work (ErrClosed), and Close waits for what still runs. A component's
// shutdown so ends all of them, and none can start behind it
// (nats-server's startGoRoutine is the model).
//
// Goroutines that end with the call that started them (a forward the
// request's handler waits for) need no Group.
package tasks

package testkit

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// FastGossip shortens memberlist's timers so that an in-process cluster on
// loopback sees joins, failures and anti-entropy within a fraction of a
// second instead of memberlist's LAN seconds. It is a
// membership.GossipConfig.Memberlist hook.
func FastGossip(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = 500 * time.Millisecond
	c.SuspicionMult = 2
	c.TCPTimeout = 500 * time.Millisecond
	// A node seen dead is no longer gossiped to after a second, not 30:
	// tests kill and restart nodes within a few seconds.
	c.GossipToTheDeadTime = time.Second
}

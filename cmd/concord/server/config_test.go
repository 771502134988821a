package server

import (
	"strings"
	"testing"
)

// Validate fills the log's segment size and refuses one too small to hold
// a group commit's frame comfortably.
func TestConfigLogSegmentBytes(t *testing.T) {
	c := Config{}
	if err := c.Validate(); err != nil || c.LogSegmentBytes != 64<<20 {
		t.Fatalf("default: %d %v", c.LogSegmentBytes, err)
	}
	c = Config{LogSegmentBytes: 1000}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--log-segment-bytes") {
		t.Fatalf("1000-byte segments: %v", err)
	}
}

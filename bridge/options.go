package bridge

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/serve-zone/remoteingress/internal/ratelog"
)

// Dialect selects the wire format spoken on the input and output streams.
type Dialect int

const (
	// Management is the newline-delimited JSON dialect of @push.rocks/smartrust's RustBridge.
	Management Dialect = iota + 1
	// JSONRPC is plain JSON-RPC 2.0, one object per line.
	JSONRPC
)

// String returns the dialect's command-line name.
func (d Dialect) String() string {
	switch d {
	case Management:
		return "management"
	case JSONRPC:
		return "jsonrpc"
	default:
		return fmt.Sprintf("Dialect(%d)", int(d))
	}
}

const (
	// MaxLineBytes is the longest request line accepted (50 MiB, RustBridge's
	// default maxPayloadSize), not counting the newline. Longer lines are
	// discarded in pieces and answered with an error.
	MaxLineBytes = 50 << 20

	// DefaultEventQueueSize is how many events may wait for the output before
	// further events are dropped and counted.
	DefaultEventQueueSize = 8192

	// DefaultMaxInFlight is how many requests are handled at once by default,
	// and again how many quick ones (ping, status requests, unknown methods),
	// which have slots of their own. While a request waits for a slot, the
	// input is not read: the parent's writes wait in the pipe.
	DefaultMaxInFlight = 256

	// DefaultMaxInFlightBytes bounds by default the bytes (method, id and
	// params) of the requests handled at once; a request bigger than that is
	// handled alone. Like DefaultMaxInFlight, reaching it pauses the input.
	DefaultMaxInFlightBytes = 64 << 20

	// DefaultShutdownTimeout bounds the graceful shutdown of Run: stopping the
	// hub and the edge and flushing queued events. At the end of input, up to
	// one more second goes first to answering the requests already read.
	DefaultShutdownTimeout = 3 * time.Second
)

// Options configures Run. The zero value of every field but Dialect takes a default.
type Options struct {
	// Dialect is the wire format; it must be Management or JSONRPC.
	Dialect Dialect
	// Version is reported in the ready event.
	Version string
	// Logger receives diagnostics; nil discards them. Params and secrets are never logged.
	Logger *slog.Logger
	// EventQueueSize bounds the event queue (default DefaultEventQueueSize).
	EventQueueSize int
	// ShutdownTimeout bounds the graceful shutdown (default DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// MaxInFlight bounds the requests handled at once, and again the quick
	// ones (default DefaultMaxInFlight).
	MaxInFlight int
	// MaxInFlightBytes bounds the bytes of the requests handled at once
	// (default DefaultMaxInFlightBytes).
	MaxInFlightBytes int64

	// maxLineBytes overrides MaxLineBytes in tests.
	maxLineBytes int
	// logBurst overrides logBurst in tests.
	logBurst int
}

// withDefaults returns o with every unset field at its default.
func (o Options) withDefaults() (Options, error) {
	if o.Dialect != Management && o.Dialect != JSONRPC {
		return o, fmt.Errorf("bridge: unknown dialect %v", o.Dialect)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.EventQueueSize <= 0 {
		o.EventQueueSize = DefaultEventQueueSize
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxInFlightBytes <= 0 {
		o.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if o.maxLineBytes <= 0 {
		o.maxLineBytes = MaxLineBytes
	}
	if o.logBurst <= 0 {
		o.logBurst = ratelog.DefaultBurst
	}
	return o, nil
}

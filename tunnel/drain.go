package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// drainPoll is how often a drain looks at the active streams.
const drainPoll = 20 * time.Millisecond

// drain is Hub.Shutdown and Edge.Shutdown once the hub refuses new streams:
// stopListening closes the listeners (a failure is logged), then drain
// waits for active to reach 0 or ctx to end, and closes everything with
// closeAll. It returns ctx's error when streams were still open at the end,
// joined with closeAll's.
func drain(ctx context.Context, log *slog.Logger, side string, stopListening func() error, active func() int, closeAll func() error) error {
	if err := stopListening(); err != nil {
		log.Warn("closing listeners", "err", err)
	}
	log.Info(side+" draining", "activeStreams", active())
	err := waitIdle(ctx, active)
	if err != nil {
		log.Warn(side+" drain cut short", "activeStreams", active(), "reason", err.Error())
	}
	return errors.Join(err, closeAll())
}

// waitIdle waits until active returns 0 or ctx ends (then it returns ctx's error).
func waitIdle(ctx context.Context, active func() int) error {
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for active() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

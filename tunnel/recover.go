package tunnel

import (
	"fmt"
	"log/slog"
	"runtime/debug"
)

// recoverInto turns a panic in the calling goroutine into a logged error
// stored in *err, so that a bug triggered by one peer's input ends that
// peer's work, never the process. Use as: defer recoverInto(log, "what", &err).
func recoverInto(log *slog.Logger, what string, err *error) {
	if r := recover(); r != nil {
		log.Error("internal error", "in", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		if err != nil {
			*err = fmt.Errorf("internal error in %s", what)
		}
	}
}

package tunnel

import (
	"fmt"
	"log/slog"
	"runtime/debug"
)

// panicError is a panic turned into an error by recoverInto. A tunnel that
// ends with one tells its peer "internal error", nothing more.
type panicError struct{ what string }

func (e *panicError) Error() string { return "internal error in " + e.what }

// recoverInto turns a panic in the calling goroutine into a logged
// *panicError stored in *err, so that a bug triggered by one peer's input
// ends that peer's work, never the process. Use as: defer recoverInto(log,
// "what", &err). It is the only place that recovers panics.
func recoverInto(log *slog.Logger, what string, err *error) {
	if r := recover(); r != nil {
		log.Error("internal error", "in", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		if err != nil {
			*err = &panicError{what: what}
		}
	}
}

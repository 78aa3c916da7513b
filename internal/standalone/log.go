package standalone

import (
	"io"
	"log/slog"
	"strings"
)

// parseLevel parses a logLevel value.
func parseLevel(s string) (slog.Level, bool) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}

// newLogger returns a logger on w (stderr) in format ("text", the
// key=value lines of --management, or "json") at level, which a reload may
// change.
func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// setLevel applies a logLevel value (already validated) to level.
func setLevel(level *slog.LevelVar, s string) {
	if l, ok := parseLevel(s); ok {
		level.Set(l)
	}
}

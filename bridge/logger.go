package bridge

import (
	"fmt"
	"log/slog"
	"strings"
)

// connLogger routes the jsonrpc2.Conn's own messages to slog, one line each.
type connLogger struct{ log *slog.Logger }

// Printf implements jsonrpc2.Logger.
func (l connLogger) Printf(format string, args ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

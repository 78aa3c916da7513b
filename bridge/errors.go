package bridge

import (
	"errors"
	"fmt"

	"github.com/sourcegraph/jsonrpc2"
)

// CodeOperationFailed is the JSON-RPC error code of an operation's own
// failures (a port that cannot be bound, a hub that is already running...).
const CodeOperationFailed = -32000

// rpcError is an error with its JSON-RPC code.
type rpcError struct {
	code    int64
	message string
}

// Error implements error.
func (e *rpcError) Error() string { return e.message }

// invalidParams is a -32602 error.
func invalidParams(format string, args ...any) error {
	return &rpcError{code: jsonrpc2.CodeInvalidParams, message: fmt.Sprintf(format, args...)}
}

// unknownMethod is a -32601 error naming the method.
func unknownMethod(method string) error {
	return &rpcError{code: jsonrpc2.CodeMethodNotFound, message: fmt.Sprintf("unknown method %q", truncate(method, 100))}
}

// toWireError gives err its JSON-RPC code: -32000 unless it carries one.
func toWireError(err error) *jsonrpc2.Error {
	var re *rpcError
	if errors.As(err, &re) {
		return &jsonrpc2.Error{Code: re.code, Message: re.message}
	}
	return &jsonrpc2.Error{Code: CodeOperationFailed, Message: err.Error()}
}

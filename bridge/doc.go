// Package bridge connects a parent process to the remoteingress engine over
// stdin and stdout.
//
// It speaks two line-based dialects through one [jsonrpc2.Conn]:
//
//   - [Management], the newline-delimited JSON of @push.rocks/smartrust's
//     RustBridge: requests {"id","method","params"}, answers
//     {"id","success","result"|"error"} and events {"event","data"};
//   - [JSONRPC], plain JSON-RPC 2.0 with one object per line, for use by hand.
//
// Both carry the same methods (ping, startHub, stopHub, updateAllowedEdges,
// getHubStatus, createConnectionToken, startEdge, stopEdge, getEdgeStatus)
// with the same params and results. [Run] serves one such session until its input ends or its context
// is cancelled, then stops the hub and the edge.
//
// Input from a hostile or broken parent gets errors, never a crash or
// unbounded memory: lines are at most [MaxLineBytes]; JSON nested deeper than
// encoding/json's limit (10000) is rejected; requests in flight are bounded
// by [Options].MaxInFlight (with as many again for ping, status requests and
// unknown methods, so that they are answered while slow requests wait) and
// MaxInFlightBytes, beyond which the input is not read (backpressure through
// the pipe); the warnings for rejected lines
// and failed requests are limited to 10 a second each, the rest counted in a
// summary line ("N more lines rejected"). A UTF-8 byte order mark at the
// start of a line is ignored, as RFC 8259 allows. Bytes that are not UTF-8
// inside JSON strings become U+FFFD, as encoding/json decodes them, so every
// output line is valid UTF-8.
//
// Secrets (edge secrets, connection tokens, TLS keys) never appear in a log
// line, an error, an event or a status result (a token is only the result
// of createConnectionToken). Request params are never logged, and of a
// rejected line only its id is logged and echoed, never its content.
//
// [jsonrpc2.Conn]: https://pkg.go.dev/github.com/sourcegraph/jsonrpc2#Conn
package bridge

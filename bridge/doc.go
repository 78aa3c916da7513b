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
// getHubStatus, startEdge, stopEdge, getEdgeStatus) with the same params and
// results. [Run] serves one such session until its input ends or its context
// is cancelled, then stops the hub and the edge.
//
// Secrets (edge secrets, TLS keys) never appear in a log line, an error, an
// event or a status result, and request params are never logged.
//
// [jsonrpc2.Conn]: https://pkg.go.dev/github.com/sourcegraph/jsonrpc2#Conn
package bridge

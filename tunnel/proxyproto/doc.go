// Package proxyproto writes and strictly parses PROXY protocol headers
// (HAProxy's proxy-protocol.txt): the v1 text line and the v2 binary form.
//
// The edge describes each client connection with a Header; the hub writes
// it in front of the bytes it relays to a target. The parsers accept only
// what a writer in this package could have meant: they are used on input
// from the other end of a tunnel and must not be generous.
package proxyproto

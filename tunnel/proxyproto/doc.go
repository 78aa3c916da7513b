// Package proxyproto writes and strictly parses PROXY protocol headers
// (HAProxy's proxy-protocol.txt): the v1 text line and the v2 binary form.
//
// The edge describes each client connection with a Header and sends it to
// the hub as a v1 line in the OPEN frame; the hub parses it back and writes
// it in front of the bytes it relays to a target. v2 is the binary form, for
// TCP (STREAM) and UDP (DGRAM). The parsers take input from the other end of
// a tunnel and are not generous: one spelling of each header (v1), one
// command (v2), and errors that all wrap ErrBadHeader.
package proxyproto

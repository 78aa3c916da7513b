// Package stun discovers the public address of this host with one STUN
// Binding transaction (RFC 5389) over UDP, as the edge does to report the
// IP its clients reach it on.
//
// Messages are encoded and decoded by github.com/pion/stun/v3; this package
// adds resolution, a connected socket, the retransmission schedule and the
// strict choice of which datagram counts as the answer.
package stun

// Package nft is the kernel backend of the edge's firewall: where the edge
// runs as root and the kernel has nf_tables, the blocked prefixes are
// installed as nftables rules in a table of the edge's own, so that blocked
// TCP connections and UDP datagrams to the edge's listen ports are dropped in
// the kernel before any socket sees them.
//
// The table (family inet) holds one base chain on the input hook, a little
// before the default filter priority, whose policy is accept; its rules drop
// packets whose source is in the blocked sets and whose destination port is
// one of the edge's listen ports, and count what they drop in one named
// counter. Replace swaps the rules and sets in one netlink batch, Close
// removes the table and Open removes a table of the same name left behind by
// a process that died without closing it.
//
// The package takes plain netip.Prefix lists and port numbers; the rules'
// parsing and the in-process check are the parent package's.
package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// ErrUnavailable is wrapped by the errors of Open when nftables cannot be
// used: the process is not root (lacks CAP_NET_ADMIN), the kernel has no
// nf_tables (or lacks a part the table needs), or the OS is not Linux. The
// error wraps the cause too. The caller then relies on its in-process check.
var ErrUnavailable = errors.New("nftables unavailable")

// tablePrefix starts the name of every table this package makes.
const tablePrefix = "remoteingress_"

// maxIDChars bounds the part of a table's name taken from the edge id.
const maxIDChars = 32

// TableName is the edge's own table for an edge id: "remoteingress_", the id
// with every character other than ASCII letters, digits, '-' and '_'
// replaced by '_' and cut to 32 characters, then '_' and 12 hex digits of
// the id's SHA-256, so that two ids never share a table even where their
// sanitized forms are the same. The name is at most 59 characters and is a
// valid nft identifier.
func TableName(edgeID string) string {
	var b strings.Builder
	b.WriteString(tablePrefix)
	n := 0
	for _, r := range edgeID {
		if n == maxIDChars {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		n++
	}
	sum := sha256.Sum256([]byte(edgeID))
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(sum[:6]))
	return b.String()
}

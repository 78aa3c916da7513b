//go:build !linux

package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
)

// Table is the edge's own nftables table. nftables is Linux's: elsewhere no
// Table can be opened.
type Table struct{}

// errNotLinux is the cause wrapped with ErrUnavailable off Linux.
var errNotLinux = errors.New("nftables is Linux only")

// Open fails off Linux with an error wrapping ErrUnavailable.
func Open(table string) (*Table, error) {
	return nil, fmt.Errorf("%w: open table %q on %s: %w", ErrUnavailable, table, runtime.GOOS, errNotLinux)
}

// Replace fails off Linux with an error wrapping ErrUnavailable.
func (t *Table) Replace(blocked []netip.Prefix, tcpPorts, udpPorts []int) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, errNotLinux)
}

// Dropped fails off Linux with an error wrapping ErrUnavailable.
func (t *Table) Dropped() (uint64, error) {
	return 0, fmt.Errorf("%w: %w", ErrUnavailable, errNotLinux)
}

// Close does nothing off Linux.
func (t *Table) Close() error { return nil }

// RemoveLeftover fails off Linux with an error wrapping ErrUnavailable.
func RemoveLeftover(table string) (bool, error) {
	return false, fmt.Errorf("%w: %w", ErrUnavailable, errNotLinux)
}

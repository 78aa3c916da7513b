package tunnel

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/serve-zone/remoteingress/internal/ratelog"
	"github.com/serve-zone/remoteingress/tunnel/firewall"
	"github.com/serve-zone/remoteingress/tunnel/firewall/nft"
)

// The edge's firewall (CONTRACT section 7): the rules the hub sends with
// the assignment, checked in process for every new client before its OPEN
// (tunnel/firewall), and, where the edge may use nf_tables (root, a kernel
// that has it, FirewallBackend "auto"), the blocked addresses also dropped
// by the kernel in a table of the edge's own (tunnel/firewall/nft), so that
// their packets never reach the edge's sockets.

// Firewall backends (EdgeConfig.FirewallBackend).
const (
	// FirewallAuto uses nftables for blockedIps where it can, and the
	// in-process check always.
	FirewallAuto = "auto"
	// FirewallProcess uses the in-process check alone.
	FirewallProcess = "process"
)

// edgeFirewall is the edge's firewall, both backends.
type edgeFirewall struct {
	fw        *firewall.Firewall
	log       *slog.Logger
	refuseLog *ratelog.Limiter
	kernel    bool   // FirewallAuto: try nftables
	table     string // its name

	mu          sync.Mutex
	nft         *nft.Table // open while blocked addresses are installed
	unavailable string     // why nftables cannot be used here, or ""
	said        bool       // unavailable was logged
	droppedBase uint64     // what tables closed before had dropped
}

func newEdgeFirewall(cfg EdgeConfig, log *slog.Logger) *edgeFirewall {
	f := &edgeFirewall{fw: firewall.New(nil), log: log, kernel: cfg.FirewallBackend != FirewallProcess,
		table:     nft.TableName(cfg.EdgeID),
		refuseLog: ratelog.New(log, slog.LevelInfo, "%d more clients refused by the firewall")}
	if f.kernel {
		// A table left by an edge of this id that did not stop (kill -9) goes
		// now; without one nothing of the kernel's is touched until blocked
		// addresses arrive.
		if removed, err := nft.RemoveLeftover(f.table); err != nil {
			f.unavailable = err.Error()
		} else if removed {
			f.log.Info("removed the nftables table an earlier edge left behind", "table", f.table)
		}
	}
	return f
}

// apply makes rules (nil: none) the firewall's, for new clients at once;
// open connections from an address the new rules block are closed. The
// kernel's table drops the blocked addresses on the bound ports.
func (f *edgeFirewall) apply(rules *firewall.Rules, bound portLists) {
	var policy *firewall.Policy
	var blocked []netip.Prefix
	if rules != nil && !rules.IsZero() {
		p, err := firewall.Compile(*rules)
		if err != nil { // checked by the hub and by parseAssign
			f.log.Error("firewall rules refused", "err", err)
			return
		}
		policy = p
		blocked, _ = rules.Blocked()
	}
	f.fw.Update(policy)
	f.applyKernel(blocked, bound)
}

// applyKernel installs blocked for the bound ports in the edge's nftables
// table, opening it at the first block and removing it when none is left.
func (f *edgeFirewall) applyKernel(blocked []netip.Prefix, bound portLists) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.kernel {
		return
	}
	if len(blocked) == 0 || len(bound.TCP)+len(bound.UDP) == 0 {
		f.closeTableLocked()
		return
	}
	if f.nft == nil && f.unavailable == "" {
		t, err := nft.Open(f.table)
		if err != nil {
			f.unavailable = err.Error()
		}
		f.nft = t
	}
	if f.nft == nil {
		if !f.said {
			f.said = true
			f.log.Info("blocked addresses are refused in process only: nftables cannot be used here", "reason", f.unavailable)
		}
		return
	}
	if err := f.nft.Replace(blocked, bound.TCP, bound.UDP); err != nil {
		f.log.Warn("cannot install the blocked addresses in nftables; they are refused in process", "table", f.table, "err", err)
		f.closeTableLocked()
		return
	}
	f.log.Info("blocked addresses installed in nftables", "table", f.table, "prefixes", len(blocked))
}

func (f *edgeFirewall) closeTableLocked() {
	if f.nft == nil {
		return
	}
	if n, err := f.nft.Dropped(); err == nil {
		f.droppedBase += n
	}
	if err := f.nft.Close(); err != nil {
		f.log.Warn("cannot remove the nftables table", "table", f.table, "err", err)
	}
	f.nft = nil
}

// refused counts the clients refused in process and the packets the
// kernel's rules dropped.
func (f *edgeFirewall) refused() uint64 {
	n := f.fw.Refused()
	f.mu.Lock()
	defer f.mu.Unlock()
	n += f.droppedBase
	if f.nft != nil {
		if d, err := f.nft.Dropped(); err == nil {
			n += d
		}
	}
	return n
}

// close removes the kernel's table.
func (f *edgeFirewall) close() {
	f.mu.Lock()
	f.closeTableLocked()
	f.mu.Unlock()
	f.refuseLog.Flush()
}

// admit checks a new client connection. On success the ticket is released
// when the connection ends; onBlock is called if a later update blocks the
// client's address.
func (f *edgeFirewall) admit(remote net.Addr, onBlock func()) (*firewall.Ticket, bool) {
	addr := addrOf(remote)
	t, v := f.fw.Admit(addr, onBlock)
	if v != firewall.OK {
		f.refuseLog.Log("client refused by the firewall", "client", addr.String(), "reason", v.String())
		return nil, false
	}
	return t, true
}

// addrOf is the IP of a TCP or UDP address, IPv4-mapped ones unmapped.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// edgeClient lets the firewall close a client's stream whenever a block
// lands, even before its stream exists.
type edgeClient struct {
	mu      sync.Mutex
	abort   func(reason string)
	blocked bool
}

const blockedReason = "client address blocked by the edge firewall"

// block aborts the client's stream, now or as soon as it is opened.
func (c *edgeClient) block() {
	c.mu.Lock()
	c.blocked = true
	abort := c.abort
	c.mu.Unlock()
	if abort != nil {
		abort(blockedReason)
	}
}

// opened records the stream's abort; false if a block came first (and the
// stream is aborted).
func (c *edgeClient) opened(abort func(string)) bool {
	c.mu.Lock()
	c.abort = abort
	blocked := c.blocked
	c.mu.Unlock()
	if blocked {
		abort(blockedReason)
		return false
	}
	return true
}

//go:build linux

package nft

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The objects inside the table. The names are the table's own, so they
// never meet another program's.
const (
	chainName   = "input"
	counterName = "dropped"
	set4Name    = "blocked4"
	set6Name    = "blocked6"
	tcpSetName  = "tcp_ports"
	udpSetName  = "udp_ports"
)

// chainPriority is the base chain's: a little before the default filter
// priority (0), so blocked packets die before other filter chains spend
// work on them.
const chainPriority = nftables.ChainPriority(-10)

// elemsPerMsg bounds the set elements of one netlink message: a message's
// element list is one netlink attribute, whose length is 16 bits.
const elemsPerMsg = 1024

// Table is the edge's own nftables table, from Open until Close. Its methods
// are safe for concurrent use.
type Table struct {
	mu     sync.Mutex
	closed bool

	table              *nftables.Table
	chain              *nftables.Chain
	set4, set6         *nftables.Set
	tcpPorts, udpPorts *nftables.Set

	// installed is what the last Replace put in, for a rebuild of a
	// table removed behind the edge's back.
	installed fill
	// base is what the counters of the table's earlier incarnations
	// (before rebuilds) counted; seen is the current counter's last value
	// read.
	base, seen uint64
}

// fill is the content of the sets, as set elements.
type fill struct {
	e4, e6, tcp, udp []nftables.SetElement
}

func (f fill) elems() int { return len(f.e4) + len(f.e6) + len(f.tcp) + len(f.udp) }

// errClosed is returned by the methods of a Table after Close.
var errClosed = errors.New("nft: table is closed")

// Open removes any table of that name left behind by an earlier process (a
// crash) and creates it fresh, empty (admitting everything): the base chain,
// the named counter and the empty sets. It fails with an error wrapping
// ErrUnavailable when nftables cannot be used (not root, no nf_tables or a
// part of it missing in the kernel); the probe for the parts the rules need
// is in the same batch, so Open fails rather than a later Replace. One
// process owns a table: a second Open of the same name replaces the first's.
func Open(table string) (*Table, error) {
	if table == "" || len(table) > unix.NFT_NAME_MAXLEN-1 || strings.IndexByte(table, 0) >= 0 {
		return nil, fmt.Errorf("nft: open table %q: a table's name is 1 to %d bytes without NUL", table, unix.NFT_NAME_MAXLEN-1)
	}
	t := newTable(table)
	c, err := newConn(0)
	if err != nil {
		return nil, classify(fmt.Errorf("open table %q: %w", table, err))
	}
	if err := t.queueCreate(c); err != nil {
		return nil, fmt.Errorf("nft: open table %q: %w", table, err)
	}
	if err := c.Flush(); err != nil {
		return nil, classify(fmt.Errorf("open table %q: %w", table, err))
	}
	return t, nil
}

// queueCreate queues the removal of the table, whether it is there or
// not, and its creation afresh with all its objects and no rule.
func (t *Table) queueCreate(c *nftables.Conn) error {
	// Adding before deleting makes the delete find a table whether or not
	// a leftover was there; all of it is one batch, so the leftover's rules
	// are in force until the fresh table is.
	c.AddTable(t.table)
	c.DelTable(t.table)
	c.AddTable(t.table)
	c.AddChain(t.chain)
	c.AddObj(&nftables.CounterObj{Table: t.table, Name: counterName})
	for i, s := range []*nftables.Set{t.set4, t.set6, t.tcpPorts, t.udpPorts} {
		s.ID = uint32(i + 1) // batch-local ids, not the library's global counter
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	// Probe: one rule of each shape, flushed again in the same batch, so a
	// kernel without an expression the rules use fails here.
	for _, r := range t.rules(true, true, true, true) {
		c.AddRule(r)
	}
	c.FlushChain(t.chain)
	return nil
}

// queueFill queues the replacement of the rules and the sets' elements by
// f's: the chain and the sets are flushed and filled again.
func (t *Table) queueFill(c *nftables.Conn, f fill) error {
	c.FlushChain(t.chain)
	for _, s := range []*nftables.Set{t.set4, t.set6, t.tcpPorts, t.udpPorts} {
		c.FlushSet(s)
	}
	for _, add := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{t.set4, f.e4}, {t.set6, f.e6}, {t.tcpPorts, f.tcp}, {t.udpPorts, f.udp}} {
		for chunk := range slices.Chunk(add.elems, elemsPerMsg) {
			if err := c.SetAddElements(add.set, chunk); err != nil {
				return fmt.Errorf("set %s: %w", add.set.Name, err)
			}
		}
	}
	v4, v6 := len(f.e4) > 0, len(f.e6) > 0
	tcp, udp := len(f.tcp) > 0, len(f.udp) > 0
	for _, r := range t.rules(v4 && tcp, v4 && udp, v6 && tcp, v6 && udp) {
		c.AddRule(r)
	}
	return nil
}

// rebuild makes the table again, filled with f, in one batch: for a table
// someone removed (nft flush ruleset, a firewall manager's reload). The
// counter starts again, so what the old one counted moves to base; the
// drops between the last read and the removal are lost. Called with t.mu
// held.
func (t *Table) rebuild(f fill) error {
	c, err := newConn(f.elems())
	if err != nil {
		return err
	}
	if err := t.queueCreate(c); err != nil {
		return err
	}
	if err := t.queueFill(c, f); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return err
	}
	t.base += t.seen
	t.seen = 0
	return nil
}

// newTable is the description of the table's objects; nothing is sent.
func newTable(name string) *Table {
	tab := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	prio := chainPriority
	policy := nftables.ChainPolicyAccept
	return &Table{
		table: tab,
		chain: &nftables.Chain{
			Name:     chainName,
			Table:    tab,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookInput,
			Priority: &prio,
			Policy:   &policy,
		},
		set4:     &nftables.Set{Table: tab, Name: set4Name, KeyType: nftables.TypeIPAddr, Interval: true},
		set6:     &nftables.Set{Table: tab, Name: set6Name, KeyType: nftables.TypeIP6Addr, Interval: true},
		tcpPorts: &nftables.Set{Table: tab, Name: tcpSetName, KeyType: nftables.TypeInetService},
		udpPorts: &nftables.Set{Table: tab, Name: udpSetName, KeyType: nftables.TypeInetService},
	}
}

// rules are the drop rules for the combinations asked for, which nft
// lists as
//
//	tcp dport @tcp_ports ip saddr @blocked4 counter name "dropped" drop
//
// and the udp and ip6 variants (each also matches meta nfproto and meta
// l4proto first, as nft does for an inet table).
func (t *Table) rules(tcp4, udp4, tcp6, udp6 bool) []*nftables.Rule {
	var rs []*nftables.Rule
	add := func(want bool, addrs, ports *nftables.Set, v6 bool, proto byte) {
		if want {
			rs = append(rs, &nftables.Rule{Table: t.table, Chain: t.chain, Exprs: dropExprs(addrs, ports, v6, proto)})
		}
	}
	add(tcp4, t.set4, t.tcpPorts, false, unix.IPPROTO_TCP)
	add(udp4, t.set4, t.udpPorts, false, unix.IPPROTO_UDP)
	add(tcp6, t.set6, t.tcpPorts, true, unix.IPPROTO_TCP)
	add(udp6, t.set6, t.udpPorts, true, unix.IPPROTO_UDP)
	return rs
}

// dropExprs is one drop rule: the cheap compares first, then the port
// set, then the address set.
func dropExprs(addrs, ports *nftables.Set, v6 bool, proto byte) []expr.Any {
	family, saddrOff, saddrLen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if v6 {
		family, saddrOff, saddrLen = unix.NFPROTO_IPV6, 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: saddrLen},
		&expr.Lookup{SourceRegister: 1, SetName: addrs.Name, SetID: addrs.ID},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counterName},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// Replace installs exactly these blocked prefixes for these listen ports,
// in one atomic netlink batch: the chain and the sets are flushed and
// filled again in the same transaction, so there is never a moment with no
// rules or half the rules, and the named counter the rules count in stays.
// Prefixes are IPv4 or IPv6 (an IPv4-mapped one of /96 or longer is taken
// as IPv4: a dual-stack socket's IPv4 clients reach the kernel as IPv4
// packets; a shorter one matches IPv6 packets only), masked here too;
// overlapping and adjacent ones are merged.
// Ports are 1-65535. With no blocked prefix of a family or no port of a
// protocol, that combination has no rule; the sets are loaded all the same.
// A table removed behind the edge's back is made again.
func (t *Table) Replace(blocked []netip.Prefix, tcpPorts, udpPorts []int) error {
	r4, r6, err := mergePrefixes(blocked)
	if err != nil {
		return fmt.Errorf("nft: replace: %w", err)
	}
	tcp, err := portElems(tcpPorts)
	if err != nil {
		return fmt.Errorf("nft: replace: tcp ports: %w", err)
	}
	udp, err := portElems(udpPorts)
	if err != nil {
		return fmt.Errorf("nft: replace: udp ports: %w", err)
	}
	f := fill{e4: intervalElems(r4), e6: intervalElems(r6), tcp: tcp, udp: udp}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errClosed
	}
	c, err := newConn(f.elems())
	if err != nil {
		return fmt.Errorf("nft: replace rules of table %q: %w", t.table.Name, err)
	}
	if err := t.queueFill(c, f); err != nil {
		return fmt.Errorf("nft: replace rules of table %q: %w", t.table.Name, err)
	}
	err = c.Flush()
	if errors.Is(err, unix.ENOENT) {
		// The table or a part of it is gone: make it again.
		err = t.rebuild(f)
	}
	if err != nil {
		return fmt.Errorf("nft: replace rules of table %q (%d IPv4 and %d IPv6 ranges, %d TCP and %d UDP ports): %w",
			t.table.Name, len(r4), len(r6), len(tcp), len(udp), err)
	}
	t.installed = f
	return nil
}

// Dropped is the packets the table's rules dropped since Open, monotonic
// across Replace (the rules count in one named counter that Replace keeps).
// A table removed behind the edge's back is made again, with the last
// Replace's content, and its count goes on from the last one read.
func (t *Table) Dropped() (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, errClosed
	}
	n, err := t.readCounter()
	if err == nil {
		t.seen = n
		return t.base + t.seen, nil
	}
	if present, lerr := t.present(); lerr != nil || present {
		return 0, fmt.Errorf("nft: read counter %s of table %q: %w", counterName, t.table.Name, err)
	}
	if err := t.rebuild(t.installed); err != nil {
		return 0, fmt.Errorf("nft: make table %q again (it was removed): %w", t.table.Name, err)
	}
	return t.base, nil
}

// readCounter is the named counter's packets.
func (t *Table) readCounter() (uint64, error) {
	c, err := newConn(0)
	if err != nil {
		return 0, err
	}
	obj, err := c.GetObject(&nftables.CounterObj{Table: t.table, Name: counterName})
	if err != nil {
		return 0, err
	}
	switch o := obj.(type) {
	case *nftables.CounterObj:
		return o.Packets, nil
	case *nftables.NamedObj:
		if ctr, ok := o.Obj.(*expr.Counter); ok {
			return ctr.Packets, nil
		}
	}
	return 0, fmt.Errorf("the kernel answered %T, not a counter", obj)
}

// present tells whether the table is in the kernel with its counter.
func (t *Table) present() (bool, error) {
	c, err := newConn(0)
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(t.table.Family)
	if err != nil {
		return false, err
	}
	for _, x := range tables {
		if x.Name == t.table.Name {
			objs, err := c.GetObjects(t.table)
			if err != nil {
				return false, err
			}
			for _, o := range objs {
				if co, ok := o.(*nftables.CounterObj); ok && co.Name == counterName {
					return true, nil
				}
			}
			return false, nil
		}
	}
	return false, nil
}

// Close removes the table, its rules, sets and counter. Idempotent; a table
// someone else removed already is closed without error.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	c, err := newConn(0)
	if err != nil {
		return fmt.Errorf("nft: remove table %q: %w", t.table.Name, err)
	}
	c.DelTable(t.table)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nft: remove table %q: %w", t.table.Name, err)
	}
	t.closed = true
	return nil
}

// newConn is a netlink connection for one operation (each Flush or query
// dials its own socket and closes it), with a send buffer big enough for a
// batch of about elems set elements.
func newConn(elems int) (*nftables.Conn, error) {
	return nftables.New(nftables.WithSockOptions(func(nc *netlink.Conn) error {
		// The kernel's error strings are best effort (old kernels lack
		// them). Not NETLINK_CAP_ACK: the library cannot parse its acks.
		_ = nc.SetOption(netlink.ExtendedAcknowledge, true)
		if need := 64*elems + 64<<10; need > 208<<10 {
			setBuffers(nc, need)
		}
		return nil
	}))
}

// setBuffers raises the socket's send buffer to n bytes, so a big batch
// goes out in one send, and its receive buffer too, as an error's ack
// carries the message it refuses: past net.core.wmem_max and rmem_max
// where the process may (CAP_NET_ADMIN, which nftables needs anyway).
// Should it fail, the batch's send says so (EMSGSIZE).
func setBuffers(nc *netlink.Conn, n int) {
	rc, err := nc.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = errors.Join(
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n))
		})
		if err == nil && serr == nil {
			return
		}
	}
	_ = nc.SetWriteBuffer(n)
	_ = nc.SetReadBuffer(n)
}

// classify wraps err with ErrUnavailable when it says nftables cannot be
// used here, with a hint of why; other errors are returned as they are,
// prefixed with the package's name.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (needs root or CAP_NET_ADMIN): %w", ErrUnavailable, err)
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT),
		errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w (the kernel lacks nf_tables or a part of it): %w", ErrUnavailable, err)
	}
	return fmt.Errorf("nft: %w", err)
}

// addrRange is the addresses first to last, both included, of one family.
type addrRange struct{ first, last netip.Addr }

func (r addrRange) String() string { return r.first.String() + "-" + r.last.String() }

// mergePrefixes sorts, masks and merges the prefixes into disjoint,
// non-adjacent ranges per family (the kernel refuses overlapping intervals).
func mergePrefixes(blocked []netip.Prefix) (v4, v6 []addrRange, err error) {
	for i, p := range blocked {
		if !p.IsValid() {
			return nil, nil, fmt.Errorf("blocked[%d]: not a valid prefix (%v)", i, p)
		}
		p = p.Masked()
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		r := addrRange{p.Addr(), lastAddr(p)}
		if r.first.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return mergeRanges(v4), mergeRanges(v6), nil
}

// mergeRanges merges ranges of one family that overlap or touch.
func mergeRanges(rs []addrRange) []addrRange {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b addrRange) int {
		return cmp.Or(a.first.Compare(b.first), a.last.Compare(b.last))
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		cur := &out[len(out)-1]
		next := cur.last.Next() // invalid when cur reaches the family's last address
		if !next.IsValid() || r.first.Compare(next) <= 0 {
			if r.last.Compare(cur.last) > 0 {
				cur.last = r.last
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// lastAddr is the last address in p (p is masked).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// intervalElems are the elements of an interval set for the ranges: a
// start at each first address and an interval end at the address after
// each last one, left out where the range reaches the family's last
// address (the interval then runs to the end).
func intervalElems(rs []addrRange) []nftables.SetElement {
	elems := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		elems = append(elems, nftables.SetElement{Key: r.first.AsSlice()})
		if end := r.last.Next(); end.IsValid() {
			elems = append(elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return elems
}

// portElems are the set elements for the ports, deduplicated.
func portElems(ports []int) ([]nftables.SetElement, error) {
	seen := make(map[int]bool, len(ports))
	elems := make([]nftables.SetElement, 0, len(ports))
	for i, p := range ports {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("[%d]: port %d is not 1-65535", i, p)
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		elems = append(elems, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(uint16(p))})
	}
	return elems, nil
}

// RemoveLeftover removes the table of that name if one is there (left by a
// process that did not stop: kill -9), and touches nothing otherwise. It
// reports whether it removed one; the error wraps ErrUnavailable when
// nftables cannot be used.
func RemoveLeftover(table string) (bool, error) {
	c, err := newConn(0)
	if err != nil {
		return false, classify(fmt.Errorf("list tables: %w", err))
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, classify(fmt.Errorf("list tables: %w", err))
	}
	for _, x := range tables {
		if x.Name == table {
			c.DelTable(x)
			if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				return false, classify(fmt.Errorf("remove leftover table %q: %w", table, err))
			}
			return true, nil
		}
	}
	return false, nil
}

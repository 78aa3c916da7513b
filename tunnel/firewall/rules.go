package firewall

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rules is the firewall of one edge as the hub's caller gives it
// (updateAllowedEdges entries' "firewall"). The zero value admits everyone.
type Rules struct {
	// BlockedIPs are refused: IPs or CIDRs, IPv4 or IPv6. An IPv4-mapped
	// IPv6 client matches IPv4 rules.
	BlockedIPs []string `json:"blockedIps,omitempty"`
	// AllowedIPs, when not empty, are the only addresses admitted (and
	// BlockedIPs still refuses inside them).
	AllowedIPs []string `json:"allowedIps,omitempty"`
	// MaxConnectionsPerIP caps the TCP connections plus UDP flows one
	// client IP has open at once; 0 is no limit.
	MaxConnectionsPerIP int `json:"maxConnectionsPerIp,omitempty"`
	// ConnectionRatePerIP caps new TCP connections and UDP flows per second
	// per client IP, a token bucket whose burst is the same number; 0 is no
	// limit.
	ConnectionRatePerIP int `json:"connectionRatePerIp,omitempty"`
}

// FieldError is a rule that is not valid. Field is its path below Rules in
// the names of the JSON members ("blockedIps[3]", "maxConnectionsPerIp").
type FieldError struct {
	Field string
	Msg   string
}

// Error implements error.
func (e *FieldError) Error() string { return e.Field + " " + e.Msg }

// Validate checks every rule; the error is a *FieldError naming the first
// bad one.
func (r Rules) Validate() error {
	if _, err := parsePrefixes("blockedIps", r.BlockedIPs); err != nil {
		return err
	}
	if _, err := parsePrefixes("allowedIps", r.AllowedIPs); err != nil {
		return err
	}
	if r.MaxConnectionsPerIP < 0 {
		return &FieldError{Field: "maxConnectionsPerIp", Msg: "must not be negative"}
	}
	if r.ConnectionRatePerIP < 0 {
		return &FieldError{Field: "connectionRatePerIp", Msg: "must not be negative"}
	}
	return nil
}

// IsZero reports whether r admits everyone.
func (r Rules) IsZero() bool {
	return len(r.BlockedIPs) == 0 && len(r.AllowedIPs) == 0 && r.MaxConnectionsPerIP == 0 && r.ConnectionRatePerIP == 0
}

// Blocked returns the blocked prefixes, IPv4-mapped ones unmapped, single
// addresses as /32 or /128. It fails as Validate does.
func (r Rules) Blocked() ([]netip.Prefix, error) { return parsePrefixes("blockedIps", r.BlockedIPs) }

// Allowed returns the allowed prefixes like Blocked.
func (r Rules) Allowed() ([]netip.Prefix, error) { return parsePrefixes("allowedIps", r.AllowedIPs) }

// ParsePrefix parses an IP ("203.0.113.7", "2001:db8::1") or a CIDR
// ("203.0.113.0/24"); an IPv4-mapped IPv6 address or prefix is turned into
// its IPv4 form, and host bits below the prefix length are cleared.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("is empty")
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("is not an IP address or CIDR: %s", strconv.Quote(s))
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("is not an IP address or CIDR: %s", strconv.Quote(s))
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("is an IPv4-mapped prefix shorter than /96: %s", strconv.Quote(s))
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func parsePrefixes(field string, in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, &FieldError{Field: field + "[" + strconv.Itoa(i) + "]", Msg: err.Error()}
		}
		out = append(out, p)
	}
	return out, nil
}

// Package firewall is the edge's admission check for client connections and
// UDP flows: blocked and allowed addresses (IPs and CIDRs, IPv4 and IPv6),
// a cap on what one client IP holds open at once and a rate of new ones per
// client IP. The hub sends the rules with an edge's assignment; the edge
// checks every new TCP connection and UDP flow before any byte of it
// crosses the tunnel.
//
// Rules is the firewall as given; Compile turns it into a Policy, whose
// address lists are sorted, merged ranges (IPv4 and IPv6 apart) that a
// lookup bisects, so 10 000 CIDRs cost a few dozen comparisons. A Firewall
// holds the Policy in force and the state of every client IP: its open
// tickets and its rate bucket.
//
// # Matching
//
// A client address is first unmapped: an IPv4-mapped IPv6 address
// (::ffff:203.0.113.7) is its IPv4 form, and is matched against IPv4 rules
// only; IPv6 rules never match an IPv4 address, not even those such as ::/0
// or ::/80 that span ::ffff:0:0/96 (and an IPv4-mapped rule, such as
// ::ffff:203.0.113.0/120, is the IPv4 rule 203.0.113.0/24). Firewall.Admit
// then checks, in this order, and stops at the first refusal:
//
//  1. the allow-list: when allowedIps is not empty, an address outside it
//     is refused (NotAllowed);
//  2. the blocked IPs: an address inside one is refused (Blocked), also
//     when it is in the allow-list;
//  3. the rate bucket of the address (RateLimited): a token bucket holding
//     connectionRatePerIp tokens, refilled at connectionRatePerIp per
//     second (one token every second/rate, rounded down to the
//     nanosecond), one token per admission;
//  4. the concurrency cap (TooManyConnections): the address already holds
//     maxConnectionsPerIp tickets.
//
// A zero limit is no limit. Only an admission takes a rate token: a
// refused attempt, whatever refused it, takes none, so a client retrying
// against its concurrency cap is not rate limited for it, and being rate
// limited does not prolong itself.
//
// An Update applies to new admissions at once; the tickets open from an
// address the new policy refuses by 1 or 2 get their onBlock called, for
// the caller to close those connections. The package logs nothing: the
// caller counts refusals (Firewall.Refused) and rate-limits its logs.
//
// # State
//
// A client IP has state while it holds a ticket or its rate bucket is not
// full again; a refusal never creates any. The IPs kept only for their
// bucket are bounded (65 536): past the bound the longest idle lose theirs
// and start again with a full bucket.
package firewall

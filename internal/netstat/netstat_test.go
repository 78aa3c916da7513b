package netstat

import "testing"

func TestParseUDP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1000 2 30 900 27 0 0 5 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 99 0 0 0 0
`
	for name, want := range map[string]int64{"RcvbufErrors": 27, "InDatagrams": 1000, "MemErrors": 0, "Missing": 0} {
		if got := parseUDP(snmp, name); got != want {
			t.Errorf("%s: got %d, want %d", name, got, want)
		}
	}
	if got := parseUDP("", "RcvbufErrors"); got != 0 {
		t.Errorf("empty: got %d", got)
	}
}

// Package netstat reads the kernel's UDP counters of the network namespace
// (Linux /proc/net/snmp), for the bench and the system tests.
package netstat

import (
	"os"
	"strconv"
	"strings"
)

// UDPRcvbufErrors is the namespace's count of UDP datagrams dropped because
// a socket's receive buffer was full (/proc/net/snmp Udp RcvbufErrors): on
// loopback, every socket on the way. 0 where it cannot be read.
func UDPRcvbufErrors() int64 {
	raw, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	return parseUDP(string(raw), "RcvbufErrors")
}

// parseUDP finds the Udp counter name in the text of /proc/net/snmp, where
// a header line of names precedes the line of values.
func parseUDP(snmp, name string) int64 {
	var names []string
	for _, line := range strings.Split(snmp, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == name && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
		return 0
	}
	return 0
}

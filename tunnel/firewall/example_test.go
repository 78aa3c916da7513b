package firewall_test

import (
	"fmt"
	"net/netip"

	"github.com/serve-zone/remoteingress/tunnel/firewall"
)

func Example() {
	fw := firewall.New(nil)
	p, err := firewall.Compile(firewall.Rules{
		BlockedIPs:          []string{"203.0.113.0/24", "2001:db8:bad::/48"},
		MaxConnectionsPerIP: 2,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fw.Update(p)

	// Every new connection or flow asks first; onBlock closes it if a
	// later update blocks its address.
	client := netip.MustParseAddr("198.51.100.7")
	t1, v := fw.Admit(client, func() { fmt.Println("closing", client) })
	fmt.Println(client, v)
	t2, _ := fw.Admit(client, nil)
	_, v = fw.Admit(client, nil)
	fmt.Println(client, v)
	_, v = fw.Admit(netip.MustParseAddr("::ffff:203.0.113.9"), nil)
	fmt.Println("::ffff:203.0.113.9", v)

	// An update that blocks the client closes what it has open.
	p, _ = firewall.Compile(firewall.Rules{BlockedIPs: []string{"198.51.100.0/24"}})
	fw.Update(p)
	t1.Release()
	t2.Release()
	fmt.Println("refused", fw.Refused(), "open", fw.Open())

	_, err = firewall.Compile(firewall.Rules{BlockedIPs: []string{"10.0.0.1", "10.0.0.0/8", "10.0.0.256"}})
	fmt.Println(err)
	// Output:
	// 198.51.100.7 ok
	// 198.51.100.7 too many connections
	// ::ffff:203.0.113.9 blocked
	// closing 198.51.100.7
	// refused 2 open 0
	// blockedIps[2] is not an IP address or CIDR: "10.0.0.256"
}

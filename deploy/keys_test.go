package deploy

import "github.com/serve-zone/remoteingress/internal/standalone"

// The config keys a standalone config file may hold: the schema's own lists
// (the params of startHub / startEdge and the standalone keys), so that a
// manifest naming a key the binary does not know fails here.
var (
	hubKeys       = keySet(standalone.Keys(standalone.KindHub)...)
	edgeKeys      = keySet(standalone.Keys(standalone.KindEdge)...)
	edgeEntryKeys = keySet(standalone.Keys(standalone.KindAllowedEdges)...)
	// firewallKeys are those of an entry's firewall (README "Hub-managed
	// edges"), checked once an entry may carry one.
	firewallKeys = keySet("blockedIps", "allowedIps", "maxConnectionsPerIp", "connectionRatePerIp")
	// Keys whose value is a secret: never in a file that is not one (a
	// ConfigMap, a world-readable config).
	secretKeys = keySet("secret", "token", "tlsKeyPem")
)

// defaultGracePeriodSecs is gracePeriodSecs when a config does not set it.
const defaultGracePeriodSecs = 10

func keySet(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

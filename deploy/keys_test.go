package deploy

// The config keys a standalone config file may hold (CONTRACT section 11: the
// params of startHub / startEdge, plus the standalone keys). Written out here
// until the config schema exists in code; then this list should come from it.
var (
	hubKeys = keySet(
		// startHub
		"tunnelPort", "targetHost", "listenHost", "tlsCertPem", "tlsKeyPem",
		"proxyProtocol", "udpProxyProtocol", "udpIdleTimeoutSecs", "maxUdpFlows", "quic",
		"metricsListen",
		// standalone
		"allowedEdges", "allowedEdgesFile", "gracePeriodSecs", "logFormat", "logLevel",
	)
	edgeKeys = keySet(
		// startEdge
		"hubHost", "hubPort", "edgeId", "secret", "token", "hubs", "hubMode",
		"listenPorts", "listenPortsUdp", "listenHost", "stunIntervalSecs", "stunServer",
		"hubCertSha256", "hubCa", "hubServerName", "tunnelConnections",
		"transport", "quicFallbackMs", "udpIdleTimeoutSecs", "maxUdpFlows", "metricsListen",
		// standalone
		"secretFile", "tokenFile", "gracePeriodSecs", "logFormat", "logLevel",
	)
	// An entry of allowedEdges / allowedEdgesFile (updateAllowedEdges).
	edgeEntryKeys = keySet("id", "secret", "secretFile", "listenPorts", "listenPortsUdp", "firewall")
	firewallKeys  = keySet("blockedIps", "allowedIps", "maxConnectionsPerIp", "connectionRatePerIp")
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

package deploy

import (
	"fmt"
	"net"
	"sort"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// standaloneConfig is a hub or edge config file as the deployment files
// carry it: its top-level keys and values.
type standaloneConfig map[string]any

// parseConfig decodes a config of the given role ("hub" or "edge") and
// checks that it is a mapping of known keys.
func parseConfig(role string, data []byte) (standaloneConfig, error) {
	known := map[string]map[string]bool{"hub": hubKeys, "edge": edgeKeys}[role]
	if known == nil {
		return nil, fmt.Errorf("unknown role %q", role)
	}
	var cfg standaloneConfig
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s config: %v", role, err)
	}
	if len(cfg) == 0 {
		return nil, fmt.Errorf("%s config is empty", role)
	}
	if err := unknownKeys(role+" config", cfg, known); err != nil {
		return nil, err
	}
	if v, ok := cfg["allowedEdges"]; ok {
		if err := checkEdgeEntries("allowedEdges", v); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// parseEdgeList decodes an allowedEdgesFile: a sequence of entries.
func parseEdgeList(data []byte) ([]any, error) {
	var list any
	if err := yaml.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("allowed-edges file: %v", err)
	}
	if err := checkEdgeEntries("allowed-edges file", list); err != nil {
		return nil, err
	}
	return list.([]any), nil
}

func checkEdgeEntries(where string, v any) error {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return fmt.Errorf("%s: want a non-empty sequence of edge entries, got %T", where, v)
	}
	for i, e := range list {
		entry, ok := e.(map[string]any)
		if !ok {
			return fmt.Errorf("%s[%d]: want a mapping, got %T", where, i, e)
		}
		at := fmt.Sprintf("%s[%d]", where, i)
		if err := unknownKeys(at, entry, edgeEntryKeys); err != nil {
			return err
		}
		if id, _ := entry["id"].(string); id == "" {
			return fmt.Errorf("%s: no id", at)
		}
		_, hasSecret := entry["secret"]
		_, hasSecretFile := entry["secretFile"]
		if hasSecret == hasSecretFile {
			return fmt.Errorf("%s: want exactly one of secret and secretFile", at)
		}
		if fw, ok := entry["firewall"]; ok {
			m, ok := fw.(map[string]any)
			if !ok {
				return fmt.Errorf("%s.firewall: want a mapping", at)
			}
			if err := unknownKeys(at+".firewall", m, firewallKeys); err != nil {
				return err
			}
		}
	}
	return nil
}

func unknownKeys(where string, m map[string]any, known map[string]bool) error {
	var bad []string
	for k := range m {
		if !known[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%s: unknown keys %q", where, bad)
	}
	return nil
}

// str returns a string key ("" when absent).
func (c standaloneConfig) str(key string) string {
	s, _ := c[key].(string)
	return s
}

// integer returns an integer key, or def when absent.
func (c standaloneConfig) integer(key string, def int) (int, error) {
	v, ok := c[key]
	if !ok {
		return def, nil
	}
	n, ok := v.(int)
	if !ok {
		return 0, fmt.Errorf("%s: want an integer, got %T %v", key, v, v)
	}
	return n, nil
}

// metricsPort is the port of metricsListen (0 when it is not set).
func (c standaloneConfig) metricsPort() (int, error) {
	addr := c.str("metricsListen")
	if addr == "" {
		return 0, nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("metricsListen %q: %v", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("metricsListen %q: bad port", addr)
	}
	return n, nil
}

// gracePeriod is gracePeriodSecs or its default.
func (c standaloneConfig) gracePeriod() (int, error) {
	return c.integer("gracePeriodSecs", defaultGracePeriodSecs)
}

package deploy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const installedBinary = "/usr/local/bin/remoteingress-bin"

// unitFile is a systemd unit: section → key → values in order.
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the single value of a key ("" when absent).
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) > 1 {
		t.Errorf("[%s] %s is set %d times", section, key, len(v))
	}
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestSystemdUnits checks what the units promise and that the config each
// one runs (the example beside it) agrees with it.
func TestSystemdUnits(t *testing.T) {
	for _, role := range []string{"hub", "edge"} {
		t.Run(role, func(t *testing.T) {
			u := readUnit(t, filepath.Join("systemd", "remoteingress-"+role+".service"))
			want := map[string]string{
				"Type":                    "notify",
				"ExecStart":               fmt.Sprintf("%s %s --config /etc/remoteingress/%s.yaml", installedBinary, role, role),
				"ExecReload":              "/bin/kill -HUP $MAINPID",
				"Restart":                 "on-failure",
				"LimitNOFILE":             "1048576",
				"NoNewPrivileges":         "yes",
				"ProtectSystem":           "strict",
				"ProtectHome":             "yes",
				"PrivateTmp":              "yes",
				"PrivateDevices":          "yes",
				"LockPersonality":         "yes",
				"MemoryDenyWriteExecute":  "yes",
				"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
				"User":                    "remoteingress",
			}
			if role == "edge" {
				want["AmbientCapabilities"] = "CAP_NET_BIND_SERVICE"
				want["CapabilityBoundingSet"] = "CAP_NET_BIND_SERVICE"
			} else {
				want["CapabilityBoundingSet"] = ""
			}
			for k, v := range want {
				if got := u.one(t, "Service", k); got != v {
					t.Errorf("[Service] %s=%q, want %q", k, got, v)
				}
			}
			if f := u["Service"]["SystemCallFilter"]; len(f) == 0 || f[0] != "@system-service" {
				t.Errorf("SystemCallFilter=%q, want @system-service first", f)
			}

			data, err := os.ReadFile(filepath.Join("systemd", role+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := parseConfig(role, data)
			if err != nil {
				t.Fatal(err)
			}
			for k := range secretKeys {
				if _, ok := cfg[k]; ok {
					t.Errorf("%s.yaml holds %s inline: give it as a file", role, k)
				}
			}
			grace, err := cfg.gracePeriod()
			if err != nil {
				t.Fatal(err)
			}
			stop, err := time.ParseDuration(u.one(t, "Service", "TimeoutStopSec"))
			if err != nil {
				t.Fatalf("TimeoutStopSec: %v", err)
			}
			if stop <= time.Duration(grace)*time.Second {
				t.Errorf("TimeoutStopSec=%v is not above gracePeriodSecs=%d: systemd would kill the drain", stop, grace)
			}

			// A LoadCredential=NAME:… appears in the config as
			// /run/credentials/<unit>/NAME, and the other way round.
			unit := "remoteingress-" + role + ".service"
			creds := map[string]bool{}
			for _, lc := range u["Service"]["LoadCredential"] {
				name, _, _ := strings.Cut(lc, ":")
				creds[filepath.Join("/run/credentials", unit, name)] = true
			}
			for _, key := range []string{"secretFile", "tokenFile", "allowedEdgesFile"} {
				p := cfg.str(key)
				if strings.HasPrefix(p, "/run/credentials/") && !creds[p] {
					t.Errorf("%s %s is under /run/credentials but no LoadCredential= of %s provides it", key, p, unit)
				}
				delete(creds, p)
			}
			for p := range creds {
				t.Errorf("LoadCredential= provides %s but %s.yaml does not use it", p, role)
			}
			if p := cfg.str("allowedEdgesFile"); p != "" {
				list, err := os.ReadFile(filepath.Join("systemd", filepath.Base(p)))
				if err != nil {
					t.Fatalf("allowedEdgesFile %s: the example beside the unit: %v", p, err)
				}
				if _, err := parseEdgeList(list); err != nil {
					t.Fatal(err)
				}
			}
			if role == "edge" && cfg.str("secretFile") == "" && cfg.str("tokenFile") == "" {
				t.Error("edge.yaml has neither secretFile nor tokenFile")
			}
		})
	}
}

// TestSystemdAnalyzeVerify runs `systemd-analyze verify` on both units.
// verify insists that ExecStart's program exists, so the units are checked
// as copies whose /usr/local/bin/remoteingress-bin is an existing executable
// (this test's own binary); everything else is verified as written. Warnings
// about the units (an unknown key, a bad value) fail the test, although
// systemd-analyze exits 0 for them.
func TestSystemdAnalyzeVerify(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		msg := "systemd-analyze is not installed (Debian package \"systemd\"; scripts/ci-system-deps.sh installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and " + msg)
		}
		t.Skip(msg)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"remoteingress-hub.service", "remoteingress-edge.service"} {
		data, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), installedBinary, self)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	cmd := exec.Command(tool, append([]string{"verify", "--man=no"}, units...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "remoteingress-") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	if !t.Failed() {
		t.Logf("systemd-analyze verify: %d units, no complaint", len(units))
	}
}

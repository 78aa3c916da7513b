package main

import (
	"os"
	"runtime"
	"strings"
	"time"
)

// machine describes where the numbers were taken.
type machine struct {
	CPUModel   string `json:"cpuModel"`
	Cores      int    `json:"cores"`
	GoVersion  string `json:"goVersion"`
	Kernel     string `json:"kernel"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	BinVersion string `json:"binaryVersion"`
	Started    string `json:"started"`
	LoadStart  string `json:"loadavgAtStart"` // /proc/loadavg: other work on the machine skews the numbers
	LoadEnd    string `json:"loadavgAtEnd"`
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// readMachine fills what it can; unknown fields stay "unknown".
func readMachine() machine {
	m := machine{
		CPUModel:  "unknown",
		Cores:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Kernel:    "unknown",
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		Started:   time.Now().UTC().Format(time.RFC3339),
		LoadStart: loadavg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

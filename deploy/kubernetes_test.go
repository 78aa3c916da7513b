package deploy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The parts of Kubernetes objects these checks read.
type (
	k8sObject struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string            `yaml:"name"`
			Namespace string            `yaml:"namespace"`
			Labels    map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Data       map[string]string `yaml:"data"`       // ConfigMap; Secret (base64)
		StringData map[string]string `yaml:"stringData"` // Secret
		Spec       yaml.Node         `yaml:"spec"`

		file string
	}
	workloadSpec struct { // Deployment, DaemonSet, StatefulSet
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	}
	podSpec struct {
		HostNetwork                   bool            `yaml:"hostNetwork"`
		TerminationGracePeriodSeconds *int            `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               securityContext `yaml:"securityContext"`
		Containers                    []container     `yaml:"containers"`
		Volumes                       []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
			Secret *struct {
				SecretName string `yaml:"secretName"`
			} `yaml:"secret"`
		} `yaml:"volumes"`
	}
	securityContext struct {
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	}
	container struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Args    []string `yaml:"args"`
		Ports   []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
			Protocol      string `yaml:"protocol"`
		} `yaml:"ports"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			SubPath   string `yaml:"subPath"`
		} `yaml:"volumeMounts"`
		ReadinessProbe  *probe          `yaml:"readinessProbe"`
		LivenessProbe   *probe          `yaml:"livenessProbe"`
		StartupProbe    *probe          `yaml:"startupProbe"`
		SecurityContext securityContext `yaml:"securityContext"`
		Resources       struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
	}
	probe struct {
		HTTPGet *struct {
			Path string    `yaml:"path"`
			Port yaml.Node `yaml:"port"` // a number or a container port's name
		} `yaml:"httpGet"`
	}
	serviceSpec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string    `yaml:"name"`
			Port       int       `yaml:"port"`
			TargetPort yaml.Node `yaml:"targetPort"`
			Protocol   string    `yaml:"protocol"`
		} `yaml:"ports"`
	}
)

// loadManifests decodes every document of every kubernetes/*.yaml file.
func loadManifests(t *testing.T) []*k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	var objs []*k8sObject
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if o.Kind == "" && o.APIVersion == "" {
				continue // an empty document
			}
			if o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
				t.Fatalf("%s document %d: no apiVersion, kind or metadata.name", f, i)
			}
			o.file = f
			objs = append(objs, &o)
		}
	}
	return objs
}

func decodeSpec[T any](t *testing.T, o *k8sObject) T {
	t.Helper()
	var spec T
	if err := o.Spec.Decode(&spec); err != nil {
		t.Fatalf("%s %s/%s: spec: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
	return spec
}

func find(objs []*k8sObject, kind, namespace, name string) *k8sObject {
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Namespace == namespace && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

// value is a ConfigMap's or a Secret's value of key.
func (o *k8sObject) value(key string) ([]byte, bool) {
	if v, ok := o.StringData[key]; ok {
		return []byte(v), true
	}
	v, ok := o.Data[key]
	if !ok {
		return nil, false
	}
	if o.Kind == "Secret" {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, false
		}
		return b, true
	}
	return []byte(v), true
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func protocolOf(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}

// resolvePort turns a port field (a number, or the name of a container
// port of c) into a number.
func resolvePort(c *container, n *yaml.Node) (int, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, errors.New("port: not a scalar")
	}
	if n.Tag == "!!int" {
		return strconv.Atoi(n.Value)
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %q: no container port of that name", n.Value)
}

// TestKubernetesManifests parses every manifest and checks that each hub or
// edge workload's config uses known keys and agrees with the manifests: the
// config file is in a mounted ConfigMap, the probes are on the metricsListen
// port, the container ports and the Services' ports meet on the tunnelPort,
// the allowed list (and an edge's secretFile) is a mounted Secret, and the
// container runs locked down.
func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	workloads := 0
	for _, o := range objs {
		switch o.Kind {
		case "Deployment", "DaemonSet", "StatefulSet":
		default:
			continue
		}
		workloads++
		t.Run(o.Kind+"/"+o.Metadata.Name, func(t *testing.T) { checkWorkload(t, objs, o) })
	}
	if workloads == 0 {
		t.Fatal("no workload in kubernetes/")
	}

	// Every Service selects some workload.
	for _, o := range objs {
		if o.Kind == "Service" {
			spec := decodeSpec[serviceSpec](t, o)
			matched := false
			for _, w := range objs {
				if w.Kind == "Deployment" || w.Kind == "DaemonSet" || w.Kind == "StatefulSet" {
					ws := decodeSpec[workloadSpec](t, w)
					matched = matched || (w.Metadata.Namespace == o.Metadata.Namespace && selects(spec.Selector, ws.Template.Metadata.Labels))
				}
			}
			if !matched {
				t.Errorf("Service %s selects no workload", o.Metadata.Name)
			}
		}
	}
}

func checkWorkload(t *testing.T, objs []*k8sObject, o *k8sObject) {
	spec := decodeSpec[workloadSpec](t, o)
	pod := spec.Template.Spec
	ns := o.Metadata.Namespace
	if !selects(spec.Selector.MatchLabels, spec.Template.Metadata.Labels) {
		t.Errorf("selector %v does not match the pod labels %v", spec.Selector.MatchLabels, spec.Template.Metadata.Labels)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := &pod.Containers[0]

	// The image's ENTRYPOINT is the binary: args are `hub|edge --config FILE`.
	if len(c.Command) != 0 {
		t.Errorf("command %q overrides the image's entrypoint", c.Command)
	}
	if len(c.Args) != 3 || (c.Args[0] != "hub" && c.Args[0] != "edge") || c.Args[1] != "--config" {
		t.Fatalf("args %q, want [hub|edge --config FILE]", c.Args)
	}
	role, configPath := c.Args[0], c.Args[2]

	// mounted: the volume mounted at dir, with the object kind behind it.
	mounted := func(dir string) (kind, name string) {
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) != dir {
				continue
			}
			if m.SubPath != "" {
				t.Errorf("volume %s is mounted with subPath: the kubelet never updates such a file", m.Name)
			}
			for _, v := range pod.Volumes {
				switch {
				case v.Name != m.Name:
				case v.ConfigMap != nil:
					return "ConfigMap", v.ConfigMap.Name
				case v.Secret != nil:
					return "Secret", v.Secret.SecretName
				}
			}
			t.Fatalf("volume mount %s: no configMap or secret volume %q", dir, m.Name)
		}
		return "", ""
	}
	// fileIn: the object holding the file at p, which must be of kind want.
	fileIn := func(key, p, want string) []byte {
		t.Helper()
		kind, name := mounted(path.Dir(p))
		if kind == "" {
			t.Fatalf("%s %s: no volume is mounted at its directory %s", key, p, path.Dir(p))
		}
		if kind != want {
			t.Fatalf("%s %s: comes from a %s, want a %s", key, p, kind, want)
		}
		obj := find(objs, kind, ns, name)
		if obj == nil {
			t.Fatalf("%s %s: %s %s/%s is not in the manifests", key, p, kind, ns, name)
		}
		data, ok := obj.value(path.Base(p))
		if !ok {
			t.Fatalf("%s %s: %s %s has no key %q", key, p, kind, name, path.Base(p))
		}
		return data
	}

	cfg, err := parseConfig(role, fileIn("--config", configPath, "ConfigMap"))
	if err != nil {
		t.Fatal(err)
	}
	for k := range secretKeys {
		if _, ok := cfg[k]; ok {
			t.Errorf("the %s config in a ConfigMap holds %s: put it in a Secret (secretFile/tokenFile/allowedEdgesFile)", role, k)
		}
	}

	// The allowed list, and an edge's secret, are mounted Secrets.
	if role == "hub" {
		if _, ok := cfg["allowedEdges"]; ok {
			t.Error("allowedEdges inline in a ConfigMap: use allowedEdgesFile from a Secret")
		}
		p := cfg.str("allowedEdgesFile")
		if p == "" {
			t.Fatal("the hub config has no allowedEdgesFile")
		}
		if _, err := parseEdgeList(fileIn("allowedEdgesFile", p, "Secret")); err != nil {
			t.Error(err)
		}
	} else {
		n := 0
		for _, key := range []string{"secretFile", "tokenFile"} {
			if p := cfg.str(key); p != "" {
				n++
				if len(bytes.TrimSpace(fileIn(key, p, "Secret"))) == 0 {
					t.Errorf("%s %s is empty", key, p)
				}
			}
		}
		if n == 0 {
			t.Error("the edge config has neither secretFile nor tokenFile")
		}
	}

	// Probes: /readyz and /healthz on the metricsListen port.
	metricsPort, err := cfg.metricsPort()
	if err != nil {
		t.Fatal(err)
	}
	if metricsPort == 0 {
		t.Fatal("no metricsListen: the probes have nothing to ask")
	}
	for _, pr := range []struct {
		name, path string
		p          *probe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}, {"startupProbe", "", c.StartupProbe}} {
		if pr.p == nil {
			if pr.path != "" {
				t.Errorf("no %s", pr.name)
			}
			continue
		}
		if pr.p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", pr.name)
			continue
		}
		if pr.path != "" && pr.p.HTTPGet.Path != pr.path {
			t.Errorf("%s: path %q, want %q", pr.name, pr.p.HTTPGet.Path, pr.path)
		}
		port, err := resolvePort(c, &pr.p.HTTPGet.Port)
		if err != nil {
			t.Errorf("%s: %v", pr.name, err)
		} else if port != metricsPort {
			t.Errorf("%s: port %d, but metricsListen is %q", pr.name, port, cfg.str("metricsListen"))
		}
	}

	// Container ports: the tunnel port (TCP, and UDP for QUIC) on the hub,
	// the metrics port; each Service port of this workload meets one.
	type portKey struct {
		port  int
		proto string
	}
	have := map[portKey]bool{}
	for _, p := range c.Ports {
		have[portKey{p.ContainerPort, protocolOf(p.Protocol)}] = true
	}
	if !have[portKey{metricsPort, "TCP"}] {
		t.Errorf("no container port %d/TCP for metricsListen", metricsPort)
	}
	if role == "hub" {
		tunnelPort, err := cfg.integer("tunnelPort", 8443)
		if err != nil {
			t.Fatal(err)
		}
		if !have[portKey{tunnelPort, "TCP"}] {
			t.Errorf("no container port %d/TCP for tunnelPort", tunnelPort)
		}
		if quic, ok := cfg["quic"]; !ok || quic != false {
			if !have[portKey{tunnelPort, "UDP"}] {
				t.Errorf("no container port %d/UDP for QUIC on tunnelPort", tunnelPort)
			}
		}
		tunnelServed := false
		for _, s := range objs {
			if s.Kind != "Service" || s.Metadata.Namespace != ns {
				continue
			}
			ss := decodeSpec[serviceSpec](t, s)
			if !selects(ss.Selector, spec.Template.Metadata.Labels) {
				continue
			}
			for _, sp := range ss.Ports {
				target := sp.TargetPort
				if target.Kind == 0 {
					target = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(sp.Port)}
				}
				port, err := resolvePort(c, &target)
				if err != nil {
					t.Errorf("Service %s port %s: %v", s.Metadata.Name, sp.Name, err)
					continue
				}
				k := portKey{port, protocolOf(sp.Protocol)}
				if !have[k] {
					t.Errorf("Service %s port %s: %d/%s is no container port", s.Metadata.Name, sp.Name, k.port, k.proto)
				}
				if port == tunnelPort {
					tunnelServed = true
				}
			}
		}
		if !tunnelServed {
			t.Errorf("no Service exposes the tunnel port %d", tunnelPort)
		}
		if spec.Replicas == nil || *spec.Replicas < 2 {
			t.Errorf("replicas %v, want at least 2", spec.Replicas)
		}
	}

	// Stopping: the kubelet's grace period outlasts the drain.
	grace, err := cfg.gracePeriod()
	if err != nil {
		t.Fatal(err)
	}
	kubeletGrace := 30
	if pod.TerminationGracePeriodSeconds != nil {
		kubeletGrace = *pod.TerminationGracePeriodSeconds
	}
	if kubeletGrace <= grace {
		t.Errorf("terminationGracePeriodSeconds %d is not above gracePeriodSecs %d", kubeletGrace, grace)
	}

	// Resources.
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("no resources.requests.%s", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("no resources.limits.memory")
	}

	// Locked down: container settings, falling back to the pod's.
	sc, psc := c.SecurityContext, pod.SecurityContext
	boolOf := func(b, fallback *bool) bool {
		if b != nil {
			return *b
		}
		return fallback != nil && *fallback
	}
	if !boolOf(sc.ReadOnlyRootFilesystem, nil) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("capabilities.drop %q lacks ALL", sc.Capabilities.Drop)
	}
	for _, a := range sc.Capabilities.Add {
		if a != "NET_BIND_SERVICE" {
			t.Errorf("capabilities.add %q: only NET_BIND_SERVICE is needed", a)
		}
	}
	seccomp := sc.SeccompProfile.Type
	if seccomp == "" {
		seccomp = psc.SeccompProfile.Type
	}
	if seccomp != "RuntimeDefault" {
		t.Errorf("seccompProfile %q, want RuntimeDefault", seccomp)
	}
	uid := sc.RunAsUser
	if uid == nil {
		uid = psc.RunAsUser
	}
	nonRoot := boolOf(sc.RunAsNonRoot, psc.RunAsNonRoot)
	switch {
	case role == "hub" && (!nonRoot || uid == nil || *uid != 65532):
		t.Errorf("the hub must run as non-root uid 65532 (runAsNonRoot %v, runAsUser %v)", nonRoot, uid)
	case role == "edge" && !nonRoot:
		// Root only to bind a port below 1024 with NET_BIND_SERVICE.
		low := false
		if ports, ok := cfg["listenPorts"].([]any); ok {
			for _, p := range ports {
				if n, ok := p.(int); ok && n < 1024 {
					low = true
				}
			}
		}
		if !low || !slices.Contains(sc.Capabilities.Add, "NET_BIND_SERVICE") {
			t.Error("the edge runs as root without a listen port below 1024 to bind with NET_BIND_SERVICE: run it as uid 65532")
		}
	}
	if !pod.HostNetwork && role == "edge" {
		t.Log("edge without hostNetwork: it then needs a Service of its own for the public ports")
	}
}

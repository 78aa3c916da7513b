// Package deploy holds no code: its tests check the deployment files beside
// it. systemd/ (units, sysusers.d and example configs) must pass
// `systemd-analyze verify`; kubernetes/ (manifests) must use only known
// config keys, and the ports, probes and mounts must agree with the configs
// they carry.
package deploy

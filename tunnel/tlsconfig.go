package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// alpnProto is the ALPN name both sides offer.
const alpnProto = "remoteingress/1"

// aeadSuites12 are the only TLS 1.2 suites allowed (TLS 1.3 suites are all AEAD).
var aeadSuites12 = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// hubCertificate loads the PEM pair, or generates a self-signed ECDSA P-256
// certificate when both are empty.
func hubCertificate(certPEM, keyPEM string) (tls.Certificate, error) {
	if certPEM == "" && keyPEM == "" {
		return selfSignedCertificate()
	}
	if err := certPairError(certPEM, keyPEM); err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		// The crypto/tls message never contains key material.
		return tls.Certificate{}, fmt.Errorf("invalid TLS certificate or key: %v", err)
	}
	return cert, nil
}

func selfSignedCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "remoteingress hub"},
		DNSNames:              []string{"remoteingress-hub"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// certFingerprint is the SHA-256 of the leaf certificate, hex encoded.
func certFingerprint(c tls.Certificate) string {
	if len(c.Certificate) == 0 {
		return ""
	}
	sum := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(sum[:])
}

func hubTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: aeadSuites12,
		NextProtos:   []string{alpnProto},
		// The tunnel is long-lived and carries bulk data: full-size records.
		DynamicRecordSizingDisabled: true,
	}
}

// edgeTLSConfigFor builds the edge's TLS client configuration. By default it
// does not verify the hub's certificate chain: the hub proves itself in the
// authentication handshake with an HMAC bound to this very TLS session (see
// auth.go), which a man in the middle cannot produce. Operators who want more
// can pin the hub's certificate (pinSHA256) and/or verify it against their
// own CA (caPEM, serverName).
func edgeTLSConfigFor(serverName, pinSHA256, caPEM string) (*tls.Config, error) {
	c := &tls.Config{
		ServerName:         serverName,
		InsecureSkipVerify: true, // identity is proven by the channel-bound handshake
		MinVersion:         tls.VersionTLS12,
		CipherSuites:       aeadSuites12,
		NextProtos:         []string{alpnProto},
		// The tunnel is long-lived and carries bulk data: full-size records.
		DynamicRecordSizingDisabled: true,
	}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, configErr("HubCAPEM", "holds no PEM certificate")
		}
		c.RootCAs, c.InsecureSkipVerify = pool, false
	}
	if pinSHA256 != "" {
		pin, err := parseFingerprint(pinSHA256)
		if err != nil {
			return nil, err
		}
		c.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			if len(rawCerts) == 0 {
				return errors.New("hub sent no certificate")
			}
			sum := sha256.Sum256(rawCerts[0])
			if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
				return fmt.Errorf("hub certificate fingerprint %s does not match the pinned one", hex.EncodeToString(sum[:]))
			}
			return nil
		}
	}
	return c, nil
}

// parseFingerprint reads a hex SHA-256, ignoring colons, spaces and case.
func parseFingerprint(s string) ([]byte, error) {
	clean := strings.NewReplacer(":", "", " ", "").Replace(strings.ToLower(strings.TrimSpace(s)))
	b, err := hex.DecodeString(clean)
	if err != nil || len(b) != sha256.Size {
		return nil, configErr("HubCertSHA256", "must be 64 hex digits (a SHA-256)")
	}
	return b, nil
}

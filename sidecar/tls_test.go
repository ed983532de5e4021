package sidecar

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// testPKI writes a CA and a certificate for 127.0.0.1 signed by it, and
// returns the paths and a pool trusting the CA.
func testPKI(t *testing.T) (caPath, certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)

	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600))
		return p
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", der), write("key.pem", "EC PRIVATE KEY", keyDER), pool
}

func TestTLSClusterServesHTTPSAndTalksHTTPSToPeers(t *testing.T) {
	caPath, certPath, keyPath, pool := testPKI(t)
	nodes := startCluster(t, 2, Config{TLSCert: certPath, TLSKey: keyPath, PeerCA: caPath})
	for _, n := range nodes {
		require.True(t, strings.HasPrefix(n.URL(), "https://"), n.URL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()

	u := "wss" + strings.TrimPrefix(nodes[1].URL(), "https") + wsPath + "?participant_id=bob&session_id=s1"
	bob, _ := testkit.Attach(t, u, &websocket.DialOptions{HTTPClient: hc})

	resp, err := hc.Post(nodes[0].URL()+"/v1/gateway/events", "application/json",
		strings.NewReader(`{"sender_id":"alice","sender_type":"ai","event_type":"message","session_id":"s1","message":"over tls"}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the peer hop went over https")
	assert.Equal(t, "over tls", bob.Next()["event"].(map[string]any)["message"])

	// Plain HTTP to a TLS listener gets nowhere.
	plain, err := http.Get("http" + strings.TrimPrefix(nodes[0].URL(), "https") + "/healthz")
	if err == nil {
		plain.Body.Close()
		assert.NotEqual(t, http.StatusOK, plain.StatusCode)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	_, certPath, _, _ := testPKI(t)
	_, err := New(Config{Listen: "127.0.0.1:0", TLSCert: certPath, Logger: testLogger()})
	assert.ErrorContains(t, err, "--tls-key")
	_, err = New(Config{Listen: "127.0.0.1:0", TLSCert: certPath, TLSKey: certPath, Logger: testLogger()})
	assert.ErrorContains(t, err, "--tls-cert")
	_, err = New(Config{Listen: "127.0.0.1:0", PeerCA: filepath.Join(t.TempDir(), "missing.pem"), Logger: testLogger()})
	assert.Error(t, err)
}

package auth

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// writeFile writes data under a temporary directory and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkixPEM(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PUBLIC KEY", der)
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(testdataPath(name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestNewVerifierErrors(t *testing.T) {
	for _, tt := range slices.Concat(keyFileErrorCases(), keyTypeErrorCases(t)) {
		t.Run(tt.name, func(t *testing.T) {
			files := tt.files(t)
			v, err := NewVerifier(Config{Secret: tt.secret, PublicKeyFiles: files})
			if err == nil {
				t.Fatalf("NewVerifier = %v, want error containing %q", v, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewVerifier error %q, want it to contain %q", err, tt.wantErr)
			}
			for _, f := range files {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("NewVerifier error %q does not name %s", err, f)
				}
			}
			for _, target := range tt.wantIs {
				if !errors.Is(err, target) {
					t.Errorf("NewVerifier error %q does not match %v", err, target)
				}
			}
		})
	}
}

// verifierErrorCase is a configuration NewVerifier refuses.
type verifierErrorCase struct {
	name    string
	files   func(t *testing.T) []string
	secret  string
	wantErr string  // substring of the error
	wantIs  []error // errors the result must match
}

// keyFileErrorCases are public key files that are missing or hold no
// usable PEM block, and the configuration with no key at all.
func keyFileErrorCases() []verifierErrorCase {
	return []verifierErrorCase{
		{
			name:    "nothing configured",
			files:   func(*testing.T) []string { return nil },
			wantErr: "none of NOTIFY_JWT_SECRET, NOTIFY_JWT_PUBLIC_KEYS and NOTIFY_JWKS_URL is set",
		},
		{
			name:    "missing file",
			files:   func(*testing.T) []string { return []string{"testdata/nope.pem"} },
			secret:  testSecret,
			wantErr: `"testdata/nope.pem"`,
			wantIs:  []error{fs.ErrNotExist},
		},
		{
			name:    "not PEM",
			files:   func(t *testing.T) []string { return []string{writeFile(t, "junk.pem", []byte("hello"))} },
			wantErr: "no PEM block found",
		},
		{
			name:    "empty file",
			files:   func(t *testing.T) []string { return []string{writeFile(t, "empty.pem", nil)} },
			wantErr: "no PEM block found",
		},
		{
			name: "invalid DER",
			files: func(t *testing.T) []string {
				return []string{writeFile(t, "bad.pem", pemBlock("PUBLIC KEY", []byte("not DER")))}
			},
			wantErr: "parse public key",
		},
		{
			name: "private key",
			files: func(t *testing.T) []string {
				return []string{writeFile(t, "priv.pem", readFixture(t, "rsa_private.pem"))}
			},
			wantErr: "PRIVATE KEY found",
		},
		{
			name: "second block bad",
			files: func(t *testing.T) []string {
				data := append(readFixture(t, "rsa_public.pem"), pemBlock("PUBLIC KEY", []byte{1, 2, 3})...)
				return []string{writeFile(t, "two.pem", data)}
			},
			wantErr: "PEM block 2",
		},
		{
			name: "unsupported block type",
			files: func(t *testing.T) []string {
				return []string{writeFile(t, "foo.pem", pemBlock("FOO", []byte{1}))}
			},
			wantErr: `unsupported PEM block type "FOO"`,
		},
	}
}

// keyTypeErrorCases are public keys of a type or size NewVerifier refuses.
func keyTypeErrorCases(t *testing.T) []verifierErrorCase {
	t.Helper()
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return []verifierErrorCase{
		{
			name: "X25519 key",
			files: func(t *testing.T) []string {
				return []string{writeFile(t, "x25519.pem", pkixPEM(t, x25519.PublicKey()))}
			},
			wantErr: "unsupported key type",
		},
		{
			name:    "P-224 key",
			files:   func(t *testing.T) []string { return []string{writeFile(t, "p224.pem", pkixPEM(t, &p224.PublicKey))} },
			wantErr: "unsupported ECDSA curve P-224",
		},
		{
			name: "weak RSA key",
			files: func(t *testing.T) []string {
				return []string{writeFile(t, "rsa1024.pem", pkixPEM(t, &rsa1024.PublicKey))}
			},
			wantErr: "RSA key has 1024 bits",
		},
	}
}

func TestNewVerifierKeyFormats(t *testing.T) {
	rsaKey := privateKey(t, "rsa_private.pem").(*rsa.PrivateKey)
	ecKey := privateKey(t, "ecdsa_private.pem").(*ecdsa.PrivateKey)

	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer.example"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		file   func(t *testing.T) string
		method jwt.SigningMethod
		key    any
	}{
		{
			name: "PKCS#1 RSA public key",
			file: func(t *testing.T) string {
				return writeFile(t, "pkcs1.pem", pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)))
			},
			method: jwt.SigningMethodRS256,
			key:    rsaKey,
		},
		{
			name:   "certificate",
			file:   func(t *testing.T) string { return writeFile(t, "cert.pem", pemBlock("CERTIFICATE", certDER)) },
			method: jwt.SigningMethodES256,
			key:    ecKey,
		},
		{
			name: "several keys in one file with comments",
			file: func(t *testing.T) string {
				var data []byte
				data = append(data, "# rotation set\n"...)
				data = append(data, readFixture(t, "rsa_public.pem")...)
				data = append(data, readFixture(t, "ed25519_public.pem")...)
				data = append(data, readFixture(t, "ecdsa_public.pem")...)
				return writeFile(t, "set.pem", data)
			},
			method: jwt.SigningMethodEdDSA,
			key:    privateKey(t, "ed25519_private.pem"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, Config{PublicKeyFiles: []string{tt.file(t)}})
			tok := signWith(t, tt.method, tt.key, jwt.MapClaims{"user_id": "alice"})
			c, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.UserID != "alice" {
				t.Fatalf("UserID = %q, want alice", c.UserID)
			}
		})
	}
}

func TestAllowedMethods(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"secret", Config{Secret: "s"}, []string{"HS256", "HS384", "HS512"}},
		{"rsa", Config{PublicKeyFiles: []string{testdataPath("rsa_public.pem")}}, []string{"PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}},
		{"ecdsa", Config{PublicKeyFiles: []string{testdataPath("ecdsa_public.pem")}}, []string{"ES256"}},
		{"ed25519", Config{PublicKeyFiles: []string{testdataPath("ed25519_public.pem")}}, []string{"EdDSA"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, tt.cfg)
			var got []string
			for m := range v.allowed {
				got = append(got, m)
			}
			slices.Sort(got)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("allowed = %v, want %v", got, tt.want)
			}
		})
	}
}

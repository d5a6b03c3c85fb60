package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// minRSABits refuses keys too weak to trust; crypto/rsa itself refuses
// anything under 1024 bits, which would only surface as bad signatures.
const minRSABits = 2048

// publicKeys holds the verification keys by type, so the Keyfunc can never
// hand a key of one family to a method of another.
type publicKeys struct {
	rsa []*rsa.PublicKey
	// ecdsa is keyed by curve size (256, 384, 521): ES256 must not be tried
	// against a P-384 key.
	ecdsa map[int][]*ecdsa.PublicKey
	ed    []ed25519.PublicKey
}

func (k *publicKeys) empty() bool {
	return len(k.rsa) == 0 && len(k.ecdsa) == 0 && len(k.ed) == 0
}

// loadPublicKeys reads every PEM block of every file. A file may hold several
// keys (key rotation); it must hold at least one.
func loadPublicKeys(files []string) (*publicKeys, error) {
	keys := &publicKeys{ecdsa: map[int][]*ecdsa.PublicKey{}}
	for _, f := range files {
		if err := keys.loadFile(f); err != nil {
			return nil, fmt.Errorf("public key file %q: %w", f, err)
		}
	}
	return keys, nil
}

func (k *publicKeys) loadFile(name string) error {
	data, err := os.ReadFile(name)
	if err != nil {
		// The path is already in our wrapping; keep only the cause.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("read: %w", err)
	}
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		n++
		pub, err := parseBlock(block)
		if err != nil {
			return fmt.Errorf("PEM block %d: %w", n, err)
		}
		if err := k.add(pub); err != nil {
			return fmt.Errorf("PEM block %d: %w", n, err)
		}
	}
	if n == 0 {
		return errors.New("no PEM block found")
	}
	return nil
}

func parseBlock(b *pem.Block) (any, error) {
	switch b.Type {
	case "PUBLIC KEY":
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		return pub, nil
	case "RSA PUBLIC KEY":
		pub, err := x509.ParsePKCS1PublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse RSA public key: %w", err)
		}
		return pub, nil
	case "CERTIFICATE":
		// Only the key is used: the issuer vouches for it by configuration,
		// not through a chain.
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return cert.PublicKey, nil
	}
	if strings.Contains(b.Type, "PRIVATE KEY") {
		// Refused rather than derived: a signing key has no business on a
		// verifying server.
		return nil, fmt.Errorf("%s found; configure the public key instead", b.Type)
	}
	return nil, fmt.Errorf("unsupported PEM block type %q", b.Type)
}

func (k *publicKeys) add(pub any) error {
	if err := checkPublicKey(pub); err != nil {
		return err
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		k.rsa = append(k.rsa, pub)
	case *ecdsa.PublicKey:
		bits := pub.Curve.Params().BitSize
		k.ecdsa[bits] = append(k.ecdsa[bits], pub)
	case ed25519.PublicKey:
		k.ed = append(k.ed, pub)
	}
	return nil
}

// checkPublicKey refuses keys no method may verify with: the same rules
// for PEM files and JWK Sets.
func checkPublicKey(pub any) error {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("RSA key has %d bits, need at least %d", bits, minRSABits)
		}
	case *ecdsa.PublicKey:
		if _, ok := ecdsaAlgs[pub.Curve.Params().BitSize]; !ok {
			return fmt.Errorf("unsupported ECDSA curve %s", pub.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("an Ed25519 key has %d bytes, not %d", ed25519.PublicKeySize, len(pub))
		}
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return nil
}

// ecdsaAlgs maps curve sizes to the one JWS algorithm each may verify.
var ecdsaAlgs = map[int]string{256: "ES256", 384: "ES384", 521: "ES512"}

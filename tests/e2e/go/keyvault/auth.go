package main

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Bearer tokens as the issuer signed them: RS256 over its JWKS, unexpired, for the vault.
type tokens struct {
	jwksURL  string
	resource string
	mu       sync.Mutex
	keys     map[string]*rsa.PublicKey
}

// The token's application id, if it is good.
func (t *tokens) verify(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	var header struct{ Alg, Kid string }
	var claims struct {
		Exp   float64
		Aud   any
		Scp   string
		AppID string `json:"appid"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return "", err
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return "", err
	}
	if header.Alg != "RS256" {
		return "", fmt.Errorf("unexpected algorithm %q", header.Alg)
	}
	key, err := t.key(header.Kid)
	if err != nil {
		return "", err
	}
	signature, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", errors.New("signature is not base64url")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], signature); err != nil {
		return "", errors.New("signature does not verify")
	}
	if time.Now().Unix() >= int64(claims.Exp) {
		return "", errors.New("token expired")
	}
	if !t.forVault(claims.Aud, claims.Scp) {
		return "", fmt.Errorf("token is not for %s", t.resource)
	}
	return claims.AppID, nil
}

func (t *tokens) forVault(aud any, scp string) bool {
	names := []string{strings.TrimSuffix(scp, "/.default")}
	switch a := aud.(type) {
	case string:
		names = append(names, a)
	case []any:
		for _, v := range a {
			if s, ok := v.(string); ok {
				names = append(names, s)
			}
		}
	}
	for _, n := range names {
		if strings.TrimSuffix(n, "/") == t.resource {
			return true
		}
	}
	return false
}

// The issuer's key kid, fetched again when it is not known (the issuer rotated).
func (t *tokens) key(kid string) (*rsa.PublicKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if key, ok := t.keys[kid]; ok {
		return key, nil
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(t.jwksURL)
	if err != nil {
		return nil, fmt.Errorf("fetching the issuer's keys: %w", err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kid, Kty, N, E string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("reading the issuer's keys: %w", err)
	}
	t.keys = map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		n, errN := base64.RawURLEncoding.DecodeString(k.N)
		e, errE := base64.RawURLEncoding.DecodeString(k.E)
		if k.Kty != "RSA" || errN != nil || errE != nil {
			continue
		}
		t.keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if key, ok := t.keys[kid]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("the issuer has no key %q", kid)
}

func decodeSegment(segment string, into any) error {
	data, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return errors.New("segment is not base64url")
	}
	if err := json.Unmarshal(data, into); err != nil {
		return errors.New("segment is not JSON")
	}
	return nil
}

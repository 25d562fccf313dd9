package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	certfake "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	secretfake "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets/fake"
	"software.sslmate.com/src/go-pkcs12"
)

// The extensions a certificate file may have, in the order they are looked for, and the
// content type Key Vault gives each one's secret.
var (
	extensions   = []string{".pem", ".pfx"}
	contentTypes = map[string]string{".pem": "application/x-pem-file", ".pfx": "application/x-pkcs12"}
)

type store struct{ dir string }

// One version of a certificate as read from its file.
type version struct {
	id          string
	contentType string
	value       string // PEM text, or base64 PKCS#12
	leaf        *x509.Certificate
	created     time.Time
}

var errNotFound = errors.New("not found")

// The named version, or the current one when version is empty.
func (s *store) load(name, want string) (*version, error) {
	for _, ext := range extensions {
		data, err := os.ReadFile(filepath.Join(s.dir, name+ext))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		current, err := s.archive(name, ext, data)
		if err != nil {
			return nil, err
		}
		if want == "" || want == current.id {
			return current, nil
		}
	}
	if want == "" {
		return nil, errNotFound
	}
	for _, ext := range extensions {
		path := filepath.Join(s.dir, ".versions", name, want+ext)
		data, err := os.ReadFile(path)
		if err == nil {
			info, _ := os.Stat(path)
			return parse(want, ext, data, info.ModTime())
		}
	}
	return nil, errNotFound
}

// Keeps a copy of every version seen, so an older version stays readable by its id.
func (s *store) archive(name, ext string, data []byte) (*version, error) {
	sum := sha256.Sum256(data)
	id := hex.EncodeToString(sum[:16])
	dir := filepath.Join(s.dir, ".versions", name)
	path := filepath.Join(dir, id+ext)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	return parse(id, ext, data, info.ModTime())
}

// Reads the leaf for the certificate's metadata. A file whose certificate cannot be read is
// still served as it is: the client under test decides what is invalid.
func parse(id, ext string, data []byte, created time.Time) (*version, error) {
	v := &version{id: id, contentType: contentTypes[ext], created: created}
	if ext == ".pfx" {
		v.value = base64.StdEncoding.EncodeToString(data)
		if _, leaf, _, err := pkcs12.DecodeChain(data, ""); err == nil {
			v.leaf = leaf
		}
		return v, nil
	}
	v.value = string(data)
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			if leaf, err := x509.ParseCertificate(block.Bytes); err == nil {
				v.leaf = leaf
			}
			break
		}
	}
	return v, nil
}

// Whether name is listed in the deny file.
func (s *store) denied(name string) bool {
	data, err := os.ReadFile(filepath.Join(s.dir, ".deny"))
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if strings.EqualFold(strings.TrimSpace(string(line)), name) {
			return true
		}
	}
	return false
}

// The two fakes, answering from the store. Base URLs come from the request's host, so the ids
// name the vault the client asked.
func fakes(s *store) (http.RoundTripper, http.RoundTripper) {
	certificates := certfake.NewServerTransport(&certfake.Server{
		GetCertificate: func(ctx context.Context, name, ver string, _ *azcertificates.GetCertificateOptions) (resp azfake.Responder[azcertificates.GetCertificateResponse], errResp azfake.ErrorResponder) {
			defer guard(&errResp)
			// Pitfall: the generated name pattern's range `$-;` includes `/`, so
			// `/certificates/foo/ver1` arrives as name "foo/ver1".
			name, ver = splitVersion(name, ver)
			v, err := s.load(name, ver)
			if err != nil {
				notFound(&errResp, err, "CertificateNotFound")
				return
			}
			base := baseURL(ctx)
			attrs := &azcertificates.CertificateAttributes{
				Enabled: to.Ptr(true), Created: &v.created, Updated: &v.created,
				RecoverableDays: to.Ptr[int32](90), RecoveryLevel: to.Ptr("Recoverable+Purgeable"),
			}
			cert := azcertificates.Certificate{
				ID:          ptrID[azcertificates.ID](base, "certificates", name, v.id),
				KID:         ptrID[azcertificates.ID](base, "keys", name, v.id),
				SID:         ptrID[azcertificates.ID](base, "secrets", name, v.id),
				ContentType: &v.contentType,
				Attributes:  attrs,
				Policy: &azcertificates.CertificatePolicy{
					SecretProperties: &azcertificates.SecretProperties{ContentType: &v.contentType},
				},
			}
			if v.leaf != nil {
				thumb := sha1.Sum(v.leaf.Raw)
				cert.CER, cert.X509Thumbprint = v.leaf.Raw, thumb[:]
				attrs.NotBefore, attrs.Expires = &v.leaf.NotBefore, &v.leaf.NotAfter
			}
			resp.SetResponse(http.StatusOK, azcertificates.GetCertificateResponse{Certificate: cert}, nil)
			return
		},
	})
	secrets := secretfake.NewServerTransport(&secretfake.Server{
		GetSecret: func(ctx context.Context, name, ver string, _ *azsecrets.GetSecretOptions) (resp azfake.Responder[azsecrets.GetSecretResponse], errResp azfake.ErrorResponder) {
			defer guard(&errResp)
			name, ver = splitVersion(name, ver)
			v, err := s.load(name, ver)
			if err != nil {
				notFound(&errResp, err, "SecretNotFound")
				return
			}
			base := baseURL(ctx)
			secret := azsecrets.Secret{
				ID:          ptrID[azsecrets.ID](base, "secrets", name, v.id),
				KID:         ptrID[azsecrets.ID](base, "keys", name, v.id),
				ContentType: &v.contentType,
				Value:       &v.value,
				Managed:     to.Ptr(true),
				Attributes: &azsecrets.SecretAttributes{
					Enabled: to.Ptr(true), Created: &v.created, Updated: &v.created,
				},
			}
			if v.leaf != nil {
				secret.Attributes.NotBefore, secret.Attributes.Expires = &v.leaf.NotBefore, &v.leaf.NotAfter
			}
			resp.SetResponse(http.StatusOK, azsecrets.GetSecretResponse{Secret: secret}, nil)
			return
		},
	})
	return withBase{certificates}, withBase{secrets}
}

func splitVersion(name, ver string) (string, string) {
	if before, after, found := strings.Cut(strings.Trim(name, "/"), "/"); found {
		return before, after
	}
	return name, ver
}

func notFound(errResp *azfake.ErrorResponder, err error, code string) {
	if errors.Is(err, errNotFound) {
		errResp.SetResponseError(http.StatusNotFound, code)
	} else {
		errResp.SetError(err)
	}
}

type baseKey struct{}

func baseURL(ctx context.Context) string {
	base, _ := ctx.Value(baseKey{}).(string)
	return base
}

func ptrID[T ~string](base, kind, name, version string) *T {
	id := T(fmt.Sprintf("%s/%s/%s/%s", base, kind, name, version))
	return &id
}

// The fakes run each call on a goroutine of their own, where a panic would end the process:
// every fake function turns one into an error instead.
func guard(errResp *azfake.ErrorResponder) {
	if p := recover(); p != nil {
		errResp.SetError(fmt.Errorf("fake panicked: %v", p))
	}
}

// Hands the fake the vault's base URL, for the ids it writes.
type withBase struct {
	transport interface {
		Do(*http.Request) (*http.Response, error)
	}
}

func (t withBase) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := context.WithValue(req.Context(), baseKey{}, "https://"+req.URL.Host)
	return t.transport.Do(req.WithContext(ctx))
}

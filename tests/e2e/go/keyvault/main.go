// A Key Vault test server: the Azure SDK for Go's generated Key Vault server fakes (azsecrets,
// azcertificates) behind an HTTPS listener, answering the certificate and secret reads the
// operator makes the way the service does: a 401 Bearer challenge first, tokens from the test
// issuer checked against its JWKS, 403 for denied names, 404 for missing ones.
//
// Certificates are files in -dir, `<name>.pem` (chain and key) or `<name>.pfx` (PKCS#12, empty
// password), read on every request: a test rotates one by renaming a new file over the old.
// A file's version is derived from its bytes; earlier versions are kept under `.versions/`.
// Names listed in `-dir/.deny` (one per line) answer 403.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	dir := flag.String("dir", "", "directory of certificate files")
	caOut := flag.String("ca-out", "", "where to write the PEM CA that signs the serving certificate")
	sans := flag.String("san", "", "extra comma-separated names for the serving certificate")
	jwks := flag.String("jwks", "", "JWKS URL of the token issuer")
	authority := flag.String("authority", "", "the challenge's authorization URL (<authority host>/<tenant>)")
	resource := flag.String("resource", "https://vault.azure.net", "the challenge's resource")
	flag.Parse()
	if *dir == "" || *caOut == "" || *jwks == "" || *authority == "" {
		log.Fatal("-dir, -ca-out, -jwks and -authority are required")
	}
	tlsConfig, err := serving(*caOut, *sans)
	if err != nil {
		log.Fatalf("serving certificate: %v", err)
	}
	v := &vault{
		store:     &store{dir: *dir},
		tokens:    &tokens{jwksURL: *jwks, resource: *resource},
		challenge: fmt.Sprintf(`Bearer authorization="%s", resource="%s"`, *authority, *resource),
	}
	v.certificates, v.secrets = fakes(v.store)
	server := &http.Server{Addr: *addr, Handler: v, TLSConfig: tlsConfig}
	log.Printf("key vault test server on https://%s serving %s", *addr, *dir)
	log.Fatal(server.ListenAndServeTLS("", ""))
}

type vault struct {
	store        *store
	tokens       *tokens
	challenge    string
	certificates http.RoundTripper
	secrets      http.RoundTripper
}

// Anchored, unlike the fakes' own patterns: names as Key Vault allows them, an optional version.
var route = regexp.MustCompile(`^/(certificates|secrets)/([0-9a-zA-Z-]{1,127})(?:/([0-9a-zA-Z]{1,64}))?/?$`)

func (v *vault) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	status := v.serve(w, req)
	log.Printf("%s %s -> %d", req.Method, req.URL.Path, status)
}

func (v *vault) serve(w http.ResponseWriter, req *http.Request) int {
	if req.URL.Query().Get("api-version") == "" {
		return fail(w, http.StatusBadRequest, "BadParameter", "The api-version query parameter is missing.")
	}
	bearer, found := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !found {
		// The real service answers an anonymous request with the challenge and no body.
		w.Header().Set("WWW-Authenticate", v.challenge)
		w.WriteHeader(http.StatusUnauthorized)
		return http.StatusUnauthorized
	}
	appID, err := v.tokens.verify(bearer)
	if err != nil {
		w.Header().Set("WWW-Authenticate", v.challenge)
		return fail(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token: "+err.Error())
	}
	m := route.FindStringSubmatch(req.URL.Path)
	if m == nil {
		return fail(w, http.StatusNotFound, "NotFound", "No such Key Vault operation.")
	}
	kind, name := m[1], m[2]
	if req.Method != http.MethodGet {
		return fail(w, http.StatusMethodNotAllowed, "BadParameter", "Only reads are served here.")
	}
	if v.store.denied(name) {
		return fail(w, http.StatusForbidden, "Forbidden", fmt.Sprintf(
			"The user, group or application 'appid=%s' does not have %s get permission on this key vault.", appID, kind))
	}

	// Pitfall: the fakes dispatch on the API name the SDK client would set, and their
	// challenge interceptor needs a host; server-side requests carry neither.
	transport, api := v.certificates, "Client.GetCertificate"
	if kind == "secrets" {
		transport, api = v.secrets, "Client.GetSecret"
	}
	out := req.Clone(context.WithValue(req.Context(), runtime.CtxAPINameKey{}, api))
	out.URL.Scheme, out.URL.Host = "https", req.Host
	resp, err := transport.RoundTrip(out)
	var respErr *azcore.ResponseError
	switch {
	case errors.As(err, &respErr):
		return fail(w, respErr.StatusCode, respErr.ErrorCode, message(respErr.ErrorCode, kind, m[2], m[3]))
	case err != nil:
		log.Printf("fake failed: %v", err)
		return fail(w, http.StatusInternalServerError, "InternalServerError", "the fake failed")
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return resp.StatusCode
}

// The fakes return errors without a body: write the one Key Vault writes.
func fail(w http.ResponseWriter, status int, code, msg string) int {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("x-ms-error-code", code)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	return status
}

func message(code, kind, name, version string) string {
	id := name
	if version != "" {
		id += "/" + version
	}
	switch code {
	case "CertificateNotFound", "SecretNotFound":
		return fmt.Sprintf("A %s with (name/id) %s was not found in this key vault.", strings.TrimSuffix(kind, "s"), id)
	default:
		return code
	}
}

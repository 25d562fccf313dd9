// A real OAuth2/OIDC test issuer (npm oauth2-mock-server): discovery, JWKS with a fresh RS256
// key, and a token endpoint. Tests pick claims through extra form fields on /token.
import { OAuth2Server } from 'oauth2-mock-server';

// Arguments: the address to listen on, then optionally the key and certificate files to
// serve HTTPS with (as a Tenant's `staffAuth.issuer` must be) and a port.
const [address = '127.0.0.1', keyFile, certFile, port = '0'] = process.argv.slice(2);
const server = keyFile ? new OAuth2Server(keyFile, certFile) : new OAuth2Server();
const store = server.issuer.keys;
const first = await store.generate('RS256');
// A second key, published only when the issuer rotates to it (a token request with
// rotate_keys=true, whose own token is still signed by the first key): from then on it signs,
// and the first key is withdrawn from the JWKS, as an issuer retiring a key does.
const next = await store.generate('RS256');
let signing = first.kid;
const withdrawn = new Set([next.kid]);
const pick = store.get.bind(store);
const publish = store.toJSON.bind(store);
store.get = (kid) => pick(kid ?? signing);
store.toJSON = (withPrivate) => publish(withPrivate).filter((k) => !withdrawn.has(k.kid));
server.service.on('beforeTokenSigning', (token, req) => {
  if (req.body.rotate_keys === 'true') {
    withdrawn.delete(next.kid);
    withdrawn.add(first.kid);
    signing = next.kid;
  }
  token.payload.sub = req.body.sub ?? 'staff-1';
  if (req.body.expires_in !== undefined) {
    token.payload.exp = token.payload.iat + Number(req.body.expires_in);
  }
  if (req.body.iss !== undefined) {
    token.payload.iss = req.body.iss;
  }
  // Claims other issuers add (Entra ID's `scp` and `roles`), as a JSON object.
  if (req.body.claims !== undefined) {
    Object.assign(token.payload, JSON.parse(req.body.claims));
  }
});
// On the address given (loopback, or a real node's bridge gateway so pods fetch its keys) and
// a port the OS picks while binding, so two issuers never race for one; the test reads the URL
// from this line. It is the URL the runtime is configured with, byte for byte (`iss` must
// match it).
await server.start(Number(port), address);
const scheme = keyFile ? 'https' : 'http';
const bound = server.address().port;
server.issuer.url = scheme === 'https' && bound === 443
  ? `https://${address}` : `${scheme}://${address}:${bound}`;
console.log(`issuer ready at ${server.issuer.url}`);

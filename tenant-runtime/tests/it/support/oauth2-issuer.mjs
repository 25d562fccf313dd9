// A real OAuth2/OIDC test issuer (npm oauth2-mock-server): discovery, JWKS with a fresh RS256
// key, and a token endpoint. Tests pick claims through extra form fields on /token.
import { OAuth2Server } from 'oauth2-mock-server';

const port = Number(process.argv[2]);
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token, req) => {
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
// The URL the runtime is configured with, byte for byte (`iss` must match it).
server.issuer.url = `http://127.0.0.1:${port}`;
await server.start(port, '127.0.0.1');
console.log(`issuer ready at ${server.issuer.url}`);

// npm oauth2-mock-server serving the token endpoint where Microsoft Entra ID has it,
// /<tenant>/oauth2/v2.0/token. Issued tokens carry what the client sent (client id, scope, the
// kind of credential, the federated assertion) so tests can check the exchange. One client id
// is refused the way Entra refuses an unknown application.
import { OAuth2Server } from 'oauth2-mock-server';

const [port, tenant, refusedClient] = process.argv.slice(2);
const server = new OAuth2Server(undefined, undefined, {
  endpoints: { token: `/${tenant}/oauth2/v2.0/token` },
});
await server.issuer.keys.generate('RS256');
let issued = 0;
server.service.on('beforeTokenSigning', (token, req) => {
  issued += 1;
  token.payload.appid = req.body.client_id;
  token.payload.scp = req.body.scope;
  token.payload.n = issued;
  token.payload.credential = req.body.client_secret !== undefined ? 'secret'
    : req.body.client_assertion_type ?? 'none';
  token.payload.assertion = req.body.client_assertion;
});
server.service.on('beforeResponse', (response, req) => {
  if (req.body.client_id === refusedClient) {
    response.statusCode = 401;
    response.body = { error: 'invalid_client', error_description: `AADSTS700016: application ${refusedClient} not found` };
  }
});
server.issuer.url = `http://127.0.0.1:${port}/${tenant}/v2.0`;
await server.start(Number(port), '127.0.0.1');
console.log(`entra issuer ready on ${port}`);

// A throwaway OpenID Connect provider for Modelvault's tests, on loopback.
// scripts/test.sh starts it; nothing here is fit for production.
//
//   node server.mjs PORT RSA_KEY_PEM EC_KEY_PEM
//
// - Signing keys come from the PEM files (kids `rsa-1` and `ec-1`), so the
//   tests can also sign tokens of their own with the same keys (expired,
//   wrong audience, ...) and show each is refused for the right reason.
// - Access tokens for the resource `urn:modelvault` are RS256 JWTs with
//   `typ: at+jwt` and a `groups` claim.
// - Clients: `modelvault-cli` (public, device flow and authorization code +
//   PKCE, loopback redirect), `modelvault-console` (the web console's
//   code + PKCE sign-in), `deployer` and `trainer` (client credentials).
// - People: alice (nlp-writers), bob (auditors), carol (sensitive-readers),
//   password `pw-<name>`. The login page is a bare form; consent is
//   granted automatically (a first-party CLI).
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, rsaPath, ecPath] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = 'urn:modelvault';

const jwk = (path, kid, alg) => ({
  ...createPrivateKey(readFileSync(path)).export({ format: 'jwk' }),
  kid,
  alg,
  use: 'sig',
});

const people = {
  alice: ['nlp-writers'],
  bob: ['auditors'],
  carol: ['sensitive-readers', 'nlp-readers'],
};
const clientGroups = { deployer: ['prod-deployers'], trainer: ['trainers'] };
// Further claims a workload's token carries (Modelvault copies the ones an
// issuer's `attribute_claims` lists into principal.attributes).
const clientClaims = { deployer: { department: 'ml-platform', cost_center: 4711 } };

const provider = new Provider(issuer, {
  jwks: { keys: [jwk(rsaPath, 'rsa-1', 'RS256'), jwk(ecPath, 'ec-1', 'ES256')] },
  clients: [
    {
      client_id: 'modelvault-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
    {
      // The web console: a public client (authorization code + PKCE); a
      // loopback redirect URI matches any port (RFC 8252).
      client_id: 'modelvault-console',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/ui/oidc/callback'],
    },
    {
      client_id: 'deployer',
      client_secret: 'deployer-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    {
      client_id: 'trainer',
      client_secret: 'trainer-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
  ],
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'api'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    deviceFlow: {
      enabled: true,
      userCodeInputSource: async (ctx, form) => { ctx.body = `<html><body>${form}</body></html>`; },
      userCodeConfirmSource: async (ctx, form) => { ctx.body = `<html><body>${form}</body></html>`; },
      successSource: async (ctx) => { ctx.body = '<html><body>signed in</body></html>'; },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new Error('unknown resource');
        return {
          scope: 'api',
          audience: RESOURCE,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    if (token.accountId && people[token.accountId]) return { groups: people[token.accountId] };
    if (!token.accountId && clientGroups[token.clientId]) {
      return { groups: clientGroups[token.clientId], ...(clientClaims[token.clientId] || {}) };
    }
    return undefined;
  },
  findAccount: async (ctx, id) => (people[id]
    ? { accountId: id, claims: async () => ({ sub: id, groups: people[id] }) }
    : undefined),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

// Login: a bare form. Consent: granted at once.
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'POST' && m[2]) {
    const body = await new Promise((resolve) => {
      let data = '';
      ctx.req.on('data', (c) => { data += c; });
      ctx.req.on('end', () => resolve(new URLSearchParams(data)));
    });
    const login = body.get('login');
    if (!people[login] || body.get('password') !== `pw-${login}`) {
      ctx.status = 401;
      ctx.body = 'bad login';
      return undefined;
    }
    return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'login') {
    ctx.type = 'html';
    ctx.body = `<html><body><form method="post" action="/interaction/${details.uid}/login">
<input name="login"/><input name="password" type="password"/><button>Sign in</button></form></body></html>`;
    return undefined;
  }
  const { accountId } = details.session;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: details.params.client_id });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

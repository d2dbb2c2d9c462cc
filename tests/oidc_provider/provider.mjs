// The OpenID provider the tests run: panva's oidc-provider (certified), configured from the
// JSON in $OIDC_CONFIG: {issuer, port, jwks, clients, accounts}. Its own development login
// page takes any account id as the login (the password is not checked); accounts not listed
// are refused by findAccount. Back-channel logout and RP-initiated logout are on; PKCE is
// required. Prints "listening <port>" on stdout once it accepts connections.
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OIDC_CONFIG);
const accounts = config.accounts;

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: ['porter-test-cookie-key'] },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    // `_userinfo_only`: claims this account's ID tokens leave out (groups only at the
    // userinfo endpoint, as some providers do)
    const { _userinfo_only: only = [], ...all } = claims;
    return {
      accountId: id,
      async claims(use) {
        const found = { sub: id, ...all };
        if (use === 'id_token') for (const name of only) delete found[name];
        return found;
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // scope claims in the ID token, as Keycloak and Entra send them
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => true },
  acrValues: ['urn:porter:mfa'],
  // HS256 for the client that tests an algorithm switch (porter pins RS256)
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'HS256'] },
  ttl: {
    IdToken: (ctx, token, client) => (client && client.clientId === 'porter-short' ? 1 : 3600),
    AccessToken: 600,
    AuthorizationCode: 60,
    Session: 3600,
    Interaction: 600,
    Grant: 3600,
  },
});

provider.on('backchannel.error', (ctx, err, client) => {
  console.error(`backchannel logout to ${client.clientId} failed: ${err.message}`);
});
provider.on('backchannel.success', (ctx, client) => {
  console.log(`backchannel logout to ${client.clientId} sent`);
});

// A client that requires authorization parameters of its own (a site's acr_values): the
// provider refuses its authorization requests without them.
provider.use(async (ctx, next) => {
  const required = config.required_params || {};
  if (ctx.path === '/auth' && required[ctx.query.client_id]) {
    for (const [name, value] of Object.entries(required[ctx.query.client_id])) {
      if (ctx.query[name] !== value) {
        ctx.status = 400;
        ctx.body = `missing ${name}`;
        return;
      }
    }
  }
  // oidc-provider takes client_secret_basic and client_secret_post alike; some providers
  // take only the form. These clients' secrets in an Authorization header are refused.
  const auth = ctx.get('authorization');
  if (ctx.path === '/token' && auth.startsWith('Basic ')) {
    const id = decodeURIComponent(Buffer.from(auth.slice(6), 'base64').toString().split(':')[0]);
    if ((config.post_only || []).includes(id)) {
      ctx.status = 401;
      ctx.body = { error: 'invalid_client', error_description: 'client_secret_post only' };
      return;
    }
  }
  await next();
});

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});

// A real OpenID Connect provider for the sign-in tests (npm oidc-provider 9.x), on loopback.
// ENV: PORT, REDIRECT_URI (Cocon's /oidc/redirect), CLIENT_SECRET. Prints "ready" once listening.
// Accounts: alice and bob (passwords "<name>-password"), with their e-mail, name and a
// `school_id` claim, which the UserInfo endpoint answers.
import http from 'node:http';
import { generateKeyPairSync, timingSafeEqual, createHash } from 'node:crypto';
import Provider from 'oidc-provider';

const PORT = Number(process.env.PORT);
const ISSUER = `http://127.0.0.1:${PORT}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test-1', use: 'sig', alg: 'RS256' }] };

const ACCOUNTS = {
  alice: { name: 'Alice Martin', school_id: 'alice' },
  bob: { name: 'Bob Durand', school_id: 'bob' },
};

const configuration = {
  clients: [{
    client_id: 'cocon',
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks,
  cookies: { keys: ['a-test-provider-cookie-key'] },
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username', 'school_id'] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const existing = grantId && await ctx.oidc.provider.Grant.find(grantId);
    if (existing) return existing;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile');
    grant.addOIDCClaims(['school_id']);
    await grant.save();
    return grant;
  },
  async findAccount(ctx, sub) {
    const a = ACCOUNTS[sub];
    if (!a) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@school.test`, email_verified: true, name: a.name, preferred_username: sub, school_id: a.school_id };
      },
    };
  },
};

const provider = new Provider(ISSUER, configuration);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const loginPage = (uid, error) => `<!doctype html><title>School sign-in</title><h1>School sign-in</h1>
<form method="post" action="/interaction/${esc(uid)}/login">
${error ? `<p class="error">${esc(error)}</p>` : ''}
<input name="username" id="username" autocomplete="username"> <input name="password" id="password" type="password">
<button type="submit">Sign in</button></form>`;
const same = (a, b) => timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
const body = (req) => new Promise((ok, ko) => {
  let s = '';
  req.on('data', (d) => { s += d; if (s.length > 1e5) req.destroy(); });
  req.on('end', () => ok(new URLSearchParams(s)));
  req.on('error', ko);
});

async function interaction(req, res) {
  const m = req.url.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (!m) { res.statusCode = 404; return res.end(); }
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name !== 'login') {
    // Consent is implied for this first-party client (loadExistingGrant).
    return provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET' && !m[2]) {
    res.setHeader('content-type', 'text/html');
    return res.end(loginPage(details.uid));
  }
  if (req.method === 'POST' && m[2]) {
    const f = await body(req);
    const user = f.get('username') || '';
    if (!ACCOUNTS[user] || !same(f.get('password') || '', `${user}-password`)) {
      res.statusCode = 401;
      res.setHeader('content-type', 'text/html');
      return res.end(loginPage(details.uid, 'Invalid username or password'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
  }
  res.statusCode = 405;
  res.end();
}

const handler = provider.callback();
http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    return interaction(req, res).catch((e) => { res.statusCode = 400; res.end(String(e.message)); });
  }
  return handler(req, res);
}).listen(PORT, '127.0.0.1', () => console.log('ready'));

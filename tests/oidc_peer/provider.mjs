// oidc-peer: panva's oidc-provider (OpenID Certified) on loopback, so the gateway's tests sign in against an OpenID
// Connect provider that nobody on this project wrote. dev_idp imitates Cognito; this one holds the gateway to the
// standard instead of to our own reading of it.
//
// Usage: node provider.mjs [--port N]; every setting comes from the environment (tests/oidc_peer.py sets them):
//   OIDC_PEER_PORT                         port on 127.0.0.1; 0 (the default) picks a free one
//   OIDC_PEER_CLIENT_ID, _CLIENT_SECRET    the one confidential client (client_secret_basic at the token endpoint)
//   OIDC_PEER_REDIRECT_URIS                space-separated redirect_uris of that client
//   OIDC_PEER_POST_LOGOUT_REDIRECT_URIS    space-separated post_logout_redirect_uris
//   OIDC_PEER_TOKEN_TTL                    lifetime of access and ID tokens in seconds (default 300)
//   OIDC_PEER_CLOCK_TOLERANCE              seconds past exp that the provider still accepts its own tokens
//                                          (oidc-provider's default, 15, unless set; 0 makes expiry exact)
//   OIDC_PEER_CONFORM_ID_TOKEN_CLAIMS      "true" (default): scope claims only at userinfo, the ID token has sub and
//                                          protocol claims; "false": they are in the ID token too
//   OIDC_PEER_ROTATE_REFRESH_TOKEN         "true": every refresh_token grant returns a new refresh token and retires
//                                          the old one; "false": never; unset: oidc-provider's default policy
//   OIDC_PEER_OPAQUE_SUBJECTS              "true": sub is an opaque id (a UUID per account) instead of the login name
//                                          (default "false": sub is "alice" or "bob")
//   OIDC_PEER_ISSUER_TRAILING_SLASH        "true": the issuer ends in "/" (as Auth0's does); default "false"
// Once it accepts connections it prints one line, "oidc-peer listening on <issuer>", and the issuer is exactly that
// URL (no trailing slash unless asked for). SIGTERM or SIGINT stops it. State (sessions, codes, tokens) lives in
// memory only.
//
// So that tests can count what a relying party asked, every request is logged once it is answered, as
// "oidc-peer request <METHOD> <path> <status>" (path without the query), and so are three events:
// "oidc-peer grant <grant_type>" (a token endpoint grant that succeeded), "oidc-peer grant revoked" (a grant revoked
// by the revocation endpoint or by a sign-out) and "oidc-peer end_session" (an RP-initiated logout confirmed).
//
// Sign-in is authorize → GET /interaction/<uid> (a form with fields "login" and "password") → POST it to
// /interaction/<uid>/login → 303 to the resumed authorization → 303 to redirect_uri with code and state. The password is
// checked here (oidc-provider's devInteractions accept any login and no password). Consent is never asked of this
// first-party client: loadExistingGrant grants every scope and claim it asks for.
import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const ACCOUNTS = new Map([
  ['alice', {
    password: 'alice-password',
    opaqueSubject: '6f1c2b9e-0d3a-4c55-9a61-1b2e3f4a5c6d',
    claims: {
      email: 'alice@example.com',
      email_verified: true,
      name: 'Alice Example',
      preferred_username: 'alice',
      groups: ['admins'],
    },
  }],
  ['bob', {
    password: 'bob-password',
    opaqueSubject: 'a83e51c0-7b2d-4f19-8e6a-5d4c3b2a1f0e',
    claims: {
      email: 'bob@example.com',
      email_verified: true,
      name: 'Bob Example',
      preferred_username: 'bob',
      // No groups claim at all: the gateway must treat a missing claim as "no groups", not fail.
    },
  }],
]);

// Scope → claims. "groups" is not a standard scope; Cognito puts cognito:groups in its tokens, other providers need a
// scope like this one, so the gateway must be able to ask for it.
const CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'preferred_username'],
  groups: ['groups'],
};

function settings() {
  const { values } = parseArgs({ options: { port: { type: 'string' } }, strict: true });
  const env = process.env;
  const required = (name) => {
    const value = env[name];
    if (!value) {
      throw new Error(`${name} must be set`);
    }
    return value;
  };
  const flag = (name) => {
    const value = env[name];
    if (value === undefined || value === '') {
      return undefined;
    }
    if (value !== 'true' && value !== 'false') {
      throw new Error(`${name} has value '${value}'; expected "true" or "false"`);
    }
    return value === 'true';
  };
  const port = Number(values.port ?? env.OIDC_PEER_PORT ?? '0');
  const tokenTtl = Number(env.OIDC_PEER_TOKEN_TTL ?? '300');
  const clockTolerance = env.OIDC_PEER_CLOCK_TOLERANCE ? Number(env.OIDC_PEER_CLOCK_TOLERANCE) : undefined;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`port '${values.port ?? env.OIDC_PEER_PORT}' is not a TCP port`);
  }
  if (!Number.isInteger(tokenTtl) || tokenTtl < 1) {
    throw new Error(`OIDC_PEER_TOKEN_TTL has value '${env.OIDC_PEER_TOKEN_TTL}'; expected whole seconds >= 1`);
  }
  if (clockTolerance !== undefined && !(Number.isInteger(clockTolerance) && clockTolerance >= 0)) {
    throw new Error(`OIDC_PEER_CLOCK_TOLERANCE has value '${env.OIDC_PEER_CLOCK_TOLERANCE}'; expected whole seconds >= 0`);
  }
  return {
    port,
    tokenTtl,
    clockTolerance,
    clientId: required('OIDC_PEER_CLIENT_ID'),
    clientSecret: required('OIDC_PEER_CLIENT_SECRET'),
    redirectUris: required('OIDC_PEER_REDIRECT_URIS').split(/\s+/).filter(Boolean),
    postLogoutRedirectUris: (env.OIDC_PEER_POST_LOGOUT_REDIRECT_URIS ?? '').split(/\s+/).filter(Boolean),
    conformIdTokenClaims: flag('OIDC_PEER_CONFORM_ID_TOKEN_CLAIMS') ?? true,
    rotateRefreshToken: flag('OIDC_PEER_ROTATE_REFRESH_TOKEN'),
    opaqueSubjects: flag('OIDC_PEER_OPAQUE_SUBJECTS') ?? false,
    issuerTrailingSlash: flag('OIDC_PEER_ISSUER_TRAILING_SLASH') ?? false,
  };
}

// The subject (accountId) of a login name, and the account of a subject.
function subjectOf(config, login) {
  return config.opaqueSubjects ? ACCOUNTS.get(login).opaqueSubject : login;
}

function accountOf(config, sub) {
  if (!config.opaqueSubjects) {
    return ACCOUNTS.get(sub);
  }
  return [...ACCOUNTS.values()].find((account) => account.opaqueSubject === sub);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Plain pages with no outside resources: oidc-provider's own pages @import a web font, which a browser test here would
// try to fetch from the internet.
function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(uid, { login = '', error } = {}) {
  const message = error ? `<p id="error" role="alert">${escapeHtml(error)}</p>\n` : '';
  return page('Sign-in', `${message}<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label>Username <input id="username" type="text" name="login" value="${escapeHtml(login)}" required autofocus></label>
  <label>Password <input id="password" type="password" name="password" required></label>
  <button id="submit" type="submit">Sign-in</button>
</form>
<p><a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>`);
}

function consentPage(uid, details) {
  const asked = [...(details.missingOIDCScope ?? []), ...(details.missingOIDCClaims ?? [])];
  return page('Authorize', `<p>The application asks for: ${escapeHtml(asked.join(', ') || 'your previous authorization')}</p>
<form id="consent" method="post" action="/interaction/${escapeHtml(uid)}/consent">
  <button id="allow" type="submit">Continue</button>
</form>
<p><a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>`);
}

function passwordMatches(account, password) {
  const expected = Buffer.from(account.password);
  const given = Buffer.from(password ?? '');
  return expected.length === given.length && timingSafeEqual(expected, given);
}

async function readForm(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) {
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Grants every scope and claim the current request asks for, so a first-party client never sees a consent page.
async function grantEverythingAsked(details, grant) {
  if (details.missingOIDCScope) {
    grant.addOIDCScope(details.missingOIDCScope.join(' '));
  }
  if (details.missingOIDCClaims) {
    grant.addOIDCClaims(details.missingOIDCClaims);
  }
  if (details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  return grant.save();
}

// The interaction routes (login, consent, abort) that oidc-provider leaves to the application. Koa middleware that
// provider.use() puts in front of the provider's own routes.
function interactions(provider, config) {
  const route = /^\/interaction\/([^/]+)(?:\/(login|consent|abort))?$/;
  return async function interactionRoutes(ctx, next) {
    const match = route.exec(ctx.path);
    if (!match) {
      return next();
    }
    const [, uid, action] = match;
    ctx.set('Cache-Control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) {
      ctx.throw(400, 'interaction does not match this browser session');
    }
    const { prompt } = details;
    const finish = async (result, options) => {
      const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, options);
      ctx.status = 303;
      ctx.redirect(returnTo);
    };
    if (action === undefined && ctx.method === 'GET') {
      ctx.type = 'html';
      ctx.body = prompt.name === 'login' ? loginPage(uid) : consentPage(uid, prompt.details);
    } else if (action === 'login' && ctx.method === 'POST' && prompt.name === 'login') {
      const form = await readForm(ctx);
      const login = form.get('login') ?? '';
      const account = ACCOUNTS.get(login);
      if (!account || !passwordMatches(account, form.get('password'))) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginPage(uid, { login, error: 'Incorrect username or password.' });
        return undefined;
      }
      await finish({ login: { accountId: subjectOf(config, login) } }, { mergeWithLastSubmission: false });
    } else if (action === 'consent' && ctx.method === 'POST' && prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      const grantId = await grantEverythingAsked(prompt.details, grant);
      await finish({ consent: { grantId } }, { mergeWithLastSubmission: true });
    } else if (action === 'abort' && ctx.method === 'GET') {
      await finish(
        { error: 'access_denied', error_description: 'End-User aborted interaction' },
        { mergeWithLastSubmission: false },
      );
    } else {
      ctx.throw(405, `${ctx.method} is not allowed here during the ${prompt.name} prompt`);
    }
    return undefined;
  };
}

function configuration(config) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ttl = config.tokenTtl;
  return {
    clients: [{
      client_id: config.clientId,
      client_secret: config.clientSecret,
      redirect_uris: config.redirectUris,
      post_logout_redirect_uris: config.postLogoutRedirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    // A fresh signing key per process, never oidc-provider's published development key.
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' }] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: CLAIMS,
    scopes: Object.keys(CLAIMS).concat('offline_access'),
    conformIdTokenClaims: config.conformIdTokenClaims,
    ...(config.clockTolerance === undefined ? {} : { clockTolerance: config.clockTolerance }),
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // `form` is oidc-provider's <form id="op.logoutForm"> with the hidden xsrf input; the buttons point at it.
        logoutSource: async (ctx, form) => {
          ctx.body = page('Sign out', `${form}
<p>Do you want to sign out from ${escapeHtml(ctx.host)}?</p>
<button id="logout" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button id="stay" type="submit" form="op.logoutForm">No, stay signed in</button>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<p>You are signed out.</p>');
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, sub) => {
      const account = accountOf(config, sub);
      if (!account) {
        return undefined;
      }
      // oidc-provider filters these by the granted scopes and by where they go (ID token or userinfo).
      return { accountId: sub, claims: async () => ({ sub, ...account.claims }) };
    },
    // Without this, oidc-provider issues a refresh token only for scope offline_access (which it in turn honours only
    // with prompt=consent). Cognito issues one on every code exchange, so the gateway relies on that.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ...(config.rotateRefreshToken === undefined ? {} : { rotateRefreshToken: () => config.rotateRefreshToken }),
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId ?? ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      const grant = grantId
        ? await ctx.oidc.provider.Grant.find(grantId)
        : new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      // A first-party client: whatever it asks for now is granted (also scopes added since an earlier sign-in).
      grant.addOIDCScope(ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid');
      grant.addOIDCClaims([...ctx.oidc.requestParamClaims ?? []]);
      await grant.save();
      return grant;
    },
    ttl: {
      AccessToken: ttl,
      IdToken: ttl,
      AuthorizationCode: 60,
      RefreshToken: 24 * 60 * 60,
      Interaction: 10 * 60,
      Session: 24 * 60 * 60,
      Grant: 24 * 60 * 60,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      const rows = Object.entries(out).map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: ${escapeHtml(value)}</p>`);
      ctx.body = page('Error', rows.join('\n'));
    },
  };
}

// Koa middleware, first in line: one log line per request once it is answered (tests count userinfo calls with it).
async function logRequests(ctx, next) {
  try {
    await next();
  } finally {
    console.log(`oidc-peer request ${ctx.method} ${ctx.path} ${ctx.status}`);
  }
}

function logEvents(provider) {
  provider.on('grant.success', (ctx) => console.log(`oidc-peer grant ${ctx.oidc.params.grant_type}`));
  provider.on('grant.revoked', () => console.log('oidc-peer grant revoked'));
  provider.on('end_session.success', () => console.log('oidc-peer end_session'));
  provider.on('server_error', (ctx, error) => console.error('oidc-peer server_error:', error));
}

function main() {
  const config = settings();
  const server = createServer();
  server.listen(config.port, '127.0.0.1', () => {
    const issuer = `http://127.0.0.1:${server.address().port}${config.issuerTrailingSlash ? '/' : ''}`;
    const provider = new Provider(issuer, configuration(config));
    provider.use(logRequests);
    provider.use(interactions(provider, config));
    logEvents(provider);
    server.on('request', provider.callback());
    console.log(`oidc-peer listening on ${issuer}`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();

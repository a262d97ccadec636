// alb-verify: AWS's own verifier for ALB's x-amzn-oidc-data (aws-jwt-verify's AlbJwtVerifier) behind a tiny HTTP
// server, so the gateway's tests ask the library an app written for an ALB uses, not a reading of the format of ours.
//
// Usage: node verify.mjs; settings come from the environment (tests/alb_verify.py sets them):
//   ALB_VERIFY_ARN        the ALB ARN the header's "signer" must be (AlbJwtVerifier's albArn)
//   ALB_VERIFY_ISSUER     the issuer its "iss" must be
//   ALB_VERIFY_CLIENT_ID  the client id its "client" must be
//   ALB_VERIFY_KEYS_URL   the key endpoint (AlbJwtVerifier's jwksUri): the PEM is fetched from <url>/<kid>
// Once it listens it prints "alb-verify listening on http://127.0.0.1:<port>". POST /verify with a JSON body
// {"token": "...", "albArn"?: "...", "clientId"?: "..."} (the optional fields override the environment's) answers
// {"valid": true, "payload": {...}} or {"valid": false, "error": "<error class>", "message": "..."}. Every key fetch
// is printed as "fetch <uri> <status>". SIGTERM or SIGINT stops it.
//
// The library's default fetcher speaks https only; the gateway's test instance is plain http on loopback, so the
// AlbJwksCache gets a fetcher over Node's fetch() that returns the body as an ArrayBuffer, as the default one does.
import { createServer } from 'node:http';

import { AlbJwtVerifier } from 'aws-jwt-verify';
import { AlbJwksCache } from 'aws-jwt-verify/alb-cache';

const settings = {
  albArn: process.env.ALB_VERIFY_ARN,
  issuer: process.env.ALB_VERIFY_ISSUER,
  clientId: process.env.ALB_VERIFY_CLIENT_ID,
  jwksUri: process.env.ALB_VERIFY_KEYS_URL,
};
for (const [name, value] of Object.entries(settings)) {
  if (!value) {
    console.error(`alb-verify: ${name} is not set`);
    process.exit(2);
  }
}

const fetcher = {
  async fetch(uri) {
    const response = await fetch(uri);
    console.log(`fetch ${uri} ${response.status}`);
    if (response.status !== 200) {
      throw new Error(`${uri} answered ${response.status}`);
    }
    return response.arrayBuffer();
  },
};
// One key cache for every verifier, as one app process has.
const jwksCache = new AlbJwksCache({ fetcher });
const verifiers = new Map();

function verifierFor(albArn, clientId) {
  const key = JSON.stringify([albArn, clientId]);
  if (!verifiers.has(key)) {
    verifiers.set(key, AlbJwtVerifier.create({ ...settings, albArn, clientId }, { jwksCache }));
  }
  return verifiers.get(key);
}

async function verdict(body) {
  const request = JSON.parse(body);
  const verifier = verifierFor(request.albArn ?? settings.albArn, request.clientId ?? settings.clientId);
  try {
    return { valid: true, payload: await verifier.verify(request.token) };
  } catch (err) {
    return { valid: false, error: err.constructor.name, message: err.message };
  }
}

const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/verify') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', async () => {
    try {
      const answer = await verdict(Buffer.concat(chunks).toString('utf8'));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    } catch (err) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: err.message }));
    }
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(`alb-verify listening on http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

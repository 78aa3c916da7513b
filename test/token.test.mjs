// Connection tokens in the TypeScript package: encodeConnectionToken and
// decodeConnectionToken against the test vectors the Go encoder is checked
// against (internal/token/testdata/vectors.json) and against the binary's
// `token` subcommand, and the seed flow driven by a token alone. Only
// 127.0.0.0/8 is used; STUN is off.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RemoteIngressHub, RemoteIngressEdge, encodeConnectionToken, decodeConnectionToken } from '../dist_ts/index.js';
import { realBinary, waitForEvent, freePortPair, startProxyTarget, httpThrough } from './fixtures/helpers';

const TIMEOUT = 30000;
const here = path.dirname(fileURLToPath(import.meta.url));
const vectors = JSON.parse(readFileSync(path.join(here, '..', 'internal', 'token', 'testdata', 'vectors.json'), 'utf8'));

test('vectors: encodeConnectionToken writes the tokens the Go encoder writes, byte for byte', () => {
  assert.ok(vectors.encode.length >= 8);
  for (const v of vectors.encode) {
    assert.equal(encodeConnectionToken(v.input), v.token, v.name);
    assert.deepEqual(decodeConnectionToken(v.token), v.decoded, v.name);
  }
});

test('vectors: decodeConnectionToken accepts standard base64, padding, unknown keys, as Go does', () => {
  assert.ok(vectors.decode.length >= 10);
  for (const v of vectors.decode) {
    assert.deepEqual(decodeConnectionToken(v.token), v.decoded, v.name);
  }
});

test('vectors: malformed tokens throw an Error naming what is wrong, never showing the secret', () => {
  assert.ok(vectors.invalid.length >= 20);
  for (const v of vectors.invalid) {
    assert.throws(
      () => decodeConnectionToken(v.token),
      (err) => {
        assert.ok(err instanceof Error, v.name);
        assert.ok(err.message.includes(v.error), `${v.name}: "${err.message}" should say ${v.error}`);
        assert.ok(!err.message.includes('hunter2'), `${v.name}: "${err.message}" shows the secret`);
        if (v.token.trim().length >= 8) assert.ok(!err.message.includes(v.token.trim()), `${v.name}: the message shows the token`);
        return true;
      },
    );
  }
});

test('round trip: decode(encode(x)) is x; the pin is normalized', () => {
  const pin = 'AB:'.repeat(31) + 'AB';
  const inputs = [
    { hubHost: 'hub.example.com', hubPort: 8443, edgeId: 'edge-nyc-01', secret: 'supersecrettoken1' },
    { hubHost: '::1', hubPort: 1, edgeId: 'ü<>&\u2028', secret: 'x'.repeat(300) + '"\\\n\u0000', hubCertSha256: 'c'.repeat(64) },
    { hubHost: 'h', hubPort: 65535, edgeId: '🚀', secret: '🔑' },
  ];
  for (const input of inputs) {
    const token = encodeConnectionToken(input);
    assert.match(token, /^[A-Za-z0-9_-]+$/, 'unpadded base64url');
    assert.deepEqual(decodeConnectionToken(token), input);
  }
  const pinned = decodeConnectionToken(encodeConnectionToken({ hubHost: 'h', hubPort: 1, edgeId: 'e', secret: 's', hubCertSha256: pin }));
  assert.equal(pinned.hubCertSha256, 'ab'.repeat(32));
  // A lone surrogate is written as U+FFFD, as Go writes an invalid string.
  assert.equal(decodeConnectionToken(encodeConnectionToken({ hubHost: 'h', hubPort: 1, edgeId: 'e', secret: 'a\ud800b' })).secret, 'a\ufffdb');
  // Surrounding white space (a newline from a file) is ignored.
  assert.deepEqual(decodeConnectionToken(`  ${encodeConnectionToken(inputs[0])}\n`), inputs[0]);
});

test('encodeConnectionToken refuses what a token cannot carry', () => {
  const ok = { hubHost: 'h', hubPort: 8443, edgeId: 'e', secret: 's' };
  const cases = [
    [{ ...ok, hubHost: '' }, Error, /hub host/],
    [{ ...ok, hubPort: 0 }, Error, /1-65535/],
    [{ ...ok, hubPort: 65536 }, Error, /1-65535/],
    [{ ...ok, hubPort: 80.5 }, Error, /1-65535/],
    [{ ...ok, edgeId: '' }, Error, /edge id/],
    [{ ...ok, secret: '' }, Error, /secret/],
    [{ ...ok, hubCertSha256: 'abc' }, Error, /pin/],
    [{ ...ok, hubCertSha256: 'g'.repeat(64) }, Error, /pin/],
    [{ ...ok, hubHost: 5 }, TypeError, /hubHost must be a string/],
    [{ ...ok, hubPort: '8443' }, TypeError, /hubPort/],
    [{ ...ok, secret: undefined }, TypeError, /secret must be a string/],
    [{ ...ok, hubCertSha256: 12 }, TypeError, /hubCertSha256/],
    [null, TypeError, /needs/],
  ];
  for (const [input, type, re] of cases) {
    assert.throws(() => encodeConnectionToken(input), (err) => err instanceof type && re.test(err.message), JSON.stringify(input));
  }
  assert.throws(() => decodeConnectionToken(42), TypeError);
});

test('encodeConnectionToken and `remoteingress-bin token` write the same token', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ri-token-'));
  try {
    const secretFile = path.join(dir, 'edge.secret');
    const secret = 'a<b>&c?>~ secret with spaces';
    writeFileSync(secretFile, secret + '\n');
    const pin = 'f'.repeat(64);
    const out = execFileSync(realBinary(), ['token', '--hub', 'hub.example.com:9443', '--edge-id', 'edge-é', '--secret-file', secretFile, '--hub-cert-sha256', pin], { encoding: 'utf8' });
    assert.equal(out.trim(), encodeConnectionToken({ hubHost: 'hub.example.com', hubPort: 9443, edgeId: 'edge-é', secret, hubCertSha256: pin }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the seed flow driven only by a token: createConnectionToken, then start({ token, listenPorts })', { timeout: TIMEOUT }, async (t) => {
  const secret = 'supersecrettoken1';
  const logs = [];
  const logger = { log: (level, message) => logs.push(message) };
  const hub = new RemoteIngressHub({ logger });
  t.after(() => hub.stop());
  await assert.rejects(hub.createConnectionToken({ edgeId: 'edge-nyc-01', hubHost: '127.0.0.1' }), /not running/);
  await hub.updateAllowedEdges([{ id: 'edge-nyc-01', secret }]);
  await hub.start({ tunnelPort: 0, listenHost: '127.0.0.1', targetHost: '127.0.0.2' });
  const status = await hub.getStatus();

  const token = await hub.createConnectionToken({ edgeId: 'edge-nyc-01', hubHost: '127.0.0.1' });
  assert.equal(typeof token, 'string');
  assert.deepEqual(decodeConnectionToken(token), {
    hubHost: '127.0.0.1', hubPort: status.tunnelPort, edgeId: 'edge-nyc-01', secret, hubCertSha256: status.certSha256,
  });
  assert.equal(decodeConnectionToken(await hub.createConnectionToken({ edgeId: 'edge-nyc-01', hubHost: 'hub.example.com', hubPort: 443 })).hubPort, 443);
  await assert.rejects(hub.createConnectionToken({ edgeId: 'edge-unknown', hubHost: '127.0.0.1' }), /"edge-unknown" is not in the allowed list/);
  await assert.rejects(hub.createConnectionToken({ edgeId: 'edge-nyc-01', hubHost: '127.0.0.1', hubPort: 0 }), /hubPort must be an integer 1-65535/);

  const port = await freePortPair();
  const target = await startProxyTarget(port);
  t.after(() => target.close());

  const edge = new RemoteIngressEdge({ logger });
  t.after(() => edge.stop());
  const edgeConnected = waitForEvent(hub, 'edgeConnected', 10000);
  const tunnelConnected = waitForEvent(edge, 'tunnelConnected', 10000);
  // The hub, the port, the identity, the secret and the pin come from the
  // token alone; listenHost keeps the test on loopback and STUN is off.
  await edge.start({ token, listenPorts: [port], listenHost: '127.0.0.1', stunIntervalSecs: 0 });
  assert.equal((await edgeConnected).edgeId, 'edge-nyc-01');
  await tunnelConnected;

  const { localPort, response } = await httpThrough(port);
  assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
  const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4));
  assert.equal(body.proxyLine, `PROXY TCP4 127.0.0.1 127.0.0.1 ${localPort} ${port}`);
  assert.equal(body.request, 'GET /hello HTTP/1.1');

  const edgeStatus = await edge.getStatus();
  assert.equal(edgeStatus.connected, true);
  assert.ok(!JSON.stringify(edgeStatus).includes(secret) && !JSON.stringify(edgeStatus).includes(token), 'no secret in the edge status');
  const hubStatus = await hub.getStatus();
  assert.ok(!JSON.stringify(hubStatus).includes(secret) && !JSON.stringify(hubStatus).includes(token), 'no secret in the hub status');

  // Beside a token, the params it stands for are an error.
  const other = new RemoteIngressEdge({ logger });
  t.after(() => other.stop());
  await assert.rejects(
    other.start({ token, hubHost: '127.0.0.1', listenPorts: [port + 1], listenHost: '127.0.0.1', stunIntervalSecs: 0 }),
    /hubHost cannot be given with token/,
  );
  await assert.rejects(other.start({ token: 'not a token!', listenPorts: [port + 1], listenHost: '127.0.0.1' }), /token is not base64url/);
  // A malformed token that holds a secret: the error says what is wrong, and shows neither.
  const badSecret = 'bad-token-secret-77a1';
  const bad = Buffer.from(JSON.stringify({ h: '127.0.0.1', p: 70000, e: 'edge-nyc-01', s: badSecret })).toString('base64url');
  await assert.rejects(other.start({ token: bad, listenPorts: [port + 1], listenHost: '127.0.0.1' }), (err) => {
    assert.match(err.message, /token hub port \("p"\) must be an integer 1-65535/);
    assert.ok(!err.message.includes(badSecret) && !err.message.includes(bad), err.message);
    return true;
  });

  await edge.stop();
  await hub.stop();
  assert.ok(logs.length > 0, 'the engines logged');
  for (const line of logs) {
    for (const x of [secret, token, badSecret, bad]) assert.ok(!line.includes(x), `a log line shows a secret or a token: ${line}`);
  }
});

test('startHub proxyProtocol: anything but v1 or v2 is refused, naming the param', { timeout: TIMEOUT }, async (t) => {
  const hub = new RemoteIngressHub();
  t.after(() => hub.stop());
  await assert.rejects(hub.start({ tunnelPort: 0, listenHost: '127.0.0.1', proxyProtocol: 'v3' }), /proxyProtocol must be "v1" or "v2"/);
  assert.equal(hub.running, false);
  await hub.start({ tunnelPort: 0, listenHost: '127.0.0.1', targetHost: '127.0.0.2', proxyProtocol: 'v2' });
  assert.equal((await hub.getStatus()).proxyProtocol, 'v2');
});

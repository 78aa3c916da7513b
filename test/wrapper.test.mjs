// The TypeScript layer on its own: RemoteIngressHub / RemoteIngressEdge drive
// a stand-in engine (test/fixtures/fake-engine, management dialect with canned
// answers) through the real RustBridge. No tunnel traffic here; see
// e2e.test.mjs for the real engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RemoteIngressHub, RemoteIngressEdge } from '../dist_ts/index.js';
import { binarySearch, localBinaryPaths, platformSuffix, packageDir, platformPackageName } from '../dist_ts/paths.js';
import { waitForEvent, recordEvents, waitProcessGone } from './fixtures/helpers';

const FAKE = fileURLToPath(new URL('./fixtures/fake-engine', import.meta.url));

// Each test sets the fake's mode and log file; the engine inherits process.env.
function fakeEnv(t, mode = 'ok') {
  const dir = mkdtempSync(path.join(tmpdir(), 'ri-fake-'));
  const logFile = path.join(dir, 'requests.jsonl');
  const saved = { mode: process.env.FAKE_ENGINE_MODE, log: process.env.FAKE_ENGINE_LOG };
  process.env.FAKE_ENGINE_MODE = mode;
  process.env.FAKE_ENGINE_LOG = logFile;
  t.after(() => {
    restoreEnv('FAKE_ENGINE_MODE', saved.mode);
    restoreEnv('FAKE_ENGINE_LOG', saved.log);
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    requests: () =>
      existsSync(logFile)
        ? readFileSync(logFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))
        : [],
  };
}

function restoreEnv(name, value) {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

function withoutEnv(t, name) {
  const saved = process.env[name];
  delete process.env[name];
  t.after(() => restoreEnv(name, saved));
}

test('exports two EventEmitter classes that are stopped at first', async () => {
  const hub = new RemoteIngressHub();
  const edge = new RemoteIngressEdge();
  assert.ok(hub instanceof EventEmitter);
  assert.ok(edge instanceof EventEmitter);
  assert.equal(hub.running, false);
  assert.equal(edge.running, false);
  assert.deepEqual(await hub.getStatus(), { running: false, tunnelPort: 0, connectedEdges: [] });
  assert.deepEqual(await edge.getStatus(), {
    running: false, connected: false, publicIp: null, activeStreams: 0, listenPorts: [], listenPortsUdp: [], firewallRefused: 0, hubs: [],
  });
  await hub.stop(); // stopping what never started is fine
  await edge.stop();
});

test('binary search order follows the contract', (t) => {
  withoutEnv(t, 'REMOTEINGRESS_BINARY');
  const expectedSuffix = `${{ linux: 'linux', darwin: 'darwin', win32: 'windows' }[process.platform]}_${
    { x64: 'amd64', arm64: 'arm64' }[process.arch]}`;
  assert.equal(platformSuffix(), expectedSuffix);
  assert.equal(packageDir, path.resolve(fileURLToPath(new URL('..', import.meta.url))));
  const locals = localBinaryPaths();
  assert.deepEqual(locals, [
    path.join(packageDir, 'dist_bin', `remoteingress-bin_${expectedSuffix}`),
    path.join(packageDir, 'dist_bin', 'remoteingress-bin'),
  ]);

  const search = binarySearch(undefined);
  assert.equal(search.source, 'search');
  // dist_bin/ first, then the platform package, then the PATH (two passes,
  // since smartrust's locator checks a platform package before local paths).
  assert.equal(search.passes.length, 2);
  const [first, second] = search.passes;
  assert.deepEqual(first.localPaths, locals);
  assert.equal(first.platformPackagePrefix, undefined);
  assert.equal(first.searchSystemPath, false);
  assert.equal(second.platformPackagePrefix, '@serve.zone/remoteingress');
  assert.equal(`${second.platformPackagePrefix}-${process.platform}-${process.arch}`, platformPackageName());
  assert.equal(second.searchSystemPath, true);
  assert.match(search.notFoundMessage, new RegExp(platformPackageName()));

  process.env.REMOTEINGRESS_BINARY = '/somewhere/remoteingress-bin';
  assert.equal(binarySearch(undefined).source, 'env');
  assert.equal(binarySearch('/explicit/bin').source, 'binaryPath');
  assert.equal(binarySearch('/explicit/bin').locatorOptions.binaryPath, '/explicit/bin');
});

test('start rejects clearly when binaryPath points at nothing', async (t) => {
  withoutEnv(t, 'REMOTEINGRESS_BINARY');
  const missing = path.join(tmpdir(), `no-such-remoteingress-bin-${process.pid}`);
  const hub = new RemoteIngressHub({ binaryPath: missing });
  t.after(() => hub.stop());
  await assert.rejects(hub.start({ tunnelPort: 0 }), (err) => {
    assert.match(err.message, /remoteingress-bin not found/);
    assert.ok(err.message.includes(missing), err.message);
    return true;
  });
  assert.equal(hub.running, false);

  const edge = new RemoteIngressEdge();
  t.after(() => edge.stop());
  await assert.rejects(
    edge.start({ hubHost: '127.0.0.1', edgeId: 'e', secret: 's', listenPorts: [1], binaryPath: missing }),
    /remoteingress-bin not found.*binaryPath/,
  );
  assert.equal(edge.running, false);
});

test('start rejects clearly when REMOTEINGRESS_BINARY points at nothing', async (t) => {
  withoutEnv(t, 'REMOTEINGRESS_BINARY');
  process.env.REMOTEINGRESS_BINARY = path.join(tmpdir(), `no-such-remoteingress-bin-${process.pid}`);
  const hub = new RemoteIngressHub();
  t.after(() => hub.stop());
  await assert.rejects(hub.start(), /REMOTEINGRESS_BINARY=.*does not exist/);
  assert.equal(hub.running, false);
});

test('the binaryPath of start() wins over the constructor option and the environment', async (t) => {
  const fake = fakeEnv(t);
  withoutEnv(t, 'REMOTEINGRESS_BINARY');
  process.env.REMOTEINGRESS_BINARY = '/nonexistent/remoteingress-bin';
  const hub = new RemoteIngressHub({ binaryPath: '/also/nonexistent' });
  t.after(() => hub.stop());
  await hub.start({ tunnelPort: 0, binaryPath: FAKE });
  assert.equal(hub.running, true);
  assert.deepEqual(fake.requests()[0].argv, ['--management']);
  await hub.stop();
  // the constructor option beats the environment
  await assert.rejects(hub.start({ tunnelPort: 0 }), /binaryPath "\/also\/nonexistent"/);
});

test('hub: full lifecycle against the stand-in engine', async (t) => {
  const fake = fakeEnv(t);
  const hub = new RemoteIngressHub({ binaryPath: FAKE });
  t.after(() => hub.stop());
  const events = recordEvents(hub, ['edgeConnected', 'streamOpened', 'streamClosed']);
  const logs = [];
  hub.on('log', (l) => logs.push(l));

  // remembered before start, sent right after startHub
  await hub.updateAllowedEdges([{ id: 'edge-a', secret: 'sa' }]);
  const closed = waitForEvent(hub, 'streamClosed', 5000);
  await hub.start({ tunnelPort: 43210, targetHost: '127.0.0.2', binaryPath: FAKE });
  assert.equal(hub.running, true);
  assert.equal(typeof hub.pid, 'number');
  await closed;

  const sent = fake.requests().filter((r) => r.method);
  assert.deepEqual(sent.map((r) => r.method), ['startHub', 'updateAllowedEdges']);
  assert.match(sent[0].id, /^req_\d+$/);
  assert.deepEqual(sent[0].params, { tunnelPort: 43210, targetHost: '127.0.0.2' }, 'binaryPath is not sent');
  assert.deepEqual(sent[1].params, { edges: [{ id: 'edge-a', secret: 'sa' }] });

  assert.deepEqual(events, [
    { event: 'edgeConnected', data: { edgeId: 'fake-edge' } },
    { event: 'streamOpened', data: { edgeId: 'fake-edge', streamId: 1 } },
    { event: 'streamClosed', data: { edgeId: 'fake-edge', streamId: 1 } },
  ]);
  assert.ok(logs.some((l) => l.level === 'info' && l.message.includes('request startHub')), JSON.stringify(logs));

  const status = await hub.getStatus();
  assert.equal(status.running, true);
  assert.equal(status.tunnelPort, 43210);
  assert.equal(status.connectedEdges[0].edgeId, 'fake-edge');

  await hub.updateAllowedEdges([{ id: 'edge-b', secret: 'sb' }, { id: 'edge-c', secret: 'sc' }]);
  assert.deepEqual(fake.requests().at(-1).params.edges.map((e) => e.id), ['edge-b', 'edge-c']);
  // The quick local check says what the binary would say.
  await assert.rejects(hub.updateAllowedEdges([{ id: 'x', secret: '' }]), {
    name: 'TypeError',
    message: 'updateAllowedEdges: edges[0].secret must not be empty (edge "x")',
  });
  await assert.rejects(hub.updateAllowedEdges([{ id: 'x', secret: 'a' }, { id: 'x', secret: 'b' }]), {
    message: 'updateAllowedEdges: edges[1].id "x" duplicates edges[0].id',
  });
  await assert.rejects(hub.updateAllowedEdges([{ id: '', secret: 'a' }]), { message: 'updateAllowedEdges: edges[0].id must not be empty' });

  await assert.rejects(hub.start({ binaryPath: FAKE }), /already running/);
  assert.equal(hub.running, true, 'a rejected second start leaves the first running');

  const pid = hub.pid;
  await hub.stop();
  assert.equal(hub.running, false);
  assert.equal(hub.pid, undefined);
  assert.equal(fake.requests().at(-1).method, 'stopHub');
  assert.ok(await waitProcessGone(pid), 'engine process is gone after stop()');
  await hub.stop(); // twice is fine
  assert.deepEqual(await hub.getStatus(), { running: false, tunnelPort: 0, connectedEdges: [] });

  // the allow-list survives a restart
  await hub.start({ binaryPath: FAKE });
  assert.deepEqual(fake.requests().filter((r) => r.method).at(-1).params.edges.map((e) => e.id), ['edge-b', 'edge-c']);
  await hub.stop();
});

test('edge: full lifecycle against the stand-in engine', async (t) => {
  const fake = fakeEnv(t);
  const edge = new RemoteIngressEdge({ binaryPath: FAKE });
  t.after(() => edge.stop());
  await assert.rejects(edge.start(), TypeError);
  const connected = waitForEvent(edge, 'tunnelConnected', 5000);
  const ip = waitForEvent(edge, 'publicIpDiscovered', 5000);
  const config = {
    hubHost: '127.0.0.1', hubPort: 1234, edgeId: 'edge-a', secret: 'sa',
    listenPorts: [18080], listenHost: '127.0.0.1', stunServer: '127.0.0.1:9', stunIntervalSecs: 60,
  };
  await edge.start(config);
  assert.equal(edge.running, true);
  assert.deepEqual(await connected, { hubAddr: '127.0.0.1:1234' });
  assert.deepEqual(await ip, { ip: '203.0.113.7' });
  assert.deepEqual(fake.requests().find((r) => r.method === 'startEdge').params, config);
  assert.deepEqual(await edge.getStatus(), {
    running: true, connected: true, publicIp: '203.0.113.7', activeStreams: 0, listenPorts: [18080],
  });
  await assert.rejects(edge.start(config), /RemoteIngressEdge is already running/);
  const pid = edge.pid;
  await edge.stop();
  assert.equal(edge.running, false);
  assert.equal(fake.requests().at(-1).method, 'stopEdge');
  assert.ok(await waitProcessGone(pid));
});

test('a failed startHub kills the process and rejects with the engine message', async (t) => {
  const fake = fakeEnv(t, 'notimpl');
  const hub = new RemoteIngressHub({ binaryPath: FAKE });
  t.after(() => hub.stop());
  await assert.rejects(hub.start({ tunnelPort: 0 }), (err) => {
    assert.equal(err.message, 'startHub: not implemented yet');
    return true;
  });
  assert.equal(hub.running, false);
  const { pid } = fake.requests()[0];
  assert.ok(await waitProcessGone(pid), 'the spawned engine was ended');

  const edge = new RemoteIngressEdge({ binaryPath: FAKE });
  t.after(() => edge.stop());
  await assert.rejects(
    edge.start({ hubHost: '127.0.0.1', edgeId: 'e', secret: 's', listenPorts: [1] }),
    { message: 'startEdge: not implemented yet' },
  );
  assert.equal(edge.running, false);
});

test('an engine that exits before ready makes start reject quickly, with its stderr', async (t) => {
  fakeEnv(t, 'exit-early');
  const hub = new RemoteIngressHub({ binaryPath: FAKE });
  t.after(() => hub.stop());
  const t0 = Date.now();
  await assert.rejects(hub.start(), (err) => {
    assert.match(err.message, /exited during startup with exit code 3/);
    assert.match(err.message, /told to exit early/);
    return true;
  });
  assert.ok(Date.now() - t0 < 5000, 'does not wait for the ready timeout');
  assert.equal(hub.running, false);
});

test('an engine that never reports ready makes start reject after readyTimeoutMs', async (t) => {
  const fake = fakeEnv(t, 'no-ready');
  const hub = new RemoteIngressHub({ binaryPath: FAKE, readyTimeoutMs: 500 });
  t.after(() => hub.stop());
  await assert.rejects(hub.start(), /did not report ready/);
  assert.equal(hub.running, false);
  assert.ok(await waitProcessGone(fake.requests()[0].pid));
});

test('an unexpected engine exit emits exit and clears running', async (t) => {
  fakeEnv(t);
  const hub = new RemoteIngressHub({ binaryPath: FAKE });
  t.after(() => hub.stop());
  await hub.start();
  const exited = waitForEvent(hub, 'exit', 5000);
  process.kill(hub.pid, 'SIGKILL');
  assert.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
  assert.equal(hub.running, false);
  assert.deepEqual(await hub.getStatus(), { running: false, tunnelPort: 0, connectedEdges: [] });
  await hub.stop(); // fine after a crash
  await hub.start(); // and it can start again
  assert.equal(hub.running, true);
  await hub.stop();
});

test('a logger option receives engine stderr lines', async (t) => {
  fakeEnv(t);
  const lines = [];
  const hub = new RemoteIngressHub({ binaryPath: FAKE, logger: { log: (level, msg) => lines.push([level, msg]) } });
  t.after(() => hub.stop());
  await hub.start();
  await hub.getStatus();
  await hub.stop();
  assert.ok(lines.some(([, msg]) => msg.includes('[remoteingress-bin hub]') && msg.includes('request getHubStatus')),
    JSON.stringify(lines));
});

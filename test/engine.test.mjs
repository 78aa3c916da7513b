// The real remoteingress-bin at the level of RustBridge: found where the
// package looks, spawned with --management, ready, ping, idle statuses,
// errors, and a clean exit. Needs the binary built (dist_bin/ or
// REMOTEINGRESS_BINARY) but not the tunnel engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { RustBridge, RustBinaryLocator } from '@push.rocks/smartrust';
import { binarySearch } from '../dist_ts/paths.js';
import { realBinary, waitProcessGone } from './fixtures/helpers';

function within(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms))),
  ]).finally(() => clearTimeout(timer));
}

async function startBridge(t) {
  const bridge = new RustBridge({ binaryName: 'remoteingress-bin', binaryPath: realBinary(), requestTimeoutMs: 5000 });
  let ready = null;
  bridge.once('management:ready', (data) => (ready = data));
  t.after(() => bridge.kill());
  assert.equal(await bridge.spawn(), true, 'RustBridge.spawn() saw the ready event');
  return { bridge, ready };
}

test('the package lookup finds the built binary', async () => {
  const bin = realBinary();
  const found = await new RustBinaryLocator(binarySearch(undefined).locatorOptions).findBinary();
  assert.equal(found, bin);
});

test('--management: ready first, then ping and idle statuses', async (t) => {
  const { bridge, ready } = await startBridge(t);
  assert.equal(typeof ready?.version, 'string', 'ready carries {version}');
  assert.deepEqual(await bridge.sendCommand('ping', {}), { pong: true });

  const hub = await bridge.sendCommand('getHubStatus', {});
  assert.equal(hub.running, false);
  assert.equal(hub.tunnelPort, 0);
  assert.deepEqual(hub.connectedEdges, []);

  const edge = await bridge.sendCommand('getEdgeStatus', {});
  assert.equal(edge.running, false);
  assert.equal(edge.connected, false);
  assert.equal(edge.publicIp, null);
  assert.equal(edge.activeStreams, 0);
  assert.deepEqual(edge.listenPorts, []);

  assert.equal((await bridge.sendCommand('stopHub', {})).stopped, true);
  assert.equal((await bridge.sendCommand('stopEdge', {})).stopped, true);
});

test('--management: errors come back as rejections with a useful message', async (t) => {
  const { bridge } = await startBridge(t);
  await assert.rejects(bridge.sendCommand('noSuchMethod', {}), /noSuchMethod/);
  await assert.rejects(
    bridge.sendCommand('updateAllowedEdges', { edges: [{ id: 'a', secret: 'x' }, { id: 'a', secret: 'y' }] }),
    (err) => !err.message.includes('"x"') && !err.message.includes('"y"') && err.message.length > 0,
  );
  await assert.rejects(bridge.sendCommand('updateAllowedEdges', { edges: [{ id: 'a', secret: '' }] }));
  await assert.rejects(bridge.sendCommand('startHub', { tunnelPort: 'eighty' }));
  await assert.rejects(bridge.sendCommand('startEdge', { hubHost: '127.0.0.1' }));
  // still alive and answering afterwards
  assert.deepEqual(await bridge.sendCommand('ping', {}), { pong: true });
  const update = await bridge.sendCommand('updateAllowedEdges', { edges: [{ id: 'a', secret: 'x' }] });
  assert.deepEqual([update.updated, update.count], [true, 1]);
});

test('closing stdin ends the process with exit code 0', async (t) => {
  const child = spawn(realBinary(), ['--management'], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  child.stderr.resume();
  const lines = createInterface({ input: child.stdout });
  const [first] = await within(once(lines, 'line'), 2000, 'no first line within 2 s');
  assert.equal(JSON.parse(first).event, 'ready');
  const exited = once(child, 'exit');
  child.stdin.end();
  const [code] = await within(exited, 5000, 'still running 5 s after stdin closed');
  assert.equal(code, 0);
});

test('RustBridge.kill() ends the process', async (t) => {
  const { bridge } = await startBridge(t);
  const pid = bridge.transport?.childProcess?.pid;
  assert.equal(typeof pid, 'number');
  bridge.kill();
  assert.equal(bridge.running, false);
  assert.ok(await waitProcessGone(pid, 6000), 'gone within 6 s of SIGTERM');
});

test('--version prints a version', async () => {
  const out = await new Promise((resolve, reject) =>
    execFile(realBinary(), ['--version'], { timeout: 5000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
  assert.ok(out.trim().length > 0);
});

// The seed README's usage flow on loopback, with the real engine: a hub and
// an edge (each its own remoteingress-bin through RustBridge), a target on
// 127.0.0.2:P that checks the PROXY v1 header, a client on 127.0.0.1:P.
// The binary is found the way a user's install finds it (REMOTEINGRESS_BINARY
// or dist_bin/). Only 127.0.0.0/8 is used; STUN points at a closed local port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { once } from 'node:events';
import { RustBridge } from '@push.rocks/smartrust';
import { RemoteIngressHub, RemoteIngressEdge } from '../dist_ts/index.js';
import {
  realBinary, waitForEvent, recordEvents, freeTcpPort, freePortPair, closedUdpAddress,
  startProxyTarget, httpThrough, waitProcessGone, sleep,
} from './fixtures/helpers';

const TIMEOUT = 30000;
const HUB_EVENTS = ['edgeConnected', 'edgeDisconnected', 'streamOpened', 'streamClosed'];
const EDGE_EVENTS = ['tunnelConnected', 'tunnelDisconnected', 'publicIpDiscovered'];


async function startHub(t, allowed = [{ id: 'edge-nyc-01', secret: 'supersecrettoken1' }]) {
  const hub = new RemoteIngressHub();
  t.after(() => hub.stop());
  const events = recordEvents(hub, HUB_EVENTS);
  await hub.start({ tunnelPort: 0, targetHost: '127.0.0.2' });
  await hub.updateAllowedEdges(allowed);
  const status = await hub.getStatus();
  return { hub, events, tunnelPort: status.tunnelPort, status };
}

async function startEdge(t, hubPort, overrides = {}) {
  const port = overrides.port ?? (await freePortPair());
  const edge = new RemoteIngressEdge();
  t.after(() => edge.stop());
  const events = recordEvents(edge, EDGE_EVENTS);
  const config = {
    hubHost: '127.0.0.1',
    hubPort,
    edgeId: 'edge-nyc-01',
    secret: 'supersecrettoken1',
    listenPorts: [port],
    listenHost: '127.0.0.1',
    stunServer: await closedUdpAddress(),
    stunIntervalSecs: 300,
    ...overrides.config,
  };
  return { edge, events, port, config, started: edge.start(config) };
}

test('seed README flow: an HTTP request through edge and hub carries the real client address', { timeout: TIMEOUT }, async (t) => {
  const { hub, events: hubEvents, tunnelPort, status: hubStatus0 } = await startHub(t);
  assert.equal(hub.running, true);
  assert.equal(hubStatus0.running, true);
  assert.ok(Number.isInteger(tunnelPort) && tunnelPort > 0 && tunnelPort < 65536, `tunnelPort ${tunnelPort}`);
  assert.deepEqual(hubStatus0.connectedEdges, []);

  const port = await freePortPair();
  const target = await startProxyTarget(port);
  t.after(() => target.close());

  const edgeConnected = waitForEvent(hub, 'edgeConnected', 10000);
  const { edge, events: edgeEvents, started } = await startEdge(t, tunnelPort, { port });
  const tunnelConnected = waitForEvent(edge, 'tunnelConnected', 10000);
  await started;
  assert.equal(edge.running, true);
  assert.equal((await edgeConnected).edgeId, 'edge-nyc-01');
  const tc = await tunnelConnected;
  assert.equal(typeof tc, 'object');

  const edgeStatus = await edge.getStatus();
  assert.equal(edgeStatus.running, true);
  assert.equal(edgeStatus.connected, true);
  assert.deepEqual(edgeStatus.listenPorts, [port]);
  assert.equal(edgeStatus.publicIp, null, 'STUN points at a closed port: no public IP');
  assert.equal(typeof edgeStatus.activeStreams, 'number');

  const hubStatus = await hub.getStatus();
  assert.equal(hubStatus.running, true);
  assert.equal(hubStatus.tunnelPort, tunnelPort);
  assert.equal(hubStatus.connectedEdges.length, 1);
  const [ce] = hubStatus.connectedEdges;
  assert.equal(ce.edgeId, 'edge-nyc-01');
  assert.equal(typeof ce.connectedAt, 'number');
  assert.ok(Math.abs(ce.connectedAt - Date.now() / 1000) < 120, `connectedAt ${ce.connectedAt} is unix seconds`);
  assert.equal(typeof ce.activeStreams, 'number');

  // three requests, each its own stream
  for (let i = 0; i < 3; i++) {
    const closed = waitForEvent(hub, 'streamClosed', 10000, (d) => d.edgeId === 'edge-nyc-01');
    const { localPort, response } = await httpThrough(port);
    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4));
    assert.equal(body.proxyLine, `PROXY TCP4 127.0.0.1 127.0.0.1 ${localPort} ${port}`);
    assert.equal(body.request, 'GET /hello HTTP/1.1');
    assert.deepEqual(target.seen[i], body);
    await closed;
  }

  const opened = hubEvents.filter((e) => e.event === 'streamOpened').map((e) => e.data);
  const closedEv = hubEvents.filter((e) => e.event === 'streamClosed').map((e) => e.data);
  assert.equal(opened.length, 3);
  for (const d of [...opened, ...closedEv]) {
    assert.equal(d.edgeId, 'edge-nyc-01');
    assert.ok(Number.isInteger(d.streamId), `streamId ${d.streamId} is a number`);
  }
  assert.equal(new Set(opened.map((d) => d.streamId)).size, 3, 'distinct stream ids');
  assert.deepEqual(new Set(closedEv.map((d) => d.streamId)), new Set(opened.map((d) => d.streamId)));

  // streams are accounted back to zero
  let after;
  for (let i = 0; i < 40; i++) {
    after = await hub.getStatus();
    if (after.connectedEdges[0]?.activeStreams === 0) break;
    await sleep(50);
  }
  assert.equal(after.connectedEdges[0].activeStreams, 0);

  assert.ok(!edgeEvents.some((e) => e.event === 'tunnelDisconnected'), 'tunnel stayed up');

  const hubPid = hub.pid;
  const edgePid = edge.pid;
  await edge.stop();
  await hub.stop();
  assert.equal(edge.running, false);
  assert.equal(hub.running, false);
  assert.ok(await waitProcessGone(edgePid), 'edge process gone');
  assert.ok(await waitProcessGone(hubPid), 'hub process gone');
});

test('an edge with a wrong secret never connects', { timeout: TIMEOUT }, async (t) => {
  const { hub, events: hubEvents, tunnelPort } = await startHub(t);
  const { edge, events: edgeEvents, started } = await startEdge(t, tunnelPort, {
    config: { secret: 'not-the-secret' },
  });
  await started; // binding the listen port works; the tunnel does not
  await sleep(3000);
  assert.deepEqual(hubEvents.filter((e) => e.event === 'edgeConnected'), []);
  assert.deepEqual(edgeEvents.filter((e) => e.event === 'tunnelConnected'), []);
  assert.equal((await edge.getStatus()).connected, false);
  assert.equal(edge.running, true, 'the edge keeps running and retrying');
  assert.deepEqual((await hub.getStatus()).connectedEdges, []);
});

test('removing an edge from the allow-list disconnects it', { timeout: TIMEOUT }, async (t) => {
  const { hub, tunnelPort } = await startHub(t);
  const connected = waitForEvent(hub, 'edgeConnected', 10000);
  const { edge, started } = await startEdge(t, tunnelPort);
  const tunnelUp = waitForEvent(edge, 'tunnelConnected', 10000);
  await started;
  await connected;
  await tunnelUp;

  const hubDown = waitForEvent(hub, 'edgeDisconnected', 10000);
  const edgeDown = waitForEvent(edge, 'tunnelDisconnected', 10000);
  await hub.updateAllowedEdges([{ id: 'edge-fra-02', secret: 'supersecrettoken2' }]);
  const hd = await hubDown;
  assert.equal(hd.edgeId, 'edge-nyc-01');
  assert.equal(typeof hd.reason, 'string');
  const ed = await edgeDown;
  assert.equal(typeof ed.reason, 'string');
  assert.deepEqual((await hub.getStatus()).connectedEdges, []);
  await sleep(1000);
  assert.equal((await edge.getStatus()).connected, false, 'it cannot come back with the old secret');
});

test('start twice rejects; stop ends the process; stop twice is fine', { timeout: TIMEOUT }, async (t) => {
  const { hub, tunnelPort } = await startHub(t);
  await assert.rejects(hub.start({ tunnelPort: 0 }), /already running/);
  assert.equal(hub.running, true);

  const { edge, started } = await startEdge(t, tunnelPort);
  await started;
  await assert.rejects(edge.start({ hubHost: '127.0.0.1', edgeId: 'x', secret: 'y', listenPorts: [1] }), /already running/);
  assert.equal(edge.running, true);

  for (const side of [edge, hub]) {
    const pid = side.pid;
    assert.equal(typeof pid, 'number');
    await side.stop();
    assert.equal(side.running, false);
    assert.ok(await waitProcessGone(pid), 'process gone after stop()');
    await side.stop();
  }
});

test('engine: startHub while a hub runs fails and changes nothing', { timeout: TIMEOUT }, async (t) => {
  const bridge = new RustBridge({ binaryName: 'remoteingress-bin', binaryPath: realBinary(), requestTimeoutMs: 5000 });
  t.after(() => bridge.kill());
  assert.equal(await bridge.spawn(), true);
  const first = await bridge.sendCommand('startHub', { tunnelPort: 0, targetHost: '127.0.0.2' });
  assert.equal(first.started, true);
  assert.ok(first.tunnelPort > 0);
  await assert.rejects(bridge.sendCommand('startHub', { tunnelPort: 0 }), /already|running/i);
  const status = await bridge.sendCommand('getHubStatus', {});
  assert.equal(status.running, true);
  assert.equal(status.tunnelPort, first.tunnelPort);
});

test('a port that cannot be bound fails start with a message naming it', { timeout: TIMEOUT }, async (t) => {
  const blocker = net.createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  t.after(() => new Promise((r) => blocker.close(r)));
  const busy = blocker.address().port;

  const hub = new RemoteIngressHub();
  t.after(() => hub.stop());
  await assert.rejects(hub.start({ tunnelPort: busy }), new RegExp(String(busy)));
  assert.equal(hub.running, false);

  const edge = new RemoteIngressEdge();
  t.after(() => edge.stop());
  await assert.rejects(
    edge.start({
      hubHost: '127.0.0.1', hubPort: await freeTcpPort(), edgeId: 'e', secret: 's',
      listenHost: '127.0.0.1', listenPorts: [busy], stunServer: await closedUdpAddress(),
    }),
    new RegExp(String(busy)),
  );
  assert.equal(edge.running, false);
});

test('an unreachable hub is not an error for the edge', { timeout: TIMEOUT }, async (t) => {
  const { edge, started, port } = await startEdge(t, await freeTcpPort());
  await started;
  assert.equal(edge.running, true);
  const status = await edge.getStatus();
  assert.equal(status.running, true);
  assert.equal(status.connected, false);
  assert.deepEqual(status.listenPorts, [port]);
});

test('the hub assigns an edge started without ports its ports, and changes them over the live tunnel', { timeout: TIMEOUT }, async (t) => {
  const first = await freePortPair();
  const second = await freePortPair();
  const targets = [await startProxyTarget(first), await startProxyTarget(second)];
  t.after(() => targets.forEach((tg) => tg.close()));
  const entry = (ports) => [{ id: 'edge-nyc-01', secret: 'supersecrettoken1', listenPorts: ports, firewall: { blockedIps: ['203.0.113.0/24'] } }];
  const { hub } = await startHub(t, entry([first]));

  const edge = new RemoteIngressEdge();
  t.after(() => edge.stop());
  const events = recordEvents(edge, ['tunnelConnected', 'tunnelDisconnected', 'portsAssigned', 'portError']);
  const assigned = waitForEvent(edge, 'portsAssigned', 10000);
  const connected = waitForEvent(edge, 'tunnelConnected', 10000);
  const hubStatus0 = await hub.getStatus();
  await edge.start({
    hubHost: '127.0.0.1', hubPort: hubStatus0.tunnelPort, edgeId: 'edge-nyc-01', secret: 'supersecrettoken1',
    listenHost: '127.0.0.1', stunServer: await closedUdpAddress(), firewallBackend: 'process',
  });
  assert.deepEqual(await assigned, { listenPorts: [first], listenPortsUdp: [] });
  await connected;
  let st = await edge.getStatus();
  assert.deepEqual(st.listenPorts, [first]);
  assert.deepEqual(st.listenPortsUdp, []);
  assert.equal(st.firewallRefused, 0);
  let { localPort, response } = await httpThrough(first);
  assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)).proxyLine, `PROXY TCP4 127.0.0.1 127.0.0.1 ${localPort} ${first}`);

  const changed = waitForEvent(edge, 'portsAssigned', 10000, (d) => d.listenPorts[0] === second);
  await hub.updateAllowedEdges(entry([second]));
  assert.deepEqual(await changed, { listenPorts: [second], listenPortsUdp: [] });
  st = await edge.getStatus();
  assert.deepEqual(st.listenPorts, [second]);
  ({ localPort, response } = await httpThrough(second));
  assert.equal(JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4)).proxyLine, `PROXY TCP4 127.0.0.1 127.0.0.1 ${localPort} ${second}`);
  await assert.rejects(httpThrough(first, '127.0.0.1', 2000), 'the removed port no longer accepts');
  let hs;
  for (let i = 0; i < 40; i++) {
    hs = await hub.getStatus();
    if (hs.connectedEdges[0]?.listenPorts?.[0] === second) break;
    await sleep(50);
  }
  assert.deepEqual(hs.connectedEdges[0].listenPorts, [second]);
  assert.deepEqual(hs.connectedEdges[0].listenPortsUdp, []);
  assert.ok(!events.some((e) => e.event === 'tunnelDisconnected'), 'the tunnel stayed up');
  assert.ok(!events.some((e) => e.event === 'portError'), 'no port error');
});

test('an edge on transport "quic": the tunnel runs over QUIC and status and events say so', { timeout: TIMEOUT }, async (t) => {
  const { hub, tunnelPort, status } = await startHub(t);
  assert.equal(status.quicPort, tunnelPort, 'the hub listens for QUIC on UDP tunnelPort');
  const port = await freePortPair();
  const target = await startProxyTarget(port);
  t.after(() => target.close());
  const { edge, started } = await startEdge(t, tunnelPort, { port, config: { transport: 'quic' } });
  const tunnelConnected = waitForEvent(edge, 'tunnelConnected', 10000);
  await started;
  assert.equal((await tunnelConnected).transport, 'quic');
  const edgeStatus = await edge.getStatus();
  assert.equal(edgeStatus.transport, 'quic');
  assert.equal(edgeStatus.hubs[0].transport, 'quic');
  const hubStatus = await hub.getStatus();
  assert.equal(hubStatus.connectedEdges[0].transport, 'quic');
  const { localPort, response } = await httpThrough(port);
  assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
  const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4));
  assert.equal(body.proxyLine, `PROXY TCP4 127.0.0.1 127.0.0.1 ${localPort} ${port}`);
});

test('a hub with quic: false has no QUIC port; an edge on "auto" comes up on TLS', { timeout: TIMEOUT }, async (t) => {
  const hub = new RemoteIngressHub();
  t.after(() => hub.stop());
  await hub.start({ tunnelPort: 0, targetHost: '127.0.0.2', quic: false });
  await hub.updateAllowedEdges([{ id: 'edge-nyc-01', secret: 'supersecrettoken1' }]);
  const status = await hub.getStatus();
  assert.equal(status.quicPort, 0);
  const { edge, started } = await startEdge(t, status.tunnelPort, { config: { transport: 'auto', quicFallbackMs: 300 } });
  const tunnelConnected = waitForEvent(edge, 'tunnelConnected', 5000);
  await started;
  assert.equal((await tunnelConnected).transport, 'tls');
  assert.equal((await edge.getStatus()).transport, 'tls');
});

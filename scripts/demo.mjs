#!/usr/bin/env node
// `make demo`: a hub and an edge on this machine, each its own
// remoteingress-bin process driven through the TypeScript package (dist_ts),
// a small HTTP server standing in for SmartProxy, and three real requests
// through the tunnel. Loopback only; STUN points at a closed local port.
import * as http from 'node:http';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { once } from 'node:events';
import { RemoteIngressHub, RemoteIngressEdge } from '../dist_ts/index.js';

const DEADLINE_MS = 20000;
const EDGE_ID = 'edge-demo-01';
const SECRET = 'demo-secret-not-for-production';

const hub = new RemoteIngressHub();
const edge = new RemoteIngressEdge();
let target = null;

function say(line = '') {
  process.stdout.write(line + '\n');
}

let failed = false;
function fail(message) {
  if (failed) return;
  failed = true;
  clearTimeout(watchdog);
  process.stderr.write(`\ndemo FAILED: ${message}\n`);
  shutdown().finally(() => process.exit(1));
}

const watchdog = setTimeout(() => fail(`timed out after ${DEADLINE_MS / 1000} s`), DEADLINE_MS);

async function shutdown() {
  const quietly = (p) => Promise.resolve(p).catch(() => {});
  await quietly(edge.stop());
  await quietly(hub.stop());
  if (target) await quietly(new Promise((r) => target.close(r)));
}

function waitFor(emitter, event, label) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${label} '${event}' event within 10 s`)), 10000);
    emitter.once(event, (data) => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

async function freePort() {
  // free on 127.0.0.1 (edge listener) and on 127.0.0.2 (target)
  for (let i = 0; i < 20; i++) {
    const a = net.createServer().listen(0, '127.0.0.1');
    await once(a, 'listening');
    const { port } = a.address();
    await new Promise((r) => a.close(r));
    const b = net.createServer();
    try {
      b.listen(port, '127.0.0.2');
      await once(b, 'listening');
      await new Promise((r) => b.close(r));
      return port;
    } catch {
      b.close();
    }
  }
  throw new Error('could not find a free port');
}

async function closedUdpPort() {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * The stand-in for SmartProxy: reads the PROXY v1 line the hub writes first,
 * then hands the connection to an ordinary HTTP server which answers with
 * what it saw.
 */
async function startTarget(port) {
  const httpServer = http.createServer((req, res) => {
    const info = req.socket.proxyInfo;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({
      proxyHeader: info.line,
      clientFromHeader: `${info.srcIp}:${info.srcPort}`,
      tcpPeer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      path: req.url,
    }));
  });
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    socket.on('error', () => {});
    const onData = (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n');
      if (end < 0) {
        if (buf.length > 107) socket.destroy(); // PROXY v1 lines are at most 107 bytes
        return;
      }
      socket.off('data', onData);
      socket.pause();
      const line = buf.subarray(0, end).toString('latin1');
      const [sig, proto, srcIp, dstIp, srcPort, dstPort] = line.split(' ');
      if (sig !== 'PROXY') {
        socket.destroy();
        return;
      }
      socket.proxyInfo = { line, proto, srcIp, dstIp, srcPort, dstPort };
      socket.unshift(buf.subarray(end + 2));
      httpServer.emit('connection', socket);
      socket.resume();
    };
    socket.on('data', onData);
  });
  server.listen(port, '127.0.0.2');
  await once(server, 'listening');
  return server;
}

function get(port, path) {
  return new Promise((resolve, reject) => {
    let localPort = 0;
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body, localPort }));
    });
    req.on('socket', (s) => s.on('connect', () => (localPort = s.localPort)));
    req.on('timeout', () => req.destroy(new Error(`request ${path} timed out`)));
    req.on('error', reject);
  });
}

async function main() {
  say('remoteingress demo: a hub and an edge (two remoteingress-bin processes) on this machine.');
  say('Clients connect to the edge on 127.0.0.1:P; the tunnel carries them to the hub, which');
  say('connects to the target at 127.0.0.2:P and tells it the real client address with a PROXY v1 header.');
  say('');

  for (const name of ['edgeConnected', 'edgeDisconnected', 'streamOpened', 'streamClosed']) {
    hub.on(name, (data) => say(`[hub ] ${name} ${JSON.stringify(data)}`));
  }
  for (const name of ['tunnelConnected', 'tunnelDisconnected', 'publicIpDiscovered']) {
    edge.on(name, (data) => say(`[edge] ${name} ${JSON.stringify(data)}`));
  }
  hub.on('exit', (d) => fail(`the hub engine exited unexpectedly ${JSON.stringify(d)}`));
  edge.on('exit', (d) => fail(`the edge engine exited unexpectedly ${JSON.stringify(d)}`));

  await hub.start({ tunnelPort: 0, targetHost: '127.0.0.2' });
  await hub.updateAllowedEdges([{ id: EDGE_ID, secret: SECRET }]);
  const { tunnelPort } = await hub.getStatus();
  say(`[hub ] started: tunnel listener on port ${tunnelPort}, forwarding to 127.0.0.2, edge "${EDGE_ID}" allowed`);

  const port = await freePort();
  target = await startTarget(port);
  say(`[tgt ] HTTP target listening on 127.0.0.2:${port}`);

  const edgeUp = waitFor(edge, 'tunnelConnected', 'edge');
  const hubSawEdge = waitFor(hub, 'edgeConnected', 'hub');
  const edgeConfig = {
    hubHost: '127.0.0.1',
    hubPort: tunnelPort,
    edgeId: EDGE_ID,
    secret: SECRET,
    listenHost: '127.0.0.1',
    listenPorts: [port],
    stunServer: `127.0.0.1:${await closedUdpPort()}`,
  };
  await edge.start(edgeConfig);
  say(`[edge] started: listening on 127.0.0.1:${port}, connecting to the hub at 127.0.0.1:${tunnelPort}`);
  await Promise.all([edgeUp, hubSawEdge]);
  say('');

  for (let i = 1; i <= 3; i++) {
    // wait (briefly) for the hub to report this stream closed, so the output reads in order
    const streamDone = waitFor(hub, 'streamClosed', 'hub').catch(() => {});
    const { status, body, localPort } = await get(port, `/request-${i}`);
    if (status !== 200) throw new Error(`request ${i} answered ${status}`);
    const seen = JSON.parse(body);
    const ok = seen.clientFromHeader === `127.0.0.1:${localPort}`;
    say(`[clnt] GET http://127.0.0.1:${port}/request-${i} -> ${status}`);
    say(`       target read:  ${seen.proxyHeader}`);
    say(`       real client (from the PROXY header): ${seen.clientFromHeader}` +
      `  ${ok ? '= our socket' : `!= our socket 127.0.0.1:${localPort}`}`);
    say(`       TCP peer the target saw:             ${seen.tcpPeer}  (the hub)`);
    if (!ok) throw new Error('the PROXY header did not carry the client address');
    await streamDone;
  }

  // The same edge again, over the second transport: QUIC on the hub's UDP tunnelPort.
  say('');
  say(`restarting the edge with transport "quic" (QUIC on UDP port ${tunnelPort} of the hub):`);
  await edge.stop();
  const quicUp = waitFor(edge, 'tunnelConnected', 'edge');
  await edge.start({ ...edgeConfig, transport: 'quic' });
  const { transport } = await quicUp;
  if (transport !== 'quic') throw new Error(`the edge came up on ${transport}, not quic`);
  {
    const streamDone = waitFor(hub, 'streamClosed', 'hub').catch(() => {});
    const { status, body, localPort } = await get(port, '/over-quic');
    const seen = JSON.parse(body);
    say(`[clnt] GET http://127.0.0.1:${port}/over-quic -> ${status} (tunnel transport: ${transport})`);
    say(`       target read:  ${seen.proxyHeader}`);
    if (status !== 200 || seen.clientFromHeader !== `127.0.0.1:${localPort}`) throw new Error('the request over QUIC failed');
    await streamDone;
  }

  say('');
  say(`[hub ] status ${JSON.stringify(await hub.getStatus())}`);
  say(`[edge] status ${JSON.stringify(await edge.getStatus())}`);

  hub.removeAllListeners('exit');
  edge.removeAllListeners('exit');
  say('');
  say('stopping the edge, then the hub:');
  await shutdown();
  clearTimeout(watchdog);
  say('');
  say('stopped hub, edge and target. demo OK');
}

main().catch((err) => fail(err && err.message ? err.message : String(err)));

// The packed npm tarballs as a user gets them (make test-pack): the main
// package and this platform's package installed into an empty directory
// (smartrust comes from the registry), then the seed README's flow run from
// there with no REMOTEINGRESS_BINARY, no remoteingress-bin on the PATH and no
// dist_bin/ in the installed package: the binary must come from the platform
// package. Runs only with REMOTEINGRESS_PACK_DIR (make test-pack sets it to
// dist_pack/ after make pack). Only 127.0.0.0/8 is used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const packDir = process.env.REMOTEINGRESS_PACK_DIR;
const platform = `${process.platform}-${process.arch}`;

function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 16 << 20, ...opts }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

// The environment of a user who has neither the variable nor the binary on PATH.
function cleanEnv() {
  const env = { ...process.env };
  delete env.REMOTEINGRESS_BINARY;
  delete env.REMOTEINGRESS_PACK_DIR;
  delete env.NODE_OPTIONS;
  env.PATH = (env.PATH ?? '')
    .split(path.delimiter)
    .filter((d) => d && !fs.existsSync(path.join(d, 'remoteingress-bin')))
    .join(path.delimiter);
  return env;
}

// Runs from the install directory: hub + edge through the installed package,
// a target on 127.0.0.2:P that reads the PROXY line and echoes, a client on
// 127.0.0.1:P; prints one JSON line with what it saw.
const flow = String.raw`
import { RemoteIngressHub, RemoteIngressEdge } from '@serve.zone/remoteingress';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import { once } from 'node:events';

const listen = (srv, port, host) => new Promise((res, rej) => { srv.once('error', rej); srv.listen(port, host, () => res(srv.address().port)); });
async function freePair() {
  for (let i = 0; i < 50; i++) {
    const a = net.createServer();
    const port = await listen(a, 0, '127.0.0.1');
    const b = net.createServer();
    try { await listen(b, port, '127.0.0.2'); b.close(); a.close(); return port; } catch { a.close(); }
  }
  throw new Error('no port free on 127.0.0.1 and 127.0.0.2');
}
async function closedUdp() {
  const s = dgram.createSocket('udp4');
  await new Promise((r) => s.bind(0, '127.0.0.1', r));
  const { port } = s.address();
  s.close();
  return '127.0.0.1:' + port;
}

const port = await freePair();
let proxyLine = null;
const target = net.createServer((sock) => {
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => {
    if (proxyLine !== null) return sock.write(d);
    buf = Buffer.concat([buf, d]);
    const i = buf.indexOf('\r\n');
    if (i < 0) return;
    proxyLine = buf.subarray(0, i).toString();
    if (buf.length > i + 2) sock.write(buf.subarray(i + 2));
  });
  sock.on('end', () => sock.end());
});
await listen(target, port, '127.0.0.2');

const hub = new RemoteIngressHub();
const edge = new RemoteIngressEdge();
try {
  await hub.start({ tunnelPort: 0, targetHost: '127.0.0.2' });
  await hub.updateAllowedEdges([{ id: 'edge-nyc-01', secret: 'supersecrettoken1' }]);
  const { tunnelPort } = await hub.getStatus();
  const up = once(edge, 'tunnelConnected');
  await edge.start({
    hubHost: '127.0.0.1', hubPort: tunnelPort, edgeId: 'edge-nyc-01', secret: 'supersecrettoken1',
    listenPorts: [port], listenHost: '127.0.0.1', stunServer: await closedUdp(),
  });
  await up;
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  const clientPort = client.localPort;
  const chunks = [];
  client.on('data', (d) => chunks.push(d));
  client.end('hello through the tunnel');
  await once(client, 'end');
  const exe = (pid) => fs.realpathSync('/proc/' + pid + '/exe');
  console.log(JSON.stringify({
    echoed: Buffer.concat(chunks).toString(),
    proxyLine,
    clientPort,
    port,
    hubBinary: process.platform === 'linux' ? exe(hub.pid) : null,
    edgeBinary: process.platform === 'linux' ? exe(edge.pid) : null,
    edgeStatus: await edge.getStatus(),
  }));
} finally {
  await edge.stop();
  await hub.stop();
  target.close();
}
`;

test('the packed tarballs install and run with the binary of the platform package', {
  skip: packDir ? false : 'REMOTEINGRESS_PACK_DIR is not set (make test-pack packs and runs this)',
  timeout: 240000,
}, async (t) => {
  const manifest = JSON.parse(fs.readFileSync(path.join(packDir, 'manifest.json'), 'utf8'));
  const platformTarball = manifest.platforms[platform];
  assert.ok(platformTarball, `make pack built no platform package for ${platform} (have ${Object.keys(manifest.platforms)})`);

  const dir = fs.realpathSync(fs.mkdtempSync(path.join(tmpdir(), 'remoteingress-pack-')));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'pack-test', private: true, type: 'module' }));
  const env = cleanEnv();
  await run('npm', ['install', '--no-audit', '--no-fund', '--no-package-lock',
    path.join(packDir, manifest.main), path.join(packDir, platformTarball)], { cwd: dir, env, timeout: 180000 });

  const installed = path.join(dir, 'node_modules', '@serve.zone', 'remoteingress');
  const platformPkg = path.join(dir, 'node_modules', '@serve.zone', `remoteingress-${platform}`);
  assert.ok(fs.existsSync(path.join(installed, 'dist_ts', 'index.js')), 'the main package is installed');
  assert.equal(fs.existsSync(path.join(installed, 'dist_bin')), false, 'the main package ships no dist_bin/');
  const mainManifest = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'));
  assert.equal(mainManifest.optionalDependencies[`@serve.zone/remoteingress-${platform}`], manifest.version);
  const exeName = process.platform === 'win32' ? 'remoteingress-bin.exe' : 'remoteingress-bin';
  const bin = path.join(platformPkg, exeName);
  assert.ok(fs.existsSync(bin), `${bin} is installed`);
  const { stdout: version } = await run(bin, ['--version'], { env });
  assert.equal(version.trim(), manifest.binaryVersion);

  fs.writeFileSync(path.join(dir, 'flow.mjs'), flow);
  const child = spawn(process.execPath, ['flow.mjs'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.exitCode === null && child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.on('exit', (c, s) => { clearTimeout(timer); resolve(c ?? s); });
  });
  assert.equal(code, 0, `flow.mjs failed (${code}):\n${err}${out}`);
  const r = JSON.parse(out.trim().split('\n').pop());
  assert.equal(r.echoed, 'hello through the tunnel');
  assert.equal(r.proxyLine, `PROXY TCP4 127.0.0.1 127.0.0.1 ${r.clientPort} ${r.port}`);
  assert.equal(r.edgeStatus.connected, true);
  if (process.platform === 'linux') {
    assert.equal(r.hubBinary, fs.realpathSync(bin), 'the hub ran the platform package binary');
    assert.equal(r.edgeBinary, fs.realpathSync(bin), 'the edge ran the platform package binary');
  }
});

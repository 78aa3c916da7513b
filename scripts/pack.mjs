#!/usr/bin/env node
// make pack: the npm tarballs of @serve.zone/remoteingress and of each
// platform package (npm/platforms.json) into dist_pack/.
//
// - Each platform package is staged in dist_pack/stage/<dir>/ from its
//   npm/<dir>/package.json (version set to the main package's), npm/README.md
//   and a static remoteingress-bin built for it (CGO_ENABLED=0, -trimpath,
//   version VERSION); the binary is never committed.
// - The main package must list every platform package in
//   optionalDependencies at exactly its own version, and its tarball must
//   hold no dist_bin/ (the platform packages carry the binary): both are
//   checked, and a mismatch fails the pack.
// - dist_pack/manifest.json names the tarballs (test/pack.test.mjs reads it).
//
// Env: VERSION (the binary's --version; default: the package version),
// GO (default go), PACK_PLATFORMS (comma-separated dirs; default all).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist_pack');
const stage = path.join(out, 'stage');
const readJSON = (p) => JSON.parse(fs.readFileSync(p, 'utf8'));

const main = readJSON(path.join(root, 'package.json'));
const { platforms } = readJSON(path.join(root, 'npm', 'platforms.json'));
const version = main.version;
const binVersion = process.env.VERSION || version;
const go = process.env.GO || 'go';
const only = process.env.PACK_PLATFORMS ? process.env.PACK_PLATFORMS.split(',') : null;

function fail(msg) {
  console.error(`pack: ${msg}`);
  process.exit(1);
}

// The main package's optionalDependencies: exactly the platform packages, at its version.
const optional = main.optionalDependencies ?? {};
const want = Object.fromEntries(platforms.map((p) => [`@serve.zone/remoteingress-${p.dir}`, version]));
for (const [name, v] of Object.entries(want)) {
  if (optional[name] !== v) fail(`package.json optionalDependencies["${name}"] is ${JSON.stringify(optional[name])}, want "${v}" (the package version, exactly)`);
}
for (const name of Object.keys(optional)) {
  if (!(name in want)) fail(`package.json optionalDependencies has ${name}, which npm/platforms.json does not list`);
}
if ((main.files ?? []).some((f) => f.replace(/^\.\//, '').startsWith('dist_bin'))) {
  fail('package.json "files" includes dist_bin: the platform packages carry the binary');
}
if (!fs.existsSync(path.join(root, 'dist_ts', 'index.js'))) fail('dist_ts/ is not built (make ts)');

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(stage, { recursive: true });

// npm pack DIR into dist_pack; returns the tarball's file name and its file list.
function npmPack(dir) {
  const json = execFileSync('npm', ['pack', '--json', '--pack-destination', out, dir], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [info] = JSON.parse(json);
  return { file: info.filename, files: info.files.map((f) => f.path) };
}

const manifest = { version, binaryVersion: binVersion, main: null, platforms: {} };
for (const p of platforms) {
  if (only && !only.includes(p.dir)) continue;
  const tmpl = readJSON(path.join(root, 'npm', p.dir, 'package.json'));
  const exe = p.goos === 'windows' ? 'remoteingress-bin.exe' : 'remoteingress-bin';
  if (tmpl.name !== `@serve.zone/remoteingress-${p.dir}`) fail(`npm/${p.dir}/package.json: name ${tmpl.name}`);
  if (JSON.stringify(tmpl.os) !== JSON.stringify([p.os]) || JSON.stringify(tmpl.cpu) !== JSON.stringify([p.cpu])) {
    fail(`npm/${p.dir}/package.json: os/cpu ${tmpl.os}/${tmpl.cpu}, want ${p.os}/${p.cpu}`);
  }
  const dir = path.join(stage, p.dir);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ ...tmpl, version }, null, 2) + '\n');
  fs.copyFileSync(path.join(root, 'npm', 'README.md'), path.join(dir, 'README.md'));
  execFileSync(
    go,
    ['build', '-trimpath', '-ldflags', `-s -w -X main.version=${binVersion}`, '-o', path.join(dir, exe), './cmd/remoteingress-bin'],
    { cwd: root, stdio: 'inherit', env: { ...process.env, CGO_ENABLED: '0', GOOS: p.goos, GOARCH: p.goarch } },
  );
  fs.chmodSync(path.join(dir, exe), 0o755);
  const packed = npmPack(dir);
  if (!packed.files.includes(exe)) fail(`${packed.file} lacks ${exe}`);
  manifest.platforms[p.dir] = packed.file;
  console.log(`pack: ${packed.file} (${p.goos}/${p.goarch})`);
}

const packed = npmPack(root);
const stray = packed.files.filter((f) => f.startsWith('dist_bin/') || f.startsWith('dist_pack/') || f.startsWith('npm/'));
if (stray.length) fail(`${packed.file} holds ${stray.join(', ')}: the main package ships dist_ts only`);
if (!packed.files.includes('dist_ts/index.js')) fail(`${packed.file} lacks dist_ts/index.js`);
manifest.main = packed.file;
console.log(`pack: ${packed.file}`);

fs.rmSync(stage, { recursive: true, force: true });
fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

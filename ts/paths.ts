/**
 * Where the remoteingress-bin engine is looked for (README, "Using it from TypeScript"):
 *
 *  1. an explicit `binaryPath` option (config of start(), else the constructor option);
 *  2. the REMOTEINGRESS_BINARY environment variable;
 *  3. dist_bin/remoteingress-bin_<os>_<arch>, then dist_bin/remoteingress-bin,
 *     inside this package (a build from a git checkout: `make build`);
 *  4. the platform package @serve.zone/remoteingress-<platform>-<arch> (an
 *     optional dependency that npm installs for this platform only);
 *  5. the PATH.
 *
 * The platform package comes after dist_bin/ so that a developer's own build
 * in a checkout always wins over an installed release binary, and before the
 * PATH so that an installed package uses the binary of its own version. The
 * published package ships no dist_bin/, so there the platform package is what
 * is found. smartrust's RustBinaryLocator checks a platform package before
 * its local paths, so the search runs as two locator passes: the package's
 * dist_bin/ first, then platformPackagePrefix (resolved from smartrust's
 * place in node_modules), this package's own resolution of the same package
 * (for layouts like pnpm's, where smartrust cannot see this package's
 * dependencies) and the PATH.
 *
 * An explicit binaryPath, or a set REMOTEINGRESS_BINARY, is authoritative: when
 * it does not point at an executable file, start() fails with an error naming
 * it instead of silently running some other binary.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import type { IRustBridgeOptions } from '@push.rocks/smartrust';

/** The package root: this file is compiled to <root>/dist_ts/paths.js. */
export const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const binaryBaseName = 'remoteingress-bin';
export const binaryEnvVarName = 'REMOTEINGRESS_BINARY';

const exeSuffix = process.platform === 'win32' ? '.exe' : '';

/** The binary's file name on this platform (with .exe on Windows). */
export const binaryFileName = `${binaryBaseName}${exeSuffix}`;

/** Go-style os_arch of this machine, e.g. linux_amd64, darwin_arm64. */
export function platformSuffix(): string {
  const osMap: Record<string, string> = { linux: 'linux', darwin: 'darwin', win32: 'windows' };
  const archMap: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ia32: '386', arm: 'arm' };
  const os = osMap[process.platform] ?? process.platform;
  const arch = archMap[process.arch] ?? process.arch;
  return `${os}_${arch}`;
}

/** The package-local candidates, in search order. */
export function localBinaryPaths(): string[] {
  return [
    path.join(packageDir, 'dist_bin', `${binaryBaseName}_${platformSuffix()}${exeSuffix}`),
    path.join(packageDir, 'dist_bin', binaryFileName),
  ];
}

/** smartrust's platformPackagePrefix: it appends -<process.platform>-<process.arch>. */
export const platformPackagePrefix = '@serve.zone/remoteingress';

/** The platform package for this machine, e.g. @serve.zone/remoteingress-linux-x64. */
export function platformPackageName(): string {
  return `${platformPackagePrefix}-${process.platform}-${process.arch}`;
}

/**
 * The binary inside this platform's package, resolved from this package
 * (null when it is not installed).
 */
export function platformPackageBinary(): string | null {
  try {
    const require = createRequire(path.join(packageDir, 'package.json'));
    const manifest = require.resolve(`${platformPackageName()}/package.json`);
    return path.join(path.dirname(manifest), binaryFileName);
  } catch {
    return null;
  }
}

export type TBinarySource = 'binaryPath' | 'env' | 'search';

export type TLocatorOptions = Pick<
  IRustBridgeOptions,
  'binaryName' | 'binaryPath' | 'envVarName' | 'localPaths' | 'searchSystemPath' | 'platformPackagePrefix'
>;

export interface IBinarySearch {
  /** Which rule decides. */
  source: TBinarySource;
  /** The locator options to hand to RustBridge / RustBinaryLocator (the first pass). */
  locatorOptions: TLocatorOptions;
  /** RustBinaryLocator passes, tried in order until one finds the binary. */
  passes: TLocatorOptions[];
  /** A sentence for the "not found" error. */
  notFoundMessage: string;
}

/**
 * Build the RustBridge locator options for one start().
 * `explicitPath` is the config's binaryPath, else the constructor's.
 */
export function binarySearch(explicitPath?: string): IBinarySearch {
  const buildHint =
    `build it with \`make build\` (or \`go build -o dist_bin/${binaryBaseName} ./cmd/${binaryBaseName}\`)`;
  if (explicitPath) {
    const resolved = path.resolve(explicitPath);
    const only: TLocatorOptions = {
      binaryName: binaryFileName,
      binaryPath: resolved,
      localPaths: [],
      searchSystemPath: false,
    };
    return {
      source: 'binaryPath',
      locatorOptions: only,
      passes: [only],
      notFoundMessage:
        `${binaryBaseName} not found: binaryPath "${resolved}" does not exist or is not an executable file`,
    };
  }
  const envValue = process.env[binaryEnvVarName];
  if (envValue) {
    const only: TLocatorOptions = {
      binaryName: binaryFileName,
      envVarName: binaryEnvVarName,
      localPaths: [],
      searchSystemPath: false,
    };
    return {
      source: 'env',
      locatorOptions: only,
      passes: [only],
      notFoundMessage:
        `${binaryBaseName} not found: ${binaryEnvVarName}="${envValue}" does not exist or is not an executable file`,
    };
  }
  const locals = localBinaryPaths();
  const ownResolution = platformPackageBinary();
  const first: TLocatorOptions = {
    binaryName: binaryFileName,
    localPaths: locals,
    searchSystemPath: false,
  };
  const second: TLocatorOptions = {
    binaryName: binaryFileName,
    platformPackagePrefix,
    localPaths: ownResolution ? [ownResolution] : [],
    searchSystemPath: true,
  };
  return {
    source: 'search',
    locatorOptions: first,
    passes: [first, second],
    notFoundMessage:
      `${binaryBaseName} not found: looked for the binaryPath option, ${binaryEnvVarName} (unset), ` +
      `${locals.join(', ')}, the package ${platformPackageName()} and "${binaryFileName}" on the PATH; ` +
      `${buildHint}, reinstall @serve.zone/remoteingress with optional dependencies ` +
      `(npm's --omit=optional or --no-optional leaves the platform package out), or pass binaryPath / set ${binaryEnvVarName}`,
  };
}

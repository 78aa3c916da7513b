/**
 * Where the remoteingress-bin engine is looked for (README, "Using it from TypeScript"):
 *
 *  1. an explicit `binaryPath` option (config of start(), else the constructor option);
 *  2. the REMOTEINGRESS_BINARY environment variable;
 *  3. dist_bin/remoteingress-bin_<os>_<arch>, then dist_bin/remoteingress-bin,
 *     inside this package;
 *  4. the PATH.
 *
 * An explicit binaryPath, or a set REMOTEINGRESS_BINARY, is authoritative: when
 * it does not point at an executable file, start() fails with an error naming
 * it instead of silently running some other binary.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
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

export type TBinarySource = 'binaryPath' | 'env' | 'search';

export interface IBinarySearch {
  /** Which rule decides. */
  source: TBinarySource;
  /** The locator options to hand to RustBridge / RustBinaryLocator. */
  locatorOptions: Pick<IRustBridgeOptions, 'binaryName' | 'binaryPath' | 'envVarName' | 'localPaths' | 'searchSystemPath'>;
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
    return {
      source: 'binaryPath',
      locatorOptions: {
        binaryName: binaryFileName,
        binaryPath: resolved,
        localPaths: [],
        searchSystemPath: false,
      },
      notFoundMessage:
        `${binaryBaseName} not found: binaryPath "${resolved}" does not exist or is not an executable file`,
    };
  }
  const envValue = process.env[binaryEnvVarName];
  if (envValue) {
    return {
      source: 'env',
      locatorOptions: {
        binaryName: binaryFileName,
        envVarName: binaryEnvVarName,
        localPaths: [],
        searchSystemPath: false,
      },
      notFoundMessage:
        `${binaryBaseName} not found: ${binaryEnvVarName}="${envValue}" does not exist or is not an executable file`,
    };
  }
  const locals = localBinaryPaths();
  return {
    source: 'search',
    locatorOptions: {
      binaryName: binaryFileName,
      envVarName: binaryEnvVarName,
      localPaths: locals,
      searchSystemPath: true,
    },
    notFoundMessage:
      `${binaryBaseName} not found: looked for the binaryPath option, ${binaryEnvVarName} (unset), ` +
      `${locals.join(', ')} and "${binaryFileName}" on the PATH; ` +
      `${buildHint}, or pass binaryPath / set ${binaryEnvVarName}`,
  };
}

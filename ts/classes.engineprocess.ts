/**
 * One remoteingress-bin process, driven through @push.rocks/smartrust's
 * RustBridge in the management dialect. Internal: RemoteIngressHub and
 * RemoteIngressEdge each own one while they run.
 */
import type { ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { RustBridge, RustBinaryLocator, type IRustBridgeLogger } from '@push.rocks/smartrust';
import { binaryBaseName, binarySearch } from './paths.js';
import type { IExitEvent, IRemoteIngressLogger } from './interfaces.js';

export interface IEngineSpawnOptions {
  /** 'hub' or 'edge': used in log lines. */
  role: string;
  /** The binaryPath option, if any (config first, then constructor). */
  explicitBinaryPath?: string;
  logger?: IRemoteIngressLogger;
  requestTimeoutMs?: number;
  readyTimeoutMs?: number;
  /** Management events to re-emit on `emitter` under the same name. */
  eventNames: readonly string[];
  /** Where events and 'log' lines go. */
  emitter: EventEmitter;
  /** Called once if the process ends while not being shut down. */
  onUnexpectedExit: (info: IExitEvent) => void;
}

const STDERR_TAIL_LINES = 20;
const STOP_COMMAND_TIMEOUT_MS = 5000;
/** RustBridge sends SIGTERM, then SIGKILL after 5 s. */
const EXIT_WAIT_MS = 6500;

function levelOf(line: string): string {
  const m = /\blevel=(\w+)/i.exec(line) ?? /"level"\s*:\s*"(\w+)"/i.exec(line);
  if (!m) return 'info';
  const l = m[1].toLowerCase();
  return l === 'warning' ? 'warn' : l;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export class EngineProcess {
  public readonly binaryPath: string;
  private readonly bridge: RustBridge;
  private readonly opts: IEngineSpawnOptions;
  private child: ChildProcess | null = null;
  private stderrTail: string[] = [];
  private lastBridgeError = '';
  private exitInfo: IExitEvent | null = null;
  private shutdownPromise: Promise<void> | null = null;
  private ready = false;

  private constructor(opts: IEngineSpawnOptions, binaryPath: string, bridge: RustBridge) {
    this.opts = opts;
    this.binaryPath = binaryPath;
    this.bridge = bridge;
  }

  /**
   * Find the binary, spawn it and wait for its ready event.
   * Throws an Error a person can act on when that fails.
   */
  public static async spawn(opts: IEngineSpawnOptions): Promise<EngineProcess> {
    const search = binarySearch(opts.explicitBinaryPath);
    let self: EngineProcess | null = null;
    const bridgeLogger: IRustBridgeLogger = {
      log(level, message, data) {
        // stderr lines are forwarded separately (with their own level).
        if (message.startsWith(`[${search.locatorOptions.binaryName}] `)) return;
        if (level === 'error' && self) self.lastBridgeError = message;
        opts.logger?.log(level, `[remoteingress ${opts.role}] ${message}`, data);
      },
    };

    let found: string | null = null;
    for (const pass of search.passes) {
      // A miss in an early pass is no error: the next one may find it.
      const passLogger: IRustBridgeLogger = {
        log: (level, message, data) => {
          if (level !== 'error') bridgeLogger.log(level, message, data);
        },
      };
      found = await new RustBinaryLocator(pass, passLogger).findBinary();
      if (found) break;
    }
    if (!found) throw new Error(search.notFoundMessage);

    const bridge = new RustBridge({
      binaryName: search.locatorOptions.binaryName,
      binaryPath: found,
      localPaths: [],
      searchSystemPath: false,
      cliArgs: ['--management'],
      requestTimeoutMs: opts.requestTimeoutMs ?? 30000,
      readyTimeoutMs: opts.readyTimeoutMs ?? 10000,
      logger: bridgeLogger,
    });
    self = new EngineProcess(opts, found, bridge);
    await self.start();
    return self;
  }

  private async start(): Promise<void> {
    const { bridge, opts } = this;

    bridge.on('stderr', (line: string) => this.handleStderr(line));
    for (const name of opts.eventNames) {
      bridge.on(`management:${name}`, (data: unknown) => {
        opts.emitter.emit(name, data && typeof data === 'object' ? data : {});
      });
    }

    let exitedDuringStartup: (info: IExitEvent) => void = () => {};
    const startupExit = new Promise<IExitEvent>((resolve) => (exitedDuringStartup = resolve));
    bridge.on('exit', (code: number | null, signal: string | null) => {
      const info: IExitEvent = { code: code ?? null, signal: signal ?? null };
      this.exitInfo = info;
      if (!this.ready) {
        exitedDuringStartup(info);
      } else if (!this.shutdownPromise) {
        opts.onUnexpectedExit(info);
      }
    });

    const outcome = await Promise.race([
      bridge.spawn().then((ok) => ({ ok, exit: null as IExitEvent | null })),
      startupExit.then((exit) => ({ ok: false, exit })),
    ]);

    if (outcome.ok) {
      this.ready = true;
      this.child = (bridge as any).transport?.childProcess ?? null;
      return;
    }

    // RustBridge keeps its ready timer armed when the process dies or fails
    // to spawn; firing the ready event on the discarded bridge clears it so
    // a failed start() does not hold the event loop open for readyTimeoutMs.
    bridge.emit('management:ready', {});
    bridge.kill();
    // stdout/stderr may still deliver the last lines after 'exit'.
    await sleep(100);
    bridge.removeAllListeners();

    const tail = this.stderrTail.length ? `; its last output: ${this.stderrTail.slice(-5).join(' | ')}` : '';
    if (outcome.exit) {
      const how = outcome.exit.signal ? `signal ${outcome.exit.signal}` : `exit code ${outcome.exit.code}`;
      throw new Error(
        `${binaryBaseName} (${this.binaryPath}) exited during startup with ${how} before reporting ready${tail}`,
      );
    }
    const why = this.lastBridgeError ? ` (${this.lastBridgeError})` : '';
    throw new Error(
      `failed to start ${binaryBaseName} (${this.binaryPath}) with --management: ` +
        `it did not report ready${why}${tail}`,
    );
  }

  private handleStderr(line: string): void {
    this.stderrTail.push(line);
    if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    const level = levelOf(line);
    this.opts.emitter.emit('log', { level, message: line });
    this.opts.logger?.log(level, `[${binaryBaseName} ${this.opts.role}] ${line}`);
  }

  /** Whether the process is up and answering. */
  public get alive(): boolean {
    return this.ready && !this.shutdownPromise && this.bridge.running;
  }

  public get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Send one management request; rejects with the engine's error message. */
  public async request<T = any>(method: string, params: Record<string, unknown>): Promise<T> {
    try {
      return (await this.bridge.sendCommand(method, params)) as T;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (this.exitInfo && this.stderrTail.length) {
        throw new Error(`${message}; its last output: ${this.stderrTail.slice(-5).join(' | ')}`);
      }
      throw err instanceof Error ? err : new Error(message);
    }
  }

  /**
   * Send `stopMethod` (errors ignored: the process may be gone already),
   * then end the process and wait until it has exited. Idempotent.
   */
  public shutdown(stopMethod?: string): Promise<void> {
    if (!this.shutdownPromise) {
      this.shutdownPromise = (async () => {
        if (stopMethod && this.bridge.running) {
          try {
            await withTimeout(this.bridge.sendCommand(stopMethod, {}), STOP_COMMAND_TIMEOUT_MS);
          } catch {
            // the process may be gone or stuck; it is killed below either way
          }
        }
        const child = this.child;
        this.bridge.kill();
        this.bridge.removeAllListeners();
        if (child) await waitForExit(child, EXIT_WAIT_MS);
      })();
    }
    return this.shutdownPromise;
  }
}

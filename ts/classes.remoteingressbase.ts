/**
 * What RemoteIngressHub and RemoteIngressEdge share: owning one engine
 * process, start/stop bookkeeping and the 'exit' event. Internal.
 */
import { EventEmitter } from 'node:events';
import { EngineProcess } from './classes.engineprocess.js';
import type { IExitEvent, IRemoteIngressOptions } from './interfaces.js';

export abstract class RemoteIngressBase extends EventEmitter {
  protected readonly options: IRemoteIngressOptions;
  protected engine: EngineProcess | null = null;
  private startPromise: Promise<void> | null = null;
  private stopPromise: Promise<void> | null = null;

  protected abstract readonly role: 'hub' | 'edge';
  protected abstract readonly className: string;
  protected abstract readonly engineEvents: readonly string[];
  protected abstract readonly stopMethod: string;

  constructor(options: IRemoteIngressOptions = {}) {
    super();
    this.options = { ...options };
  }

  /** Whether the engine process is alive and started. */
  public get running(): boolean {
    return !!this.engine && this.engine.alive;
  }

  /** The engine's process id while one runs (for diagnostics). */
  public get pid(): number | undefined {
    return this.engine?.alive ? this.engine.pid : undefined;
  }

  /**
   * Spawn the engine, then run `afterSpawn` (startHub / startEdge and
   * whatever follows). If that fails, the process is ended and the error
   * (the engine's own message) is thrown.
   */
  protected async startEngine(
    explicitBinaryPath: string | undefined,
    afterSpawn: (engine: EngineProcess) => Promise<void>,
  ): Promise<void> {
    if (this.stopPromise) await this.stopPromise.catch(() => {});
    if (this.engine || this.startPromise) {
      throw new Error(`${this.className} is already running; call stop() first`);
    }
    const run = async () => {
      const engine = await EngineProcess.spawn({
        role: this.role,
        explicitBinaryPath: explicitBinaryPath ?? this.options.binaryPath,
        logger: this.options.logger,
        requestTimeoutMs: this.options.requestTimeoutMs,
        readyTimeoutMs: this.options.readyTimeoutMs,
        eventNames: this.engineEvents,
        emitter: this,
        onUnexpectedExit: (info) => this.handleUnexpectedExit(engine, info),
      });
      try {
        await afterSpawn(engine);
      } catch (err) {
        await engine.shutdown();
        throw err;
      }
      if (!engine.alive) {
        throw new Error(`${this.className}: the engine exited while starting`);
      }
      this.engine = engine;
    };
    this.startPromise = run();
    try {
      await this.startPromise;
    } finally {
      this.startPromise = null;
    }
  }

  /** Resolves once a start() in progress has settled (either way). */
  protected async settled(): Promise<void> {
    if (this.startPromise) await this.startPromise.catch(() => {});
  }

  private handleUnexpectedExit(engine: EngineProcess, info: IExitEvent): void {
    if (this.engine !== engine) return; // still starting: start() reports it
    this.engine = null;
    this.emit('exit', info);
  }

  /**
   * Stop gracefully and end the engine process; resolves when it has exited.
   * Calling it when not running (or twice) is fine.
   */
  public stop(): Promise<void> {
    if (!this.stopPromise) {
      this.stopPromise = (async () => {
        await this.settled();
        const engine = this.engine;
        if (!engine) return;
        try {
          await engine.shutdown(this.stopMethod);
        } finally {
          if (this.engine === engine) this.engine = null;
        }
      })().finally(() => {
        this.stopPromise = null;
      });
    }
    return this.stopPromise;
  }
}

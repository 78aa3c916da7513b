import { RemoteIngressBase } from './classes.remoteingressbase.js';
import type { EngineProcess } from './classes.engineprocess.js';
import type { IEdgeConfig, IEdgeEvents, IEdgeStatus, IRemoteIngressOptions } from './interfaces.js';

const EDGE_EVENTS = ['tunnelConnected', 'tunnelDisconnected', 'publicIpDiscovered', 'portsAssigned', 'portError'] as const;

/**
 * The public side: listens on `listenPorts` and carries every accepted TCP
 * connection over one TLS tunnel to the hub, reconnecting with backoff.
 *
 * Events: tunnelConnected, tunnelDisconnected, publicIpDiscovered,
 * portsAssigned, portError (data as in the contract), plus 'log' (engine
 * stderr lines) and 'exit' (the engine ended without stop()).
 */
export class RemoteIngressEdge extends RemoteIngressBase {
  protected readonly role = 'edge' as const;
  protected readonly className = 'RemoteIngressEdge';
  protected readonly engineEvents = EDGE_EVENTS;
  protected readonly stopMethod = 'stopEdge';

  constructor(options: IRemoteIngressOptions = {}) {
    super(options);
  }

  /**
   * Spawn the engine, bind every listen port and start connecting to the hub.
   * Resolves once the ports are bound; the tunnel comes up in the background
   * (watch 'tunnelConnected').
   */
  public async start(config: IEdgeConfig): Promise<void> {
    if (!config || typeof config !== 'object') {
      throw new TypeError('RemoteIngressEdge.start(config) needs { hubHost, edgeId, secret, listenPorts?, ... } or { token, listenPorts?, ... }');
    }
    const { binaryPath, ...params } = config;
    await this.startEngine(binaryPath, async (engine: EngineProcess) => {
      await engine.request('startEdge', params);
    });
  }

  /** Current edge status (a not-running status when the edge is stopped). */
  public async getStatus(): Promise<IEdgeStatus> {
    if (!this.engine || !this.engine.alive) {
      return { running: false, connected: false, publicIp: null, activeStreams: 0, listenPorts: [], listenPortsUdp: [], firewallRefused: 0, hubs: [] };
    }
    return this.engine.request<IEdgeStatus>('getEdgeStatus', {});
  }
}

export interface RemoteIngressEdge {
  on<K extends keyof IEdgeEvents>(event: K, listener: (data: IEdgeEvents[K]) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once<K extends keyof IEdgeEvents>(event: K, listener: (data: IEdgeEvents[K]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off<K extends keyof IEdgeEvents>(event: K, listener: (data: IEdgeEvents[K]) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

import { RemoteIngressBase } from './classes.remoteingressbase.js';
import type { EngineProcess } from './classes.engineprocess.js';
import type { ICreateConnectionTokenOptions } from './connectiontoken.js';
import type {
  IAllowedEdge,
  IHubConfig,
  IHubEvents,
  IHubStartResult,
  IHubStatus,
  IRemoteIngressOptions,
} from './interfaces.js';

const HUB_EVENTS = ['edgeConnected', 'edgeDisconnected', 'streamOpened', 'streamClosed'] as const;

function fail(msg: string): never {
  throw new TypeError(`updateAllowedEdges: ${msg}`);
}

/** The engine's limit on an edge id, in UTF-8 bytes. */
const MAX_EDGE_ID_BYTES = 255;

/**
 * A quick local check of an allow-list, so that a list given before start()
 * fails at once. The binary checks every list again; the messages are the
 * binary's own.
 */
function validateEdges(edges: IAllowedEdge[]): IAllowedEdge[] {
  if (!Array.isArray(edges)) {
    fail('edges must be an array of {id, secret} objects');
  }
  const seen = new Map<string, number>();
  return edges.map((edge, i) => {
    if (!edge || typeof edge !== 'object' || Array.isArray(edge)) {
      fail(`edges[${i}] must be an object {id, secret}`);
    }
    if (edge.id === undefined || edge.id === null) fail(`edges[${i}].id is required`);
    if (typeof edge.id !== 'string') fail(`edges[${i}].id must be a string`);
    if (edge.secret === undefined || edge.secret === null) fail(`edges[${i}].secret is required (edge ${JSON.stringify(edge.id)})`);
    if (typeof edge.secret !== 'string') fail(`edges[${i}].secret must be a string (edge ${JSON.stringify(edge.id)})`);
    if (edge.id === '') fail(`edges[${i}].id must not be empty`);
    if (Buffer.byteLength(edge.id, 'utf8') > MAX_EDGE_ID_BYTES) {
      fail(`edges[${i}].id must be at most ${MAX_EDGE_ID_BYTES} bytes`);
    }
    if (edge.secret === '') fail(`edges[${i}].secret must not be empty (edge ${JSON.stringify(edge.id)})`);
    const first = seen.get(edge.id);
    if (first !== undefined) fail(`edges[${i}].id ${JSON.stringify(edge.id)} duplicates edges[${first}].id`);
    seen.set(edge.id, i);
    return { ...edge };
  });
}

/**
 * The private side: accepts TLS tunnels from edges and forwards each stream
 * to `targetHost:<port the client used>` with a PROXY protocol header (v1,
 * or v2 with `proxyProtocol: 'v2'`).
 *
 * Events: edgeConnected, edgeDisconnected, streamOpened, streamClosed
 * (data as in the contract), plus 'log' (engine stderr lines) and 'exit'
 * (the engine ended without stop()).
 */
export class RemoteIngressHub extends RemoteIngressBase {
  protected readonly role = 'hub' as const;
  protected readonly className = 'RemoteIngressHub';
  protected readonly engineEvents = HUB_EVENTS;
  protected readonly stopMethod = 'stopHub';

  /** The allow-list, kept across start()/stop() and (re)sent after startHub. */
  private allowedEdges: IAllowedEdge[] | null = null;

  constructor(options: IRemoteIngressOptions = {}) {
    super(options);
  }

  /** Spawn the engine and start the tunnel listener. */
  public async start(config: IHubConfig = {}): Promise<void> {
    const { binaryPath, ...params } = config ?? {};
    await this.startEngine(binaryPath, async (engine: EngineProcess) => {
      await engine.request<IHubStartResult>('startHub', params);
      if (this.allowedEdges) {
        await engine.request('updateAllowedEdges', { edges: this.allowedEdges });
      }
    });
  }

  /**
   * Replace the list of edges allowed to connect. Connected edges that are no
   * longer allowed (or whose secret changed) are disconnected. Before start()
   * the list is kept and applied right after the hub starts.
   */
  public async updateAllowedEdges(edges: IAllowedEdge[]): Promise<void> {
    const list = validateEdges(edges);
    await this.settled();
    if (this.engine && this.engine.alive) {
      await this.engine.request('updateAllowedEdges', { edges: list });
    }
    this.allowedEdges = list;
  }

  /**
   * A connection token for an allowed edge: the hub's address as the edge
   * will dial it (`hubHost`, `hubPort`, default the running tunnel port),
   * the edge's id and secret, and the pin of the hub's current certificate.
   * `RemoteIngressEdge.start({ token, ... })` needs nothing else. The hub
   * must be running and `edgeId` in its allowed list. The token holds the
   * secret: keep it like one.
   */
  public async createConnectionToken(options: ICreateConnectionTokenOptions): Promise<string> {
    if (!options || typeof options !== 'object') {
      throw new TypeError('createConnectionToken needs { edgeId, hubHost, hubPort? }');
    }
    const { edgeId, hubHost, hubPort } = options;
    await this.settled();
    if (!this.engine || !this.engine.alive) {
      throw new Error('createConnectionToken: the hub is not running (a token carries the running hub\'s port and certificate pin)');
    }
    const result = await this.engine.request<{ token: string }>('createConnectionToken', { edgeId, hubHost, hubPort });
    return result.token;
  }

  /** Current hub status (a not-running status when the hub is stopped). */
  public async getStatus(): Promise<IHubStatus> {
    if (!this.engine || !this.engine.alive) {
      return { running: false, tunnelPort: 0, connectedEdges: [] };
    }
    return this.engine.request<IHubStatus>('getHubStatus', {});
  }
}

export interface RemoteIngressHub {
  on<K extends keyof IHubEvents>(event: K, listener: (data: IHubEvents[K]) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once<K extends keyof IHubEvents>(event: K, listener: (data: IHubEvents[K]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off<K extends keyof IHubEvents>(event: K, listener: (data: IHubEvents[K]) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

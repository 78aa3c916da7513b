/**
 * Public types of @serve.zone/remoteingress.
 *
 * Field names and shapes follow the remoteingress contract (sections 3 and 4):
 * the config objects are sent to the engine as the params of startHub /
 * startEdge (minus `binaryPath`, which only this package uses), and the status
 * and event objects are what the engine reports. The engine may add fields;
 * those listed here are always present.
 */

/** A logger compatible with @push.rocks/smartrust's IRustBridgeLogger. */
export interface IRemoteIngressLogger {
  log(level: string, message: string, data?: Record<string, any>): void;
}

/** Options given to the RemoteIngressHub / RemoteIngressEdge constructor. */
export interface IRemoteIngressOptions {
  /**
   * Path of the remoteingress-bin engine. When set, only this file is used
   * (no fallback). A `binaryPath` in the config of start() wins over this one.
   */
  binaryPath?: string;
  /** Receives the engine's log lines (its stderr) and the bridge's own messages. */
  logger?: IRemoteIngressLogger;
  /** How long one management request may take (ms). Default 30000. */
  requestTimeoutMs?: number;
  /** How long the engine may take to report ready after spawning (ms). Default 10000. */
  readyTimeoutMs?: number;
}

// ---------------------------------------------------------------- hub

export interface IHubConfig {
  /** Port the hub listens on for edge tunnels. Default 8443; 0 = any free port. */
  tunnelPort?: number;
  /** Host streams are forwarded to (SmartProxy). Default 127.0.0.1. */
  targetHost?: string;
  /** PEM certificate for the tunnel listener (with tlsKeyPem); else a self-signed one is generated. */
  tlsCertPem?: string;
  /** PEM private key matching tlsCertPem. */
  tlsKeyPem?: string;
  /**
   * host:port of an HTTP listener with /metrics (Prometheus text), /healthz and
   * /readyz; port 0 picks a free one (the start result's metricsAddress says
   * which). A hub and an edge in one process naming the same address share it.
   */
  metricsListen?: string;
  /** PROXY protocol header written to the TCP targets: "v1" (text, the default) or "v2" (binary). */
  proxyProtocol?: 'v1' | 'v2';
  /**
   * PROXY v2 header (DGRAM) for UDP targets: "first" (default: one datagram holding only the
   * header before a flow's first datagram), "every" (in front of every datagram) or "none".
   */
  udpProxyProtocol?: 'first' | 'every' | 'none';
  /** A UDP flow idle in both directions this many seconds is closed. Default 60. */
  udpIdleTimeoutSecs?: number;
  /** UDP flows per edge; beyond it the least recently used goes. Default 65536. */
  maxUdpFlows?: number;
  /** Also listen for QUIC on UDP tunnelPort. Default true; false = TLS over TCP only. */
  quic?: boolean;
  /** Engine binary to use for this start (see IRemoteIngressOptions.binaryPath). Not sent to the engine. */
  binaryPath?: string;
}

/**
 * The firewall an edge enforces for every new client connection (and UDP
 * flow) before any of its bytes crosses the tunnel. 0 or absent = no limit.
 */
export interface IEdgeFirewall {
  /** Refused: IPs or CIDRs, IPv4 and IPv6 (IPv4-mapped IPv6 clients match IPv4 rules). */
  blockedIps?: string[];
  /** When not empty, the only addresses admitted. */
  allowedIps?: string[];
  /** Cap on the connections plus UDP flows one client IP has open at once. */
  maxConnectionsPerIp?: number;
  /** Cap on new connections and flows per second per client IP (burst the same). */
  connectionRatePerIp?: number;
}

export interface IAllowedEdge {
  id: string;
  secret: string;
  /**
   * The TCP ports the hub assigns to this edge. When this or listenPortsUdp is
   * present (even empty), the hub owns the edge's ports: it listens on exactly
   * these (an absent list counts as empty), and changes follow at once over the
   * live tunnel. Absent from both: the edge keeps the ports of its own config.
   */
  listenPorts?: number[];
  /** The UDP ports the hub assigns to this edge (see listenPorts). */
  listenPortsUdp?: number[];
  /** The firewall the edge enforces. */
  firewall?: IEdgeFirewall;
}

export interface IConnectedEdgeStatus {
  edgeId: string;
  /** Unix time in seconds. */
  connectedAt: number;
  activeStreams: number;
  /** Tunnel connections the edge has up. */
  connections?: number;
  /** TCP ports the edge reports bound. */
  listenPorts: number[];
  /** UDP ports the edge reports bound. */
  listenPortsUdp: number[];
  /** The edge's UDP flows open at the hub. */
  activeUdpFlows?: number;
  /** "tls" or "quic": the transport of the edge's tunnel. */
  transport?: 'tls' | 'quic';
  /** Datagrams of the edge's flows the hub dropped since the edge connected (replies the tunnel's queue could not take, datagrams a target's socket could not take; over QUIC also clients' datagrams the transport dropped, not those quic-go drops inside itself). */
  udpDatagramsDropped?: number;
  [extra: string]: unknown;
}

export interface IHubStatus {
  running: boolean;
  /** The bound tunnel port (0 when not running). */
  tunnelPort: number;
  connectedEdges: IConnectedEdgeStatus[];
  /** SHA-256 of the hub's certificate (hex), for an edge's hubCertSha256. */
  certSha256?: string;
  /** Connections that have not authenticated yet. */
  pendingHandshakes?: number;
  /** Connections refused before or during authentication. */
  rejectedHandshakes?: number;
  /** Edge proofs checked and found wrong (or for an unknown edge id). */
  authFailures?: number;
  /** Events the binary could not deliver because this process did not read them. */
  eventsDropped?: number;
  /** The PROXY protocol version written to TCP targets. */
  proxyProtocol?: 'v1' | 'v2';
  /** The UDP port of the QUIC listener (0 when off). */
  quicPort?: number;
  [extra: string]: unknown;
}

export interface IEdgeConnectedEvent {
  edgeId: string;
  [extra: string]: unknown;
}

export interface IEdgeDisconnectedEvent {
  edgeId: string;
  reason: string;
  [extra: string]: unknown;
}

export interface IStreamEvent {
  edgeId: string;
  /** The tunnel frame's stream id. */
  streamId: number;
  [extra: string]: unknown;
}

// ---------------------------------------------------------------- edge

export interface IEdgeConfig {
  /**
   * A connection token (RemoteIngressHub.createConnectionToken,
   * encodeConnectionToken): it gives hubHost, hubPort, edgeId, secret and,
   * when it has one, the hub's certificate pin. Instead of those four: giving
   * both is an error.
   */
  token?: string;
  /** Hostname or IP of the hub (required without a token or hubs). */
  hubHost?: string;
  /** Hub tunnel port. Default 8443; also the port of a hubs entry that has none. */
  hubPort?: number;
  /**
   * Several hubs, instead of hubHost/hubPort: "host:port" entries. A name that
   * resolves to several addresses counts as that many hubs.
   */
  hubs?: string[];
  /**
   * "spread" (default): a tunnel to every hub, new connections to the live one
   * with the fewest open streams; "failover": one hub at a time, in list order.
   */
  hubMode?: 'spread' | 'failover';
  /** This edge's id, as registered on the hub with updateAllowedEdges (required without a token). */
  edgeId?: string;
  /** Shared secret, as registered on the hub (required without a token). */
  secret?: string;
  /**
   * Public ports to accept client TCP connections on, until the hub assigns
   * others. Absent or [] = wait for the hub's assignment.
   */
  listenPorts?: number[];
  /** Public UDP ports, likewise. */
  listenPortsUdp?: number[];
  /**
   * "auto" (default): where the edge may use nf_tables (root), blocked addresses
   * are also dropped by the kernel in a table of the edge's own; "process": the
   * in-process check alone.
   */
  firewallBackend?: 'auto' | 'process';
  /** A UDP flow idle in both directions this many seconds is closed. Default 60. */
  udpIdleTimeoutSecs?: number;
  /** UDP flows of this edge; beyond it the least recently used goes. Default 65536. */
  maxUdpFlows?: number;
  /** Address to bind the listen ports to. Default: all interfaces. */
  listenHost?: string;
  /** STUN refresh interval in seconds. Default 300; 0 turns STUN off. */
  stunIntervalSecs?: number;
  /** STUN server host:port. Default stun.cloudflare.com:3478. */
  stunServer?: string;
  /** Pin the hub's certificate: its SHA-256 in hex (the hub's status shows it as certSha256). */
  hubCertSha256?: string;
  /** Verify the hub's certificate against these CA certificates (PEM). */
  hubCa?: string;
  /** Server name to verify with hubCa. Default: hubHost. */
  hubServerName?: string;
  /**
   * How the edge reaches its hubs: "tls" (default: TLS over TCP), "quic" (QUIC
   * over UDP), or "auto" (QUIC, and TLS when no QUIC handshake completes within
   * quicFallbackMs; QUIC is tried again at the next reconnect).
   */
  transport?: 'tls' | 'quic' | 'auto';
  /** How long "auto" waits for a QUIC handshake before TLS (ms). Default 3000. */
  quicFallbackMs?: number;
  /** TLS connections the tunnel spreads its streams over (1-16). Default 2 (measured: see the README's Performance); more lets many streams use more cores. */
  tunnelConnections?: number;
  /** host:port of the metrics and health listener; see IHubConfig.metricsListen. */
  metricsListen?: string;
  /** Engine binary to use for this start (see IRemoteIngressOptions.binaryPath). Not sent to the engine. */
  binaryPath?: string;
}

export interface IEdgeStatus {
  running: boolean;
  connected: boolean;
  publicIp: string | null;
  activeStreams: number;
  /** TCP ports bound now. */
  listenPorts: number[];
  /** UDP ports bound now. */
  listenPortsUdp: number[];
  /** Clients refused by the firewall (in process, plus packets the kernel's rules dropped). */
  firewallRefused: number;
  /** "tls" or "quic": the transport of the live tunnel (the first connected hub's); null while none is up. */
  transport?: 'tls' | 'quic' | null;
  /** Each hub's tunnel; `connected` is true while any is up. */
  hubs: IEdgeHubStatus[];
  /** UDP flows open now. */
  activeUdpFlows?: number;
  /** Client datagrams dropped (tunnel congested or down, hub without UDP, port removed; on Linux also the kernel's drops at the ports' full socket buffers, e.g. while UDP is over its share beside busy TCP streams; over QUIC also replies the transport dropped, not those quic-go drops inside itself). */
  udpDatagramsDropped?: number;
  /** Why the tunnel is down, if it is. */
  lastError?: string;
  /** Failed connection attempts since the last success. */
  reconnectAttempts?: number;
  /** Tunnel connections up (0 while disconnected). */
  connections?: number;
  /** Events the binary could not deliver because this process did not read them. */
  eventsDropped?: number;
  [extra: string]: unknown;
}

export interface IEdgeHubStatus {
  /** host:port of the hub. */
  address: string;
  connected: boolean;
  activeStreams: number;
  /** "tls" or "quic" while connected, else null. */
  transport: string | null;
  /** The hub said it is stopping: it gets no new connections. */
  draining?: boolean;
  lastError?: string;
  [extra: string]: unknown;
}

export interface ITunnelConnectedEvent {
  /** The hub's address (host:port). */
  hub: string;
  transport: string;
  [extra: string]: unknown;
}

export interface ITunnelDisconnectedEvent {
  reason: string;
  /** The hub's address (host:port). */
  hub?: string;
  [extra: string]: unknown;
}

export interface IPublicIpDiscoveredEvent {
  ip: string;
  [extra: string]: unknown;
}

/** Follows every assignment the edge receives: the ports it was told to listen on. */
export interface IPortsAssignedEvent {
  listenPorts: number[];
  listenPortsUdp: number[];
  [extra: string]: unknown;
}

/** A port the edge cannot bind (left out of the bound lists). */
export interface IPortErrorEvent {
  port: number;
  protocol: 'tcp' | 'udp';
  error: string;
  [extra: string]: unknown;
}

// ---------------------------------------------------------------- both

/** Data of the 'exit' event: the engine process ended without stop() being called. */
export interface IExitEvent {
  code: number | null;
  signal: string | null;
}

/** Data of the 'log' event: one line the engine wrote to stderr. */
export interface ILogEvent {
  level: string;
  message: string;
}

export interface IHubEvents {
  edgeConnected: IEdgeConnectedEvent;
  edgeDisconnected: IEdgeDisconnectedEvent;
  streamOpened: IStreamEvent;
  streamClosed: IStreamEvent;
  exit: IExitEvent;
  log: ILogEvent;
}

export interface IEdgeEvents {
  tunnelConnected: ITunnelConnectedEvent;
  tunnelDisconnected: ITunnelDisconnectedEvent;
  publicIpDiscovered: IPublicIpDiscoveredEvent;
  portsAssigned: IPortsAssignedEvent;
  portError: IPortErrorEvent;
  exit: IExitEvent;
  log: ILogEvent;
}

/** Result of the engine's startHub. */
export interface IHubStartResult {
  started: boolean;
  tunnelPort: number;
  /** The UDP port of the QUIC listener (0 when quic is false or UDP tunnelPort could not be bound). */
  quicPort?: number;
  /** The bound metrics address, when metricsListen was given. */
  metricsAddress?: string;
  [extra: string]: unknown;
}

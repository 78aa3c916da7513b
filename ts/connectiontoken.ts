/**
 * Connection tokens: everything an edge needs to reach its hub, in one string.
 *
 * A token is the base64url encoding, without padding, of compact JSON
 * `{"h":hubHost,"p":hubPort,"e":edgeId,"s":secret}` with an optional `"f"`:
 * the hub certificate's SHA-256 as lowercase hex. Decoding also accepts
 * standard base64 with or without padding and ignores unknown keys.
 *
 * encodeConnectionToken writes byte for byte the token the engine's own
 * encoder (createConnectionToken, `remoteingress-bin token`) writes for the
 * same input: the same key order, and strings escaped as Go's encoding/json
 * escapes them (`<`, `>`, `&`, U+2028 and U+2029 as \u escapes). The tests
 * check both against one file of test vectors.
 *
 * A token holds the edge's secret: keep it like one. No error thrown here
 * shows a token or anything it holds.
 */

/** What a connection token carries. */
export interface IConnectionToken {
  /** Hostname or IP of the hub. */
  hubHost: string;
  /** The hub's tunnel port, 1-65535. */
  hubPort: number;
  /** The edge's id, as the hub allows it. */
  edgeId: string;
  /** The edge's shared secret. */
  secret: string;
  /** The hub certificate's SHA-256 (64 hex digits), pinned by an edge started from the token. */
  hubCertSha256?: string;
}

/** The params of RemoteIngressHub.createConnectionToken(). */
export interface ICreateConnectionTokenOptions {
  /** An edge of the hub's allowed list: its secret goes into the token. */
  edgeId: string;
  /** The hub's address as the edge will dial it. */
  hubHost: string;
  /** The port the token names. Default: the running hub's tunnel port. */
  hubPort?: number;
}

/** The longest token decodeConnectionToken reads (a token is a few hundred bytes). */
const MAX_TOKEN_LENGTH = 64 * 1024;

const PIN = /^[0-9a-f]{64}$/;

/** Lowercases a hex fingerprint and drops the colons certificate tools print. */
function normalizeFingerprint(f: string): string {
  return f.trim().replace(/:/g, '').toLowerCase();
}

/** A string as Go's encoding/json writes it (its HTML escaping included). */
function goJsonString(s: string): string {
  const wellFormed = (s as any).toWellFormed ? (s as any).toWellFormed() : s.replace(/[\uD800-\uDFFF]/g, (c, i: number, all: string) => {
    const code = c.charCodeAt(0);
    if (code <= 0xdbff) {
      const next = all.charCodeAt(i + 1);
      return next >= 0xdc00 && next <= 0xdfff ? c : '\uFFFD';
    }
    const prev = all.charCodeAt(i - 1);
    return prev >= 0xd800 && prev <= 0xdbff ? c : '\uFFFD';
  });
  return JSON.stringify(wellFormed).replace(
    /[<>&\u2028\u2029]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'),
  );
}

/** The checks every token passes, in the order (and words) of the engine's. */
function check(t: IConnectionToken): void {
  if (t.hubHost === '') throw new Error('token has no hub host ("h")');
  if (!Number.isInteger(t.hubPort) || t.hubPort < 1 || t.hubPort > 65535) {
    throw new Error('token hub port ("p") must be an integer 1-65535');
  }
  if (t.edgeId === '') throw new Error('token has no edge id ("e")');
  if (t.secret === '') throw new Error('token has no secret ("s")');
  if (t.hubCertSha256 !== undefined && !PIN.test(t.hubCertSha256)) {
    throw new Error('token certificate pin ("f") must be a SHA-256 in hex (64 digits)');
  }
}

/**
 * Encodes a connection token. hubCertSha256 may be given in any case and
 * with colons between its bytes; it is written as 64 lowercase hex digits.
 * Throws a TypeError for a value of the wrong type and an Error for one the
 * token cannot carry (an empty host, id or secret; a port outside 1-65535;
 * a pin that is not a SHA-256).
 */
export function encodeConnectionToken(token: IConnectionToken): string {
  if (!token || typeof token !== 'object') {
    throw new TypeError('encodeConnectionToken needs { hubHost, hubPort, edgeId, secret, hubCertSha256? }');
  }
  const { hubHost, hubPort, edgeId, secret, hubCertSha256 } = token;
  for (const [name, value] of [['hubHost', hubHost], ['edgeId', edgeId], ['secret', secret]] as const) {
    if (typeof value !== 'string') throw new TypeError(`encodeConnectionToken: ${name} must be a string`);
  }
  if (typeof hubPort !== 'number') throw new TypeError('encodeConnectionToken: hubPort must be an integer 1-65535');
  if (hubCertSha256 !== undefined && hubCertSha256 !== null && typeof hubCertSha256 !== 'string') {
    throw new TypeError('encodeConnectionToken: hubCertSha256 must be a string');
  }
  const pin = hubCertSha256 ? normalizeFingerprint(hubCertSha256) : '';
  const t: IConnectionToken = { hubHost, hubPort, edgeId, secret, ...(pin ? { hubCertSha256: pin } : {}) };
  check(t);
  let json = `{"h":${goJsonString(hubHost)},"p":${hubPort},"e":${goJsonString(edgeId)},"s":${goJsonString(secret)}`;
  if (pin) json += `,"f":${goJsonString(pin)}`;
  json += '}';
  return Buffer.from(json, 'utf8').toString('base64url');
}

/** Decodes base64url or standard base64, each with or without padding; null when it is neither. */
function decodeBase64(s: string): Buffer | null {
  const m = /^([A-Za-z0-9+/_-]*)(=*)$/.exec(s.replace(/[\r\n]/g, ''));
  if (!m) return null;
  const [, body, pad] = m;
  const url = /^[A-Za-z0-9_-]*$/.test(body);
  if (!url && !/^[A-Za-z0-9+/]*$/.test(body)) return null; // one alphabet, not a mix
  const rest = body.length % 4;
  if (rest === 1) return null;
  if (pad.length > 0 && (rest === 0 || pad.length !== 4 - rest)) return null;
  return Buffer.from(body, url ? 'base64url' : 'base64');
}

/**
 * Decodes a connection token (white space around it is ignored). Throws an
 * Error that says what is wrong with a malformed one: not base64, not a
 * JSON object, a key missing or of the wrong type, a port outside 1-65535,
 * a pin that is not 64 hex digits. The message never shows the token.
 */
export function decodeConnectionToken(token: string): IConnectionToken {
  if (typeof token !== 'string') throw new TypeError('decodeConnectionToken: the token must be a string');
  const s = token.trim();
  if (s === '') throw new Error('token is empty');
  if (s.length > MAX_TOKEN_LENGTH) throw new Error(`token is longer than ${MAX_TOKEN_LENGTH} bytes`);
  const bytes = decodeBase64(s);
  if (!bytes) throw new Error('token is not base64url (or base64)');
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new Error('token does not hold a JSON object (it is not JSON, or more than one JSON value)');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('token does not hold a JSON object');
  }
  const obj = value as Record<string, unknown>;
  const field = (key: string, what: string): string => {
    const v = Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') throw new Error(`token field "${key}" (${what}) must be a string`);
    return v;
  };
  const hubHost = field('h', 'hub host');
  const edgeId = field('e', 'edge id');
  const secret = field('s', 'secret');
  const pin = normalizeFingerprint(field('f', 'certificate pin'));
  let hubPort = 0;
  const p = Object.prototype.hasOwnProperty.call(obj, 'p') ? obj.p : undefined;
  if (p !== undefined && p !== null) {
    if (typeof p !== 'number' || !Number.isInteger(p)) throw new Error('token field "p" (hub port) must be an integer');
    hubPort = p;
  }
  const t: IConnectionToken = { hubHost, hubPort, edgeId, secret, ...(pin ? { hubCertSha256: pin } : {}) };
  check(t);
  return t;
}

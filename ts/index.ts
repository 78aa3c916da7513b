export { RemoteIngressHub } from './classes.remoteingresshub.js';
export { RemoteIngressEdge } from './classes.remoteingressedge.js';
export { encodeConnectionToken, decodeConnectionToken } from './connectiontoken.js';
export type { IConnectionToken, ICreateConnectionTokenOptions } from './connectiontoken.js';
export type * from './interfaces.js';

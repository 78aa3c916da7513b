export { RemoteIngressHub } from './classes.remoteingresshub.js';
export { RemoteIngressEdge } from './classes.remoteingressedge.js';
export type * from './interfaces.js';

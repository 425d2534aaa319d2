/**
 * The WebSocket link: mounts ⇄ tenant manager (the store link's messages and sockets: store-link.ts), managers ⇄ controller. Generic over the message
 * families each side may receive; authenticated by a per-tenant token; heartbeats both ways;
 * client reconnection with a full resync.
 */
export { LinkError, isLinkError, errorCode, errorMessage, type LinkErrorCode } from './errors';
export { ensureTenantToken, readTenantToken, tokenPath, tokensEqual, assertTenantName } from './token';
export { messageSet, decodeMessage, type LinkErrorReply } from './messages';
export { type EndpointInput } from './endpoint';
export { type HeartbeatOptions } from './heartbeat';
export { LinkServer, LinkSession } from './server';
export { LinkClient, type ReconnectOptions } from './client';
export {
  ToManager,
  ToMount,
  managerSocketPath,
  managersDir,
  type ToManagerMessage,
  type ToMountMessage,
  type ManagerStatus,
} from './store-link';

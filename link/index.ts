/**
 * The WebSocket link: mounts ⇄ tenant manager (the store link: store-link.ts), node agents ⇄
 * controller (agent-protocol.ts). Generic over the message families each side may receive;
 * authenticated by a token in the first frame; heartbeats both ways; client reconnection with
 * capped backoff and a full resync.
 */
export { LinkError, isLinkError, errorCode, errorMessage, type LinkErrorCode } from './errors';
export { ensureTenantToken, readTenantToken, tokenPath, tokensEqual, assertTenantName } from './token';
export {
  messageSet,
  decodeMessage,
  encodeMessage,
  asErrorReply,
  MAX_FRAME_BYTES,
  HelloSchema,
  LinkErrorReplySchema,
  type MessageSet,
  type Decoded,
  type Hello,
  type LinkErrorReply,
} from './messages';
export {
  EndpointSchema,
  ClientEndpointSchema,
  parseEndpoint,
  parseClientEndpoint,
  endpointUrl,
  type Endpoint,
  type EndpointInput,
  type ClientEndpoint,
  type ClientEndpointInput,
} from './endpoint';
export { DEFAULT_HEARTBEAT, startHeartbeat, type HeartbeatOptions } from './heartbeat';
export { LinkHost, LinkServer, LinkSession, type LinkHostOptions, type LinkServerOptions } from './server';
export { LinkClient, DEFAULT_RECONNECT, type LinkClientOptions, type ReconnectOptions } from './client';
export {
  AGENT_PATH,
  AGENT_LINK_TENANT,
  AGENT_ROLE,
  AGENT_MAX_FRAME_BYTES,
  ToController,
  ToAgent,
  RunningTaskSchema,
  InvocationOutcomeSchema,
  ProfileFiguresSchema,
  FunctionRefSchema,
  type ToControllerMessage,
  type ToAgentMessage,
  type RunningTask,
  type InvocationOutcome,
  type ProfileFigures,
  type FunctionRef,
} from './agent-protocol';
export {
  ToManager,
  ToMount,
  managerSocketPath,
  managersDir,
  type ToManagerMessage,
  type ToMountMessage,
  type ManagerStatus,
} from './store-link';

import { z } from 'zod';
import { LinkError } from './errors';

/** Where a link listens: a Unix socket (the default: file permissions guard it) or loopback TCP. */
export const EndpointSchema = z.union([
  z.object({ socketPath: z.string().startsWith('/').max(107) }).strict(),
  z
    .object({
      host: z.enum(['127.0.0.1', '::1', 'localhost']).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535),
    })
    .strict(),
]);
export type Endpoint = z.infer<typeof EndpointSchema>;
export type EndpointInput = z.input<typeof EndpointSchema>;

/**
 * What a client may connect to: a link server's endpoint, or a `ws://` / `wss://` URL of a link an
 * HTTP server hosts (`LinkHost`: the controller's agent link). The loopback rule above is for link
 * servers' own listeners; a hosting server decides for itself where it may listen (the controller
 * wants TLS beyond loopback).
 */
export const ClientEndpointSchema = z.union([
  ...EndpointSchema.options,
  z
    .object({
      url: z.url({ protocol: /^wss?$/, error: 'a link URL is ws:// or wss://' }),
    })
    .strict(),
]);
export type ClientEndpoint = z.infer<typeof ClientEndpointSchema>;
export type ClientEndpointInput = z.input<typeof ClientEndpointSchema>;

export function parseEndpoint(input: EndpointInput): Endpoint {
  return parseWith(EndpointSchema, input);
}

export function parseClientEndpoint(input: ClientEndpointInput): ClientEndpoint {
  return parseWith(ClientEndpointSchema, input);
}

function parseWith<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new LinkError('E_BAD_CONFIG', `bad link endpoint ${JSON.stringify(input)}: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  }
  return parsed.data;
}

export function endpointUrl(endpoint: ClientEndpoint): string {
  if ('url' in endpoint) return endpoint.url;
  if ('socketPath' in endpoint) return `ws+unix://${endpoint.socketPath}:/link`;
  const host = endpoint.host === '::1' ? '[::1]' : endpoint.host;
  return `ws://${host}:${endpoint.port}/link`;
}

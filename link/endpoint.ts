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

export function parseEndpoint(input: EndpointInput): Endpoint {
  const parsed = EndpointSchema.safeParse(input);
  if (!parsed.success) {
    throw new LinkError('E_BAD_CONFIG', `bad link endpoint ${JSON.stringify(input)}: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  }
  return parsed.data;
}

export function endpointUrl(endpoint: Endpoint): string {
  if ('socketPath' in endpoint) return `ws+unix://${endpoint.socketPath}:/link`;
  const host = endpoint.host === '::1' ? '[::1]' : endpoint.host;
  return `ws://${host}:${endpoint.port}/link`;
}

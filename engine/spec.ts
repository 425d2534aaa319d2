import { z } from 'zod';
import { EngineError } from './errors';

const labelValue = z.string().max(128);

/**
 * How the container's /tmp is provided.
 * - `overlay`: Docker's default, nothing mounted; /tmp is part of the container's writable layer.
 * - `tmpfs`: Docker `--tmpfs /tmp`; pages are shmem charged to the container's memory limit.
 * - `bind`: a host directory bind-mounted at /tmp with `rslave` propagation, so a remount under the
 *   (shared) parent reaches the running container. Without `hostPath` the engine's `TmpProvider`
 *   creates it (this is how an Ephemera mount is attached).
 */
export const TmpModeSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('overlay') }),
  z.object({ kind: z.literal('tmpfs'), sizeBytes: z.number().int().positive().optional() }),
  z.object({ kind: z.literal('bind'), hostPath: z.string().startsWith('/').optional() }),
]);
export type TmpMode = z.infer<typeof TmpModeSchema>;

export const FunctionSpecSchema = z.object({
  /** Docker reference or a recipe name (`function`, `busybox`) resolved to its hashed tag. */
  image: z.string().min(1),
  /** argv of the function; invocation arguments are appended. */
  command: z.array(z.string()).min(1),
  /** Memory limit (and memory+swap limit, so no swap) in MiB; Docker's floor is 6 MiB. */
  memoryMiB: z.number().int().min(6),
  tmp: TmpModeSchema.default({ kind: 'overlay' }),
  /** User the invocations run as (e.g. `fn` or `1000:1000`); the image default when absent. */
  user: z.string().min(1).optional(),
  env: z.record(z.string(), z.string()).default({}),
  workdir: z.string().startsWith('/').optional(),
  tenant: labelValue.min(1).default('default'),
  function: labelValue.min(1).default('anonymous'),
  workflow: labelValue.default(''),
  /** Extra container labels (tests use one to find what they made). */
  labels: z.record(z.string(), z.string()).default({}),
});

export type FunctionSpec = z.infer<typeof FunctionSpecSchema>;
export type FunctionSpecInput = z.input<typeof FunctionSpecSchema>;

export function parseFunctionSpec(input: FunctionSpecInput): FunctionSpec {
  const parsed = FunctionSpecSchema.safeParse(input);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(spec)'}: ${i.message}`).join('; ');
    throw new EngineError('E_BAD_SPEC', `invalid function spec: ${issues}`, { issues: parsed.error.issues });
  }
  return parsed.data;
}

export const MANAGED_LABEL = 'ephemera.managed';

export function containerLabels(spec: FunctionSpec): Record<string, string> {
  return {
    ...spec.labels,
    'ephemera.tenant': spec.tenant,
    'ephemera.function': spec.function,
    'ephemera.workflow': spec.workflow,
    [MANAGED_LABEL]: '1',
  };
}

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../engine/index';
import { tokensEqual } from '../link/index';
import { ControllerError, errorMessage, issuesFrom } from './errors';

/**
 * Who a request speaks for. A tenant token binds every request to its tenant (never the body's); the
 * operator token reaches the cluster-wide routes (nodes, every tenant's tasks, tokens, limits).
 */
export type Principal = { kind: 'operator' } | { kind: 'tenant'; tenant: string; tokenId: string };

/** For logs and audit lines: names the token by its public id, never by its secret. */
export function describePrincipal(p: Principal | undefined): string {
  if (!p) return 'anonymous';
  return p.kind === 'operator' ? 'operator' : `tenant:${p.tenant} token:${p.tokenId}`;
}

export const TENANT_NAME = z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." and "-", starting with a letter or digit');

/** Unset fields are unlimited. Memory is the sum of T_lim over the tenant's running invocations. */
export const TenantLimitsSchema = z
  .object({
    functions: z.number().int().nonnegative().optional(),
    concurrentInvocations: z.number().int().nonnegative().optional(),
    memoryMiB: z.number().int().nonnegative().optional(),
  })
  .strict();
export type TenantLimits = z.infer<typeof TenantLimitsSchema>;

const TOKEN_ID = /^[0-9a-f]{16}$/;
/** `ept_<id>_<secret>`: the id is public (listing, revoking, audit lines); the secret is 256 random bits. */
const TENANT_TOKEN = /^ept_([0-9a-f]{16})_([0-9a-f]{64})$/;

const TokenRecordSchema = z
  .object({
    id: z.string().regex(TOKEN_ID),
    tenant: TENANT_NAME,
    /** sha256 of the secret, hex. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    label: z.string().max(200).optional(),
    createdAt: z.string(),
  })
  .strict();
type TokenRecord = z.infer<typeof TokenRecordSchema>;
export type TokenInfo = Omit<TokenRecord, 'sha256'>;

const FileSchema = z
  .object({
    version: z.literal(1),
    tokens: z.array(TokenRecordSchema),
    limits: z.record(z.string(), TenantLimitsSchema),
  })
  .strict();

/**
 * A plain sha256 is enough: the secret is 256 random bits, so nobody can search for a preimage and a
 * slow KDF (scrypt) would only add latency to every request. What matters is that the file holds no
 * usable credential.
 */
function secretHash(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/**
 * The tenants' tokens (hashed) and limits, durable in `<stateDir>/tenants.json` (0600, replaced
 * atomically). The running controller is its only writer, so a token revoked through the API is
 * refused from the next request on.
 */
export class TenantCredentials {
  readonly file: string;
  private readonly tokens = new Map<string, TokenRecord>();
  private readonly limitsByTenant = new Map<string, TenantLimits>();
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(file: string) {
    this.file = file;
  }

  static async open(stateDir: string): Promise<TenantCredentials> {
    const store = new TenantCredentials(path.join(stateDir, 'tenants.json'));
    let text: string | undefined;
    try {
      const st = await stat(store.file);
      if ((st.mode & 0o077) !== 0) {
        throw new ControllerError('E_STATE', `${store.file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); expected 0600`);
      }
      text = await readFile(store.file, 'utf8');
    } catch (err) {
      if (err instanceof ControllerError) throw err;
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ControllerError('E_STATE', `cannot read ${store.file}: ${errorMessage(err)}`);
    }
    if (text !== undefined) {
      let document: unknown;
      try {
        document = JSON.parse(text);
      } catch (err) {
        throw new ControllerError('E_STATE', `${store.file} is not valid JSON: ${errorMessage(err)}`);
      }
      const parsed = FileSchema.safeParse(document);
      if (!parsed.success) {
        const issues = issuesFrom('file', parsed.error.issues);
        throw new ControllerError('E_STATE', `${store.file} is invalid: ${issues.map((i) => `${i.path}: ${i.reason}`).join('; ')}`, issues);
      }
      for (const t of parsed.data.tokens) store.tokens.set(t.id, t);
      for (const [tenant, limits] of Object.entries(parsed.data.limits)) store.limitsByTenant.set(tenant, limits);
    }
    return store;
  }

  /** The tenant of a presented token, or undefined (unknown, revoked or malformed). */
  authenticate(presented: string): { tenant: string; tokenId: string } | undefined {
    const m = TENANT_TOKEN.exec(presented);
    if (!m) return undefined;
    const record = this.tokens.get(m[1]!);
    // Looking the id up is not constant-time, but ids are public; the secret is compared in constant time.
    if (!record) return undefined;
    return timingSafeEqual(secretHash(m[2]!), Buffer.from(record.sha256, 'hex')) ? { tenant: record.tenant, tokenId: record.id } : undefined;
  }

  /** Creates a token; the secret is returned here once and stored only as its hash. */
  async issue(tenant: string, label?: string): Promise<TokenInfo & { token: string }> {
    TENANT_NAME.parse(tenant);
    let id: string;
    do id = randomBytes(8).toString('hex');
    while (this.tokens.has(id));
    const secret = randomBytes(32).toString('hex');
    const record: TokenRecord = { id, tenant, sha256: secretHash(secret).toString('hex'), ...(label ? { label } : {}), createdAt: new Date().toISOString() };
    this.tokens.set(id, record);
    await this.persist();
    const { sha256: _, ...info } = record;
    return { ...info, token: `ept_${id}_${secret}` };
  }

  /** Removes a token; false when there is none with that id. Refused from the next request on. */
  async revoke(id: string): Promise<boolean> {
    if (!this.tokens.delete(id)) return false;
    await this.persist();
    return true;
  }

  list(tenant?: string): TokenInfo[] {
    return [...this.tokens.values()]
      .filter((t) => tenant === undefined || t.tenant === tenant)
      .map(({ sha256: _, ...info }) => info)
      .sort((a, b) => a.tenant.localeCompare(b.tenant) || a.createdAt.localeCompare(b.createdAt));
  }

  limits(tenant: string): TenantLimits {
    return this.limitsByTenant.get(tenant) ?? {};
  }

  async setLimits(tenant: string, limits: TenantLimits): Promise<void> {
    if (Object.keys(limits).length === 0) this.limitsByTenant.delete(tenant);
    else this.limitsByTenant.set(tenant, limits);
    await this.persist();
  }

  private persist(): Promise<void> {
    const snapshot = {
      version: 1 as const,
      tokens: [...this.tokens.values()],
      limits: Object.fromEntries([...this.limitsByTenant].sort(([a], [b]) => a.localeCompare(b))),
    };
    const text = `${JSON.stringify(snapshot, null, 2)}\n`;
    // Serialised, each write carrying the whole state as of its call: the last write wins.
    const next = this.chain.then(() => writeFileAtomic(this.file, text, 0o600));
    this.chain = next.catch(() => undefined);
    return next;
  }
}

/** The bearer token of `Authorization: Bearer …`, if any. */
export function bearerToken(header: string | undefined): string | undefined {
  return /^Bearer (\S+)$/.exec(header ?? '')?.[1];
}

/** The operator's token, then a tenant's; undefined for anything else. */
export function authenticate(presented: string | undefined, operatorToken: string, tenants: TenantCredentials): Principal | undefined {
  if (presented === undefined) return undefined;
  if (tokensEqual(presented, operatorToken)) return { kind: 'operator' };
  const t = tenants.authenticate(presented);
  return t ? { kind: 'tenant', ...t } : undefined;
}

/**
 * Only a loopback address may serve plain HTTP: bearer tokens cross the wire in every request. A
 * host name other than `localhost` counts as non-loopback (it may resolve anywhere).
 */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIPv4(host)) return host.startsWith('127.');
  if (isIPv6(host)) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

import { EphemeraError } from '../errors/index';

/**
 * Every error the policy layer raises carries a stable `code`; callers and tests branch on the
 * code, never on the message text.
 */
export const POLICY_ERROR_CODES = [
  /** A policy configuration file or object failed validation; `details` lists every issue. */
  'E_BAD_CONFIG',
  /** A scheduler trace line is malformed; the message names the line number and the reason. */
  'E_BAD_TRACE',
  /** A command-line argument is malformed. */
  'E_BAD_ARGS',
  /** A snapshot contradicts itself (unknown container, duplicate id …). */
  'E_BAD_SNAPSHOT',
  /** Applying a step would break a kernel rule (cgroup v1: a limit cannot go below usage). */
  'E_UNSAFE_STEP',
] as const;
export type PolicyErrorCode = (typeof POLICY_ERROR_CODES)[number];

export interface PolicyIssue {
  /** Dotted path inside the offending document, `(root)` for the document itself. */
  path: string;
  reason: string;
}

export class PolicyError extends EphemeraError<PolicyErrorCode, readonly PolicyIssue[]> {
  /** Read by the CLI to choose the process exit status. */
  declare readonly exitCode: 2;

  constructor(code: PolicyErrorCode, message: string, details: readonly PolicyIssue[] = []) {
    super(code, message, { details, exitCode: 2 });
  }
}

/**
 * Every error the policy layer raises carries a stable `code`; callers and tests branch on the
 * code, never on the message text.
 */
export type PolicyErrorCode =
  /** A policy configuration file or object failed validation; `details` lists every issue. */
  | 'E_BAD_CONFIG'
  /** A scheduler trace line is malformed; the message names the line number and the reason. */
  | 'E_BAD_TRACE'
  /** A command-line argument is malformed. */
  | 'E_BAD_ARGS'
  /** A snapshot contradicts itself (unknown container, duplicate id …). */
  | 'E_BAD_SNAPSHOT'
  /** Applying a step would break a kernel rule (cgroup v1: a limit cannot go below usage). */
  | 'E_UNSAFE_STEP';

export interface PolicyIssue {
  /** Dotted path inside the offending document, `(root)` for the document itself. */
  path: string;
  reason: string;
}

export class PolicyError extends Error {
  readonly code: PolicyErrorCode;
  readonly details: readonly PolicyIssue[];
  /** Read by bin/ephemera.js to choose the process exit status. */
  readonly exitCode = 2;

  constructor(code: PolicyErrorCode, message: string, details: readonly PolicyIssue[] = []) {
    super(message);
    this.name = 'PolicyError';
    this.code = code;
    this.details = details;
  }
}

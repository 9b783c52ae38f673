/** Every way a run can end: exit codes (documented in README.md; keep both in step) and the errors that carry them. */
export const ExitCode = {
  OK: 0,
  INTERNAL: 1,
  CONFIG: 2,
  DB_FATAL: 10,
  DEADLINE: 11,
  LOCK_TIMEOUT: 12,
  LOCK_LOST: 13,
  KONG_FAILED: 14,
  DB_LOST: 15,
  INTERRUPTED: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** One short meaning per exit code: the source of `--help` and docs/errors.md (the README table says more). */
export const EXIT_CODE_MEANINGS: ReadonlyArray<readonly [ExitCodeValue, string]> = [
  [ExitCode.OK, 'ok'],
  [ExitCode.INTERNAL, 'internal error (a bug)'],
  [ExitCode.CONFIG, 'usage or configuration error'],
  [ExitCode.DB_FATAL, 'database error that retrying cannot fix'],
  [ExitCode.DEADLINE, 'deadline reached'],
  [ExitCode.LOCK_TIMEOUT, 'lock timeout'],
  [ExitCode.LOCK_LOST, 'lock not held (pooler, or not regained)'],
  [ExitCode.KONG_FAILED, 'Kong migration failed'],
  [ExitCode.DB_LOST, 'connection to Postgres lost and not regained'],
  [ExitCode.INTERRUPTED, 'interrupted'],
];

/** "0 ok; 1 internal error (a bug); ..." */
export const exitCodeSummary = (): string => EXIT_CODE_MEANINGS.map(([c, m]) => `${c} ${m}`).join('; ');

/** An error that ends the run with a documented exit code and a message naming the fix. */
export class InitError extends Error {
  constructor(
    readonly exitCode: ExitCodeValue,
    message: string,
    readonly detail?: string,
  ) {
    super(message);
    this.name = 'InitError';
  }
}

export const configError = (message: string): InitError => new InitError(ExitCode.CONFIG, message);

export function isInitError(e: unknown): e is InitError {
  return e instanceof InitError;
}

/** A signal (SIGTERM/SIGINT) ended the run; `detail` says what happened to a running Kong step. */
export class Interrupted extends Error {
  constructor(readonly detail?: string) {
    super(detail ? `interrupted by a signal: ${detail}` : 'interrupted');
    this.name = 'Interrupted';
  }
}

/** Exit codes of kong-db-init. Documented in README.md; keep both in step. */
export const ExitCode = {
  OK: 0,
  INTERNAL: 1,
  CONFIG: 2,
  DB_FATAL: 10,
  DEADLINE: 11,
  LOCK_TIMEOUT: 12,
  LOCK_LOST: 13,
  KONG_FAILED: 14,
  INTERRUPTED: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];


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

/** The post-renderer's and `values` command's failures, each with its documented exit code. */
export const RENDER_EXIT = { OK: 0, INTERNAL: 1, USAGE: 2, BAD_INPUT: 20, STALE: 21 } as const;

/** Bad input or a release we cannot handle safely: exit 20 (or `exitCode`), nothing written to stdout. */
export class RenderError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = RENDER_EXIT.BAD_INPUT,
  ) {
    super(message);
    this.name = 'RenderError';
  }
}

export async function postRenderMain(_a: string[], _e: Record<string, string | undefined>): Promise<number> { return 2; }

export async function installMain(_a: string[]): Promise<number> { return 2; }

/**
 * Configuration: Kong's own settings (kong-config.ts) and our own settings (settings.ts).
 * Re-exported here so that `./config.js` imports keep working.
 */
export * from './kong-config.js';
export * from './settings.js';

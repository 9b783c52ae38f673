import fs from 'node:fs';
import path from 'node:path';
// Kong 3.7.1's migrations, in the order Kong runs them (from the recorded `kong migrations list`).
// Migrations with a teardown step are left "pending" by `up` and completed by `finish`.
export const CATALOG = [
  ['core', ['000_base', '003_100_to_110', '004_110_to_120', '005_120_to_130', '006_130_to_140', '007_140_to_150', '008_150_to_200', '009_200_to_210', '010_210_to_211', '011_212_to_213', '012_213_to_220', '013_220_to_230', '014_230_to_270', '015_270_to_280', '016_280_to_300', '017_300_to_310', '018_310_to_320', '019_320_to_330', '020_330_to_340', '021_340_to_350', '022_350_to_360', '023_360_to_370']],
  ['acl', ['000_base_acl', '002_130_to_140', '003_200_to_210', '004_212_to_213']],
  ['acme', ['000_base_acme', '001_280_to_300', '002_320_to_330', '003_350_to_360']],
  ['ai-proxy', ['001_360_to_370']],
  ['basic-auth', ['000_base_basic_auth', '002_130_to_140', '003_200_to_210']],
  ['bot-detection', ['001_200_to_210']],
  ['hmac-auth', ['000_base_hmac_auth', '002_130_to_140', '003_200_to_210']],
  ['http-log', ['001_280_to_300']],
  ['ip-restriction', ['001_200_to_210']],
  ['jwt', ['000_base_jwt', '002_130_to_140', '003_200_to_210']],
  ['key-auth', ['000_base_key_auth', '002_130_to_140', '003_200_to_210', '004_320_to_330']],
  ['oauth2', ['000_base_oauth2', '003_130_to_140', '004_200_to_210', '005_210_to_211', '006_320_to_330', '007_320_to_330']],
  ['opentelemetry', ['001_331_to_332']],
  ['post-function', ['001_280_to_300']],
  ['pre-function', ['001_280_to_300']],
  ['rate-limiting', ['000_base_rate_limiting', '003_10_to_112', '004_200_to_210', '005_320_to_330', '006_350_to_360']],
  ['response-ratelimiting', ['000_base_response_rate_limiting', '001_350_to_360']],
  ['session', ['000_base_session', '001_add_ttl_index', '002_320_to_330']],
];

export const TEARDOWN = new Set(['ai-proxy/001_360_to_370']);

/** What Kong 3.6 leaves: everything but core 023_360_to_370 and ai-proxy 001_360_to_370. */
export const KONG_36_MISSING = new Set(['core/023_360_to_370', 'ai-proxy/001_360_to_370']);

/** The catalogs the stand-in can play (KONG_STANDIN_CATALOG), with the version `kong version` prints. */
export const CATALOGS = {
  '3.7.1': { version: '3.7.1', catalog: CATALOG },
  '3.6': {
    version: '3.6.1',
    catalog: CATALOG.map(([sub, migs]) => [sub, migs.filter((m) => !KONG_36_MISSING.has(`${sub}/${m}`))]).filter(([, migs]) => migs.length > 0),
  },
};

/**
 * Custom plugins the way Kong finds them: a plugin named in KONG_PLUGINS whose files sit under a
 * KONG_LUA_PACKAGE_PATH root as kong/plugins/<name>/migrations/<migration>.lua (init.lua aside),
 * in file-name order (real Kong lists them in migrations/init.lua).
 */
function customPluginMigrations(env) {
  const plugins = (env.KONG_PLUGINS || 'bundled').split(',').map((p) => p.trim()).filter((p) => p && p !== 'bundled' && p !== 'off');
  const roots = (env.KONG_LUA_PACKAGE_PATH || '').split(';').map((e) => e.replace(/\/?\?.*$/, '')).filter(Boolean);
  const out = [];
  for (const name of plugins) {
    for (const root of roots) {
      const dir = path.join(root, 'kong', 'plugins', name, 'migrations');
      if (!fs.existsSync(dir)) continue;
      const migs = fs.readdirSync(dir).filter((f) => f.endsWith('.lua') && f !== 'init.lua').sort().map((f) => f.slice(0, -4));
      if (migs.length) out.push([name, migs]);
      break;
    }
  }
  return out;
}

/**
 * The catalog selected by KONG_STANDIN_CATALOG (default 3.7.1), plus custom-plugin migrations
 * (customPluginMigrations) and KONG_STANDIN_PLUGIN_MIGRATIONS ("sub/name,sub/name2", appended in
 * order), so tests can change a plugin's migration set without changing the version.
 */
export function selectCatalog(env) {
  const name = env.KONG_STANDIN_CATALOG || '3.7.1';
  const sel = CATALOGS[name];
  if (!sel) throw new Error(`KONG_STANDIN_CATALOG=${name}: use one of ${Object.keys(CATALOGS).join(', ')}`);
  const catalog = sel.catalog.map(([s, m]) => [s, [...m]]);
  catalog.push(...customPluginMigrations(env));
  for (const id of (env.KONG_STANDIN_PLUGIN_MIGRATIONS || '').split(',').map((x) => x.trim()).filter(Boolean)) {
    const [sub, mig] = id.split('/');
    const entry = catalog.find(([s]) => s === sub);
    if (entry) entry[1].push(mig);
    else catalog.push([sub, [mig]]);
  }
  return { version: sel.version, catalog };
}

/**
 * A small read-only Kubernetes API client for `finish`: in-cluster service-account access over
 * node:https (the token is re-read for every request: bound tokens rotate), JSON lists only.
 * Hand-written on purpose: we need three list calls, and @kubernetes/client-node would add
 * ~40 packages and several MB to an image whose job is to start fast.
 */
import https from 'node:https';
import { ExitCode, InitError } from '../errors.js';
import type { FileReader } from '../kong/config.js';

export const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeAccess {
  /** https://host:port */
  server: string;
  /** Bearer token (read each time). */
  token: () => string;
  ca: string;
  /** The pod's own namespace. */
  namespace: string;
}

/** In-cluster access from the pod's environment and its service-account files. */
export function inClusterAccess(env: Record<string, string | undefined>, files: FileReader, dir = SA_DIR): KubeAccess {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) {
    throw new InitError(
      ExitCode.CONFIG,
      'not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set): `finish` waits for the rollout through the Kubernetes API; run it in the Kong pod, or pass --rollout=skip to finish without waiting',
    );
  }
  for (const f of ['token', 'ca.crt']) {
    if (!files.exists(`${dir}/${f}`)) {
      throw new InitError(
        ExitCode.CONFIG,
        `no service-account ${f} at ${dir}/${f}: mount a service-account token into this container (automountServiceAccountToken, or the projected volume the post-renderer adds)`,
      );
    }
  }
  const namespace = env.POD_NAMESPACE || (files.exists(`${dir}/namespace`) ? files.read(`${dir}/namespace`).trim() : 'default');
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    token: () => files.read(`${dir}/token`).trim(),
    ca: files.read(`${dir}/ca.crt`),
    namespace,
  };
}

export class KubeError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'KubeError';
  }
}

/** GET a JSON document from the API server. 401/403/404 are not retryable; network errors and 5xx are. */
export function kubeGet<T>(a: KubeAccess, path: string, signal?: AbortSignal, timeoutMs = 15_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const url = new URL(path, a.server);
    const req = https.request(
      url,
      { method: 'GET', ca: a.ca, headers: { Authorization: `Bearer ${a.token()}`, Accept: 'application/json' }, signal, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(new KubeError(`GET ${url.pathname}: ${e.message}`, undefined, true)));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            try {
              resolve(JSON.parse(body) as T);
            } catch {
              reject(new KubeError(`GET ${url.pathname}: the API server sent invalid JSON`, status, true));
            }
            return;
          }
          let msg = body.slice(0, 300);
          try {
            msg = (JSON.parse(body) as { message?: string }).message ?? msg;
          } catch {
            /* not JSON */
          }
          reject(new KubeError(`GET ${url.pathname}${url.search}: HTTP ${status}: ${msg}`, status, status >= 500 || status === 429));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => reject(new KubeError(`GET ${url.pathname}: ${e.message}`, undefined, true)));
    req.end();
  });
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
}

/** A LabelSelector object as the `labelSelector` query string the API accepts. */
export function selectorString(s: LabelSelector | undefined): string {
  const parts = Object.entries(s?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of s?.matchExpressions ?? []) {
    const vals = `(${(e.values ?? []).join(',')})`;
    if (e.operator === 'In') parts.push(`${e.key} in ${vals}`);
    else if (e.operator === 'NotIn') parts.push(`${e.key} notin ${vals}`);
    else if (e.operator === 'Exists') parts.push(e.key);
    else if (e.operator === 'DoesNotExist') parts.push(`!${e.key}`);
  }
  return parts.join(',');
}

/** `list` a collection, optionally filtered by a label selector. */
export async function kubeList<T>(a: KubeAccess, apiPath: string, namespace: string, resource: string, selector?: string, signal?: AbortSignal): Promise<T[]> {
  const q = selector ? `?labelSelector=${encodeURIComponent(selector)}` : '';
  const r = await kubeGet<{ items?: T[] }>(a, `${apiPath}/namespaces/${encodeURIComponent(namespace)}/${resource}${q}`, signal);
  return r.items ?? [];
}

/**
 * Global setup of the e2e suite: find the cluster (.ci/k8s.sh up), helm 3 and 4, and the images;
 * import from Docker every image the cluster lacks or holds an older build of; build the program.
 * Where the machine cannot run the suite it is skipped with one reason, except when CI=true or
 * KDI_REQUIRE_K8S=1: then the setup fails.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDist, ROOT } from '../helpers/build.js';
import { CACHE, KUBECONFIG, KUBECTL, findHelm } from './kube.js';

const outDir = path.join(ROOT, '.tmp', `e2e-dist-${process.pid}`);
export const IMAGES = ['kong-db-init:ci', 'kdi-standin/kong:3.6', 'kdi-standin/kong:3.7.1', 'kdi-standin/postgres:15'];

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function problem(): string | undefined {
  if (!fs.existsSync(KUBECTL)) return `no Kubernetes binaries in ${path.dirname(KUBECTL)} (run .ci/k8s.sh build)`;
  if (!fs.existsSync(KUBECONFIG)) return `no cluster: ${KUBECONFIG} is missing (run sudo .ci/k8s.sh up)`;
  try {
    run(KUBECTL, ['--kubeconfig', KUBECONFIG, 'get', '--raw', '/readyz']);
  } catch (e) {
    return `the cluster does not answer (${(e as Error).message.split('\n')[0]}); run .ci/k8s.sh status`;
  }
  const helm = findHelm();
  if (!helm.v3 || !helm.v4) return `helm ${!helm.v3 ? '3' : '4'} not found (set KDI_HELM3_BIN/KDI_HELM4_BIN or run .ci/run once)`;
  process.env.KDI_E2E_HELM3 = helm.v3;
  process.env.KDI_E2E_HELM4 = helm.v4;
  const sock = path.join(CACHE, 'k8s/run/containerd/containerd.sock');
  const ref = (i: string) => `docker.io/${i.includes('/') ? '' : 'library/'}${i}`;
  let have: Map<string, string>; // image ref -> manifest digest
  try {
    have = new Map(
      run('ctr', ['-a', sock, '-n', 'k8s.io', 'images', 'ls'])
        .split('\n')
        .slice(1)
        .map((l) => l.split(/\s+/))
        .filter((f) => f.length > 2)
        .map((f) => [f[0]!, f[2]!]),
    );
  } catch (e) {
    return `cannot list the images of the cluster's containerd at ${sock} (run as root): ${(e as Error).message.split('\n')[0]}`;
  }
  /** Docker's image ID (the digest of its config), undefined when Docker lacks the image. */
  const dockerId = (i: string) => {
    try {
      return run('docker', ['image', 'inspect', '-f', '{{.Id}}', i]).trim();
    } catch {
      return undefined;
    }
  };
  /** The config digest of the cluster's copy (the same ID when it was imported from that Docker image). */
  const clusterId = (i: string) => {
    const manifest = have.get(ref(i));
    if (!manifest) return undefined;
    try {
      return (JSON.parse(run('ctr', ['-a', sock, '-n', 'k8s.io', 'content', 'get', manifest])) as { config?: { digest?: string } }).config?.digest;
    } catch {
      return undefined;
    }
  };
  const missing = IMAGES.filter((i) => !have.has(ref(i)));
  const notInDocker = missing.filter((i) => !dockerId(i));
  if (notInDocker.length) return `images missing from Docker and the cluster: ${notInDocker.join(', ')} (run .ci/docker.sh up)`;
  // the images follow the source (ours: the program the pods run; the stand-ins: test/kong-standin):
  // import every one whose Docker build differs from the cluster's copy
  const refresh = IMAGES.filter((i) => {
    const id = dockerId(i);
    return id !== undefined && id !== clusterId(i);
  });
  if (refresh.length) execFileSync(path.join(ROOT, '.ci/k8s.sh'), ['import', ...refresh], { stdio: 'inherit' });
  return undefined;
}

/** The run's own TMPDIR (helm homes, values files), removed at the end: the suite leaves nothing in /tmp. */
let tmpDir: string | undefined;

export function setup(): void {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kdi-e2e-run-'));
  process.env.TMPDIR = tmpDir;
  const why = problem();
  if (why) {
    if (process.env.CI === 'true' || process.env.KDI_REQUIRE_K8S === '1') throw new Error(`e2e: expected to run, but ${why}`);
    process.env.KDI_E2E_SKIP = why;
    console.warn(`skipping the e2e suite: ${why}`);
    return;
  }
  process.env.KDI_E2E_DIST = path.dirname(buildDist(outDir));
}

export function teardown(): void {
  fs.rmSync(outDir, { recursive: true, force: true });
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
}

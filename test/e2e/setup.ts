/**
 * Global setup of the e2e suite: find the cluster (.ci/k8s.sh up), helm 3 and 4, and the images;
 * import missing images from Docker; build the program and the test-only finish stage.
 * Where the machine cannot run the suite it is skipped with one reason, except when CI=true or
 * KDI_REQUIRE_K8S=1: then the setup fails.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
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
  let have: string;
  try {
    have = run('ctr', ['-a', sock, '-n', 'k8s.io', 'images', 'ls', '-q']);
  } catch (e) {
    return `cannot list the images of the cluster's containerd at ${sock} (run as root): ${(e as Error).message.split('\n')[0]}`;
  }
  const inDocker = (i: string) => {
    try {
      run('docker', ['image', 'inspect', i]);
      return true;
    } catch {
      return false;
    }
  };
  const missing = IMAGES.filter((i) => !have.includes(`docker.io/${i.includes('/') ? '' : 'library/'}${i}`));
  const notInDocker = missing.filter((i) => !inDocker(i));
  if (notInDocker.length) return `images missing from Docker and the cluster: ${notInDocker.join(', ')} (run .ci/docker.sh up)`;
  // our image follows the source (the finish sidecar runs the program it installs): refresh it when Docker has it
  const refresh = missing.includes('kong-db-init:ci') || !inDocker('kong-db-init:ci') ? missing : [...missing, 'kong-db-init:ci'];
  if (refresh.length) execFileSync(path.join(ROOT, '.ci/k8s.sh'), ['import', ...refresh], { stdio: 'inherit' });
  return undefined;
}

export function setup(): void {
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
}

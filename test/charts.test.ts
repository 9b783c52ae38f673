/** charts/kong-values.yaml: the values-only path, checked offline against our own layout. */
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { BIN_PATH, IMAGE_DIR, INSTALL_CONTAINER, MIGRATE_CONTAINER } from '../src/render.js';
import { ROOT } from './helpers/harness.js';
import { validateWorkloads } from './helpers/k8s-check.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const values = parse(fs.readFileSync(path.join(ROOT, 'charts/kong-values.yaml'), 'utf8')) as Obj;

describe('charts/kong-values.yaml', () => {
  const [install, migrate] = values.deployment.initContainers as Obj[];

  it('turns off the init and pre-upgrade Jobs and keeps post-upgrade finish', () => {
    expect(values.migrations).toEqual({ init: false, preUpgrade: false, postUpgrade: true });
  });

  it('adds the install and migrate init containers, in that order, with our layout', () => {
    expect([install!.name, migrate!.name]).toEqual([INSTALL_CONTAINER, MIGRATE_CONTAINER]);
    expect(install!.command).toEqual([`${IMAGE_DIR}/node`, `${IMAGE_DIR}/app/cli.js`, 'install', BIN_PATH]);
    expect(migrate!.command).toEqual([`${BIN_PATH}/kong-db-init`, 'migrate']);
    const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toContain(`install /out${IMAGE_DIR}`);
  });

  it('runs migrate in the same Kong image as the chart, with the same database settings (envFrom)', () => {
    expect(migrate!.image).toBe(`${values.image.repository}:${values.image.tag}`);
    expect(migrate!.envFrom).toEqual(values.envFrom);
    expect(migrate!.env).toEqual([{ name: 'KONG_DATABASE', value: values.env.database }]);
  });

  it('is a valid pod spec: mounts refer to userDefinedVolumes, no probes, read-only root works (/tmp is a volume)', () => {
    const dep = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'kong' },
      spec: {
        selector: { matchLabels: { app: 'kong' } },
        template: { metadata: { labels: { app: 'kong' } }, spec: { initContainers: values.deployment.initContainers, containers: [{ name: 'proxy', image: 'kong:3.7.1' }], volumes: values.deployment.userDefinedVolumes } },
      },
    };
    expect(validateWorkloads(stringify(dep))).toBe(1);
    expect(migrate!.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(migrate!.volumeMounts.map((m: Obj) => m.mountPath)).toContain('/tmp');
  });
});

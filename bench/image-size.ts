/**
 * Benchmark 5: the image's size, uncompressed (what `docker images` shows) and compressed
 * (`docker save IMAGE | gzip -c | wc -c`, about what a registry stores and a node pulls), with the
 * baselines measured in the same run: the base image alone, and Node's binary as the Node image
 * ships it (unstripped) beside the one in our image (stripped).
 * Needs a Docker engine and the images from `.ci/docker.sh up`; otherwise it says so and measures
 * nothing. Standalone: `npx tsx bench/image-size.ts` prints the section.
 */
import { execa } from 'execa';

const IMAGE = process.env.KDI_IMAGE ?? 'kong-db-init:ci';
const BASE = process.env.KDI_BASE_IMAGE ?? 'kdi-standin/distroless-cc:nonroot';
const NODE_IMAGE = process.env.KDI_NODE_IMAGE ?? 'kdi-standin/node:24-bookworm-slim';
const TARGET_MB = 50;

const mb = (bytes: number, digits = 1) => (bytes / 1e6).toFixed(digits);

async function sh(script: string, ...args: string[]): Promise<string> {
  const r = await execa('bash', ['-c', `set -o pipefail; ${script}`, 'bash', ...args], { reject: false });
  if (r.exitCode !== 0) throw new Error(`${script}: exit ${r.exitCode}: ${r.stderr}`);
  return r.stdout.trim();
}
const gzBytes = async (image: string) => Number(await sh('docker save "$1" | gzip -c | wc -c', image));
const rawBytes = async (image: string) => Number(await sh('docker image inspect --format "{{.Size}}" "$1"', image));
/** A file from an image (even one without a shell), as a tar stream: its bytes raw and gzipped. */
async function fileBytes(image: string, file: string): Promise<{ raw: number; gz: number }> {
  const id = await sh('docker create "$1" x', image);
  try {
    const raw = Number(await sh('docker cp "$1:$2" - | tar -xO | wc -c', id, file));
    const gz = Number(await sh('docker cp "$1:$2" - | tar -xO | gzip -c | wc -c', id, file));
    return { raw, gz };
  } finally {
    await execa('docker', ['rm', id], { reject: false });
  }
}

export interface ImageSizes {
  rawBytes: number;
  gzBytes: number;
  baseGzBytes: number;
  nodeShipped: { raw: number; gz: number };
  nodeOurs: { raw: number; gz: number };
}

export async function imageSizeBench(): Promise<ImageSizes | string> {
  const info = await execa('docker', ['image', 'inspect', IMAGE, BASE, NODE_IMAGE], { reject: false });
  if (info.exitCode !== 0) return `skipped: no Docker engine or images (${IMAGE}, ${BASE}, ${NODE_IMAGE}); run .ci/docker.sh up`;
  return {
    rawBytes: await rawBytes(IMAGE),
    gzBytes: await gzBytes(IMAGE),
    baseGzBytes: await gzBytes(BASE),
    nodeShipped: await fileBytes(NODE_IMAGE, '/usr/local/bin/node'),
    nodeOurs: await fileBytes(IMAGE, '/opt/kong-db-init/node'),
  };
}

/** The RESULTS.md section. */
export async function imageSizeSection(): Promise<string[]> {
  const s = await imageSizeBench();
  const out = ['## 5. Image size', ''];
  if (typeof s === 'string') return [...out, s];
  out.push(`\`${IMAGE}\` built by \`.ci/docker.sh up\` from the Dockerfile, on \`${BASE}\` (stand-in for gcr.io/distroless/cc-debian12:nonroot).`, '');
  out.push(`| image uncompressed | image compressed (target ≤ ${TARGET_MB} MB) | base alone, compressed | ours above the base, compressed |`);
  out.push('|---|---|---|---|');
  out.push(`| ${mb(s.rawBytes)} MB | ${mb(s.gzBytes, 2)} MB | ${mb(s.baseGzBytes)} MB | ${mb(s.gzBytes - s.baseGzBytes)} MB |`);
  out.push('');
  out.push(`| node binary | uncompressed | compressed |`);
  out.push('|---|---|---|');
  out.push(`| as \`${NODE_IMAGE}\` ships it (baseline) | ${mb(s.nodeShipped.raw)} MB | ${mb(s.nodeShipped.gz)} MB |`);
  out.push(`| in our image (\`strip\`) | ${mb(s.nodeOurs.raw)} MB | ${mb(s.nodeOurs.gz)} MB |`);
  out.push(`| ratio ours / baseline | ${(s.nodeOurs.raw / s.nodeShipped.raw).toFixed(2)} | ${(s.nodeOurs.gz / s.nodeShipped.gz).toFixed(2)} |`);
  out.push('');
  out.push(`MB = 10⁶ bytes. Compressed: \`docker save | gzip -c | wc -c\`. ${s.gzBytes <= TARGET_MB * 1e6 ? 'Within' : 'Over'} the target.`);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) console.log((await imageSizeSection()).join('\n'));

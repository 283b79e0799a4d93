/**
 * GGUF files converted from the test fixtures with the project's own converter, made once per
 * process in a temporary folder.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convert } from '../../src/convert/index.js';

export const FIXTURES_DIR = path.join(__dirname, '..', 'fixtures');
export type Fixture = 'tiny-a' | 'tiny-b';

const made = new Map<string, Promise<string>>();
let dir: string | undefined;

/** The fixture converted to `type` (f32, f16, q8_0, …). */
export function fixtureGguf(name: Fixture, type = 'f32'): Promise<string> {
  const key = `${name}-${type}`;
  let p = made.get(key);
  if (!p) {
    dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-test-models-'));
    const out = path.join(dir, `${key}.gguf`);
    p = convert(path.join(FIXTURES_DIR, name), out, { type }).then(() => out);
    made.set(key, p);
  }
  return p;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type GoldenJson = any;

export function goldenOf(name: Fixture): GoldenJson {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES_DIR, name, 'golden.json'), 'utf8'));
}

/** |a - b| relative to max |b| (the fixtures' logits are large, so tolerances scale with them). */
export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / Math.max(scale, 1e-30);
}

process.on('exit', () => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

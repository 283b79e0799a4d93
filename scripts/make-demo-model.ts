/**
 * Makes ggml-models/xglm-demo-q8_0.gguf, the tiny embedded model the CLI uses when no -m is
 * given: a random-weight XGLM (seeded, so the file is reproducible) with the tiny-b fixture's
 * 8,000-piece SentencePiece vocabulary, made by the project's own generator and converter.
 *
 *   node --import tsx scripts/make-demo-model.ts
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convert, writeRandomCheckpoint } from '../src/convert/index.js';

export const DEMO_SHAPE = { dModel: 64, nLayers: 2, nHeads: 2, ffnDim: 256, vocabSize: 8008, maxPositions: 512 };

async function main(): Promise<void> {
  const root = path.resolve(__dirname, '..');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-demo-'));
  try {
    await writeRandomCheckpoint(work, {
      ...DEMO_SHAPE,
      seed: 20261126,
      baseSpmModel: path.join(root, 'test', 'fixtures', 'tiny-b', 'sentencepiece.bpe.model'),
    });
    const out = path.join(root, 'ggml-models', 'xglm-demo-q8_0.gguf');
    const r = await convert(work, out, { type: 'q8_0', name: 'xglm-demo (random weights)' });
    process.stdout.write(`${path.relative(root, out)}: ${(r.bytes / 1e6).toFixed(1)} MB\n`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`make-demo-model: ${(err as Error).message}\n`);
  process.exit(1);
});

/**
 * The fuzzer's regression corpus (test/fuzz/corpus/<format>/*.bin: every case that ever made
 * a reader, the converter, a tokenizer loader or the native loader fail) and the first cases
 * of each format's fuzz stream, replayed in-process. Each must end in a valid result or an
 * XglmError — the contract `npm run fuzz` checks on 20,000 cases per format.
 */
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FORMATS, type FormatName, makeTarget, prepareSeeds, runCase, SEEDS_DIR } from './fuzz/targets.js';
import { caseOf } from './fuzz/worker.js';

const CORPUS = path.join(__dirname, 'fuzz', 'corpus');
/** Fresh cases per format on top of the corpus: a smoke test of the harness itself. */
const STREAM_CASES = 25;

const seedsDir = SEEDS_DIR;
const ready = prepareSeeds(seedsDir);
const workRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-corpus-'));
test.after.always(() => fs.rmSync(workRoot, { recursive: true, force: true }));

function corpusFiles(format: FormatName): string[] {
  const dir = path.join(CORPUS, format);
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.bin')).sort().map((f) => path.join(dir, f)) : [];
}

const FILE_NAMES: Record<FormatName, string> = {
  gguf: 'case.gguf',
  'gguf-native': 'case.gguf',
  safetensors: 'model.safetensors',
  'pytorch-zip': 'pytorch_model.bin',
  pickle: 'data.pkl',
  spm: 'sentencepiece.bpe.model',
  'tokenizer-json': 'tokenizer.json',
};

for (const format of FORMATS) {
  test(`${format}: regression corpus and the first ${STREAM_CASES} fuzz cases end in a result or an XglmError`, async (t) => {
    await ready;
    const target = makeTarget(format, seedsDir);
    const workDir = fs.mkdtempSync(path.join(workRoot, `${format}-`));
    const ctx = { seedsDir, workDir };
    const outcomes: Record<string, number> = {};
    const files = corpusFiles(format);
    for (const file of files) {
      const outcome = await runCase(target, { bytes: fs.readFileSync(file), fileName: FILE_NAMES[format] }, ctx).catch((err: Error) => {
        t.fail(`${path.relative(CORPUS, file)}: ${err.name}: ${err.message}`);
        return 'failed';
      });
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
    for (let i = 0; i < STREAM_CASES; i++) {
      const outcome = await runCase(target, caseOf(format, target, i), ctx).catch((err: Error) => {
        t.fail(`case ${i}: ${err.name}: ${err.message}`);
        return 'failed';
      });
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
    t.log(`${files.length} corpus files + ${STREAM_CASES} cases: ${JSON.stringify(outcomes)}`);
    t.false('failed' in outcomes);
  });
}

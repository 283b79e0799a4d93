/**
 * Tokenizer throughput: our TypeScript encoder vs Google's `spm_encode` on the same multilingual
 * text (every tokenizer case of a fixture's golden.json, one line each, repeated to a few MB).
 *
 *   node --import tsx bench/tokenizer.ts [--mb 4] [--fixture tiny-b] [--model M.model] [--text FILE]
 *                                        [--spm /usr/bin/spm_encode] [--runs 3]
 *
 * --model runs another SentencePiece model (e.g. the real XGLM sentencepiece.bpe.model) on the
 * same text; --text adds the lines of a UTF-8 file to the fixture lines.
 *
 * spm_encode is timed on a file (ids to /dev/null) minus the time of the same command on an empty
 * file (process start + model load). Our side is timed after a warm-up pass, one encode() per line,
 * like spm_encode; spm_encode's time includes formatting its output. The ids of every line are
 * compared afterwards (not timed) and the number of differing lines is printed (expected: 0).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spmIdToXglmId, Tokenizer } from '../src/tokenizer/index.js';

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '4' },
    fixture: { type: 'string', default: 'tiny-b' },
    spm: { type: 'string', default: '/usr/bin/spm_encode' },
    runs: { type: 'string', default: '3' },
    model: { type: 'string' },
    text: { type: 'string' },
  },
});
const fixtureDir = join(__dirname, '..', 'test', 'fixtures', values.fixture!);
const modelPath = values.model ?? join(fixtureDir, 'sentencepiece.bpe.model');
const targetBytes = Number(values.mb) * 1024 * 1024;
const runs = Math.max(1, Number(values.runs));

const golden = JSON.parse(readFileSync(join(fixtureDir, 'golden.json'), 'utf8')) as { tokenizer: { cases: Array<{ text: string }> } };
const baseLines = golden.tokenizer.cases
  .flatMap((c) => c.text.split(/[\n\r]+/))
  .concat(values.text ? readFileSync(values.text, 'utf8').split(/[\n\r]+/) : [])
  .filter((line) => line.trim().length > 0);
const lines: string[] = [];
let bytes = 0;
while (bytes < targetBytes) {
  for (const line of baseLines) {
    lines.push(line);
    bytes += Buffer.byteLength(line) + 1;
  }
}

function best(fn: () => number): number {
  let min = Infinity;
  for (let i = 0; i < runs; i++) min = Math.min(min, fn());
  return min;
}

const tokenizer = Tokenizer.fromSentencePiece(new Uint8Array(readFileSync(modelPath)));
let ourTokens = 0;
for (const line of lines.slice(0, 2000)) tokenizer.encode(line); // warm-up
const ourSeconds = best(() => {
  const t0 = process.hrtime.bigint();
  let n = 0;
  for (const line of lines) n += tokenizer.encode(line, { addPrefixToken: false }).length;
  ourTokens = n;
  return Number(process.hrtime.bigint() - t0) / 1e9;
});

let spmSeconds = NaN;
let spmTokens = NaN;
let differingLines = NaN;
if (existsSync(values.spm!)) {
  const dir = mkdtempSync(join(tmpdir(), 'xglm-bench-'));
  try {
    const input = join(dir, 'input.txt');
    const empty = join(dir, 'empty.txt');
    writeFileSync(input, lines.join('\n') + '\n');
    writeFileSync(empty, '');
    const run = (file: string, output: string): number => {
      const t0 = process.hrtime.bigint();
      const r = spawnSync(values.spm!, [`--model=${modelPath}`, '--output_format=id', `--input=${file}`, `--output=${output}`]);
      if (r.status !== 0) throw new Error(`spm_encode failed: ${r.stderr}`);
      return Number(process.hrtime.bigint() - t0) / 1e9;
    };
    const startup = best(() => run(empty, '/dev/null'));
    spmSeconds = best(() => run(input, '/dev/null')) - startup;
    const ids = join(dir, 'ids.txt');
    run(input, ids);
    const rows = readFileSync(ids, 'utf8').split('\n');
    spmTokens = 0;
    differingLines = 0;
    lines.forEach((line, i) => {
      const spmIds = rows[i]!.length > 0 ? rows[i]!.split(' ').map((id) => spmIdToXglmId(Number(id))) : [];
      spmTokens += spmIds.length;
      if (spmIds.join(' ') !== tokenizer.encode(line, { addPrefixToken: false }).join(' ')) differingLines++;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const mb = bytes / 1024 / 1024;
console.log(`model: ${modelPath} (${tokenizer.vocabSize} ids)`);
console.log(`text: ${lines.length} lines, ${mb.toFixed(2)} MB UTF-8 (fixture ${values.fixture}${values.text ? ` + ${values.text}` : ''}, ${baseLines.length} distinct lines)`);
console.log(`xglm-node : ${ourTokens} tokens in ${ourSeconds.toFixed(3)} s = ${(ourTokens / ourSeconds / 1e6).toFixed(2)} M tokens/s, ${(mb / ourSeconds).toFixed(2)} MB/s`);
if (Number.isFinite(spmSeconds)) {
  console.log(`spm_encode: ${spmTokens} tokens in ${spmSeconds.toFixed(3)} s = ${(spmTokens / spmSeconds / 1e6).toFixed(2)} M tokens/s (startup subtracted)`);
  console.log(`ratio (ours / spm_encode throughput): ${(spmSeconds / ourSeconds).toFixed(2)}x`);
  console.log(`lines whose ids differ from spm_encode: ${differingLines}`);
} else {
  console.log(`spm_encode not found at ${values.spm}; no ratio`);
}

/**
 * The time of one graph evaluation of a small batch, as a batched decode step or a short
 * scoring prefill makes it: after each of N sequences has a 64-token prompt cached, one token
 * per sequence at its next position (`--shape decode`, every row with logits, as N concurrent
 * streams need), or N tokens of one sequence (`--shape prefill`, logits for the last only).
 * Alternates processes under environment A and B (e.g. `--b XGLM_KERNELS=ggml`, ggml's own nodes
 * only) per N, and prints the medians of each and the median of the pairwise ratios A ÷ B
 * (ratios of times: below 1, A is faster).
 *
 *   node --import tsx bench/step.ts [--model FILE] [--n 1,2,4,8,16,24,32] [--shape decode|prefill]
 *     [--logits all|last] [--a NAME=VALUE[,…]] [--b NAME=VALUE[,…]] [--pairs 3] [--steps 8] [--threads 2]
 *
 * --logits overrides the shape's logits rows (decode: all, prefill: last), e.g. to see what the
 * logits rows of a batched step cost.
 *
 * The model defaults to the 564M-shape q4_0 file of `npm run bench` (.bench-cache/).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { benchPromptIds } from '../src/cli/bench.js';
import { openEngineModel } from '../src/engine/model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(__dirname, '..', '.bench-cache', 'xglm-564m-random-q4_0.gguf') },
    n: { type: 'string', default: '1,2,4,8,16,24,32' },
    shape: { type: 'string', default: 'decode' },
    logits: { type: 'string', default: '' },
    a: { type: 'string', default: '' },
    b: { type: 'string', default: 'XGLM_KERNELS=ggml' },
    pairs: { type: 'string', default: '3' },
    steps: { type: 'string', default: '8' },
    threads: { type: 'string', default: '2' },
    child: { type: 'string' },
  },
});

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
const PROMPT = 64;

/** In a child: the median ms of `steps` evaluations of the batch shape with n tokens. */
async function measure(n: number): Promise<number> {
  const model = await openEngineModel(values.model);
  const ctx = await model.createContext({ contextSize: 4096, batchSize: 512, outputsPerBatch: 64, threads: Number(values.threads) });
  const steps = Number(values.steps);
  const decode = values.shape === 'decode';
  const seqs = decode ? n : 1;
  for (let s = 0; s < seqs; s++) {
    const ids = benchPromptIds(PROMPT, model.hparams.nVocab, s);
    await ctx.evaluate({ tokens: ids, positions: ids.map((_, i) => i), seqIds: ids.map(() => s) });
  }
  const times: number[] = [];
  let pos = PROMPT;
  for (let k = 0; k < steps + 1; k++) {
    const tokens = benchPromptIds(n, model.hparams.nVocab, 1000 + k);
    const positions = decode ? tokens.map(() => pos) : tokens.map((_, i) => pos + i);
    const seqIds = decode ? tokens.map((_, i) => i) : tokens.map(() => 0);
    const t0 = performance.now();
    const logits = values.logits === 'all' || values.logits === 'last' ? values.logits : decode ? 'all' : 'last';
    await ctx.evaluate({ tokens, positions, seqIds, logits });
    if (k > 0) times.push(performance.now() - t0);  // the first builds the graph
    pos += decode ? 1 : n;
  }
  ctx.dispose();
  model.dispose();
  return median(times);
}

function envOf(spec: string): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const kv of spec.split(',').filter(Boolean)) {
    const i = kv.indexOf('=');
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

async function main(): Promise<void> {
  if (values.child) {
    process.stdout.write(`${await measure(Number(values.child))}\n`);
    return;
  }
  const args = process.argv.slice(2);
  console.log(`shape ${values.shape}; A [${values.a || 'as is'}] vs B [${values.b}]; ms per evaluation, medians of ${values.pairs} alternating pairs`);
  for (const n of values.n.split(',').map(Number)) {
    const a: number[] = [];
    const b: number[] = [];
    for (let p = 0; p < Number(values.pairs); p++) {
      // alternate which side goes first, so a drift of the machine favours neither
      const order = p % 2 === 0 ? ([[values.a, a], [values.b, b]] as const) : ([[values.b, b], [values.a, a]] as const);
      for (const [spec, into] of order) {
        const out = execFileSync(process.execPath, [...process.execArgv, __filename, ...args, '--child', String(n)], { env: envOf(spec), encoding: 'utf8' });
        into.push(Number(out.trim()));
      }
    }
    const ratio = median(a.map((x, i) => x / b[i]!));
    console.log(JSON.stringify({ n, a_ms: +median(a).toFixed(2), b_ms: +median(b).toFixed(2), a_over_b: +ratio.toFixed(3) }));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

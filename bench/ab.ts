/**
 * A/B of one native setting on decode speed: alternates processes of bench/ours-runner.ts with
 * environment A and environment B (e.g. XGLM_NO_CUSTOM_ATTN=1), on a cached 564M-shape model of
 * `npm run bench`, and prints both series, their medians and the median of the pairwise ratios.
 * On a shared VM whose speed drifts from minute to minute, only alternating pairs compare; the
 * order within a pair alternates too (A then B, then B then A, …), as in `npm run bench`, so a
 * drift within a pair favours neither side.
 *
 *   node --import tsx bench/ab.ts --a XGLM_NO_HUGE_PAGES=0 --b XGLM_NO_HUGE_PAGES=1 [--type q4_0] [--pairs 6] [--tokens 128] [--threads 2]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cpuInfo, describeCpu } from './cpu.js';

const { values } = parseArgs({
  options: {
    a: { type: 'string', default: '' },
    b: { type: 'string', default: '' },
    type: { type: 'string', default: 'q4_0' },
    pairs: { type: 'string', default: '6' },
    tokens: { type: 'string', default: '128' },
    threads: { type: 'string', default: '2' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log('usage: node --import tsx bench/ab.ts --a NAME=VALUE[,NAME=VALUE] --b NAME=VALUE[,…] [--type q4_0|q4_k_m|q8_0|f16] [--pairs N] [--tokens N] [--threads N]');
  process.exit(0);
}

const root = path.join(__dirname, '..');
const model = path.join(root, '.bench-cache', `xglm-564m-random-${values.type}.gguf`);
if (!fs.existsSync(model)) {
  console.error(`${model} is missing: run \`npm run bench\` once (it generates and caches the models)`);
  process.exit(1);
}

function env(spec: string): Record<string, string> {
  return Object.fromEntries(spec.split(',').filter(Boolean).map((kv) => {
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`expected NAME=VALUE, got ${kv}`);
    return [kv.slice(0, i), kv.slice(i + 1)];
  }));
}

const cfg = JSON.stringify({ modelPath: model, threads: Number(values.threads), prompts: [], decode: Number(values.tokens), ttftPrompt: 64, nCtx: 1024 });
function decodeTps(extra: Record<string, string>): number {
  const out = execFileSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'ours-runner.ts'), cfg], {
    cwd: root,
    env: { ...process.env, ...extra },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return (JSON.parse(out.trim().split('\n').pop()!) as { decode_tps: number }).decode_tps;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

console.log(`CPU: ${describeCpu(cpuInfo())}`);
const a: number[] = [];
const b: number[] = [];
for (let i = 0; i < Number(values.pairs); i++) {
  if (i % 2 === 0) {
    a.push(decodeTps(env(values.a!)));
    b.push(decodeTps(env(values.b!)));
  } else {
    b.push(decodeTps(env(values.b!)));
    a.push(decodeTps(env(values.a!)));
  }
  console.log(`pair ${i + 1} (${i % 2 === 0 ? 'A first' : 'B first'}): A ${a[i]!.toFixed(1)} t/s, B ${b[i]!.toFixed(1)} t/s`);
}
console.log(`A [${values.a}] median ${median(a).toFixed(2)} t/s`);
console.log(`B [${values.b}] median ${median(b).toFixed(2)} t/s`);
console.log(`A/B: median of the pairwise ratios ${median(a.map((x, i) => x / b[i]!)).toFixed(3)}`);

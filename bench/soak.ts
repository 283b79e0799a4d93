/**
 * Soak (npm run soak): 2,000 generate and score calls on one context, then 200 load/dispose
 * cycles of a model (each with a context and a short generation), measuring resident memory
 * after a warm-up. A leak of a few KB per call shows as megabytes here.
 *
 *   npm run soak -- [--calls 2000] [--cycles 200] [--model file.gguf] [--limit-mb 10] [--json out.json]
 *
 * Default model: the tiny-a fixture converted to f16 with the project's converter.
 * Exit code 1 when RSS grew by --limit-mb or more in either phase.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { convert } from '../src/convert/index.js';
import { loadModel } from '../src/index.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

// V8 grows its young generation adaptively (semi-spaces of 1 to 16 MB) at some point of a long
// run, which moves RSS by up to 32 MB with no leak at all. The soak runs with it at full size
// from the start, so what grows is what the code keeps (JS heap or native).
const SEMI_SPACE_FLAGS = ['--min-semi-space-size=16', '--max-semi-space-size=16'];
if (!SEMI_SPACE_FLAGS.every((f) => process.execArgv.includes(f))) {
  const r = spawnSync(process.execPath, [...process.execArgv, ...SEMI_SPACE_FLAGS, __filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const CALLS = Number(option('calls', '2000'));
const CYCLES = Number(option('cycles', '200'));
const LIMIT_MB = Number(option('limit-mb', '10'));

/** RSS in MB once garbage is collected and freed pages have had a moment to go back. */
async function settledRssMb(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  return process.memoryUsage.rss() / 2 ** 20;
}

/** Where the memory is: the JS heap, buffers outside it, and the rest (native allocations). */
function memoryMb(): { rss: number; heapUsed: number; heapTotal: number; external: number } {
  const m = process.memoryUsage();
  const mb = (n: number) => Math.round((n / 2 ** 20) * 10) / 10;
  return { rss: mb(m.rss), heapUsed: mb(m.heapUsed), heapTotal: mb(m.heapTotal), external: mb(m.external) };
}

const PROMPTS = [
  'The capital of France is',
  'Once upon a time',
  'Le chat est sur la table et',
  'In 1492, Columbus',
  '東京は日本の',
  'Die Katze schläft auf dem',
];

async function main(): Promise<void> {
  let file = option('model', '');
  let tmp: string | undefined;
  if (!file) {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-soak-'));
    file = path.join(tmp, 'tiny-a-f16.gguf');
    await convert(path.join(__dirname, '..', 'test', 'fixtures', 'tiny-a'), file, { type: 'f16', threads: 1 });
  }
  const report: Record<string, unknown> = { model: path.basename(file), node: process.version, calls: CALLS, cycles: CYCLES };

  // Phase 1: one context, many calls
  const model = await loadModel(file);
  const ctx = await model.createContext({ contextSize: 128, threads: 1 });
  let generated = 0;
  let scored = 0;
  const call = async (i: number): Promise<void> => {
    const prompt = PROMPTS[i % PROMPTS.length]!;
    if (i % 2 === 0) {
      const ac = new AbortController();
      const r = await ctx.generate(prompt, { maxTokens: 16, temperature: 0.8, seed: i, stopAtEos: false, signal: ac.signal, onToken: () => i % 10 === 0 && ac.abort() });
      generated += r.tokens.length;
    } else {
      const r = await ctx.score([prompt, `${prompt} ${PROMPTS[(i + 1) % PROMPTS.length]}`]);
      scored += r.length;
    }
  };
  for (let i = 0; i < 100; i++) await call(i); // warm-up: caches, JIT, allocator arenas
  const callsBefore = await settledRssMb();
  const samples: Array<ReturnType<typeof memoryMb>> = [];
  const t0 = performance.now();
  for (let i = 0; i < CALLS; i++) {
    await call(i);
    if (i % 200 === 199) samples.push(memoryMb());
  }
  const callsAfter = await settledRssMb();
  report.callsPhase = {
    calls: CALLS,
    generateCalls: CALLS / 2,
    scoreCalls: CALLS / 2,
    tokensGenerated: generated,
    textsScored: scored,
    seconds: +((performance.now() - t0) / 1000).toFixed(1),
    rssBeforeMb: +callsBefore.toFixed(1),
    rssAfterMb: +callsAfter.toFixed(1),
    growthMb: +(callsAfter - callsBefore).toFixed(2),
    memoryEvery200CallsMb: samples,
    memoryAfterMb: memoryMb(),
  };
  await model.dispose();

  // Phase 2: load/dispose cycles
  const cycle = async (): Promise<void> => {
    const m = await loadModel(file);
    const c = await m.createContext({ contextSize: 64, threads: 1 });
    await c.generate('Hello', { maxTokens: 4, temperature: 0 });
    await m.dispose();
  };
  // warm-up: malloc arenas of the context threads, glibc's cache of thread stacks and V8's
  // buffers reach their working size in the first few dozen cycles (flat from there on)
  for (let i = 0; i < 50; i++) await cycle();
  const cyclesBefore = await settledRssMb();
  const t1 = performance.now();
  const cycleSamples: Array<ReturnType<typeof memoryMb>> = [];
  for (let i = 0; i < CYCLES; i++) {
    await cycle();
    if (i % 50 === 49) cycleSamples.push(memoryMb());
  }
  const cyclesAfter = await settledRssMb();
  report.loadPhase = {
    cycles: CYCLES,
    seconds: +((performance.now() - t1) / 1000).toFixed(1),
    rssBeforeMb: +cyclesBefore.toFixed(1),
    rssAfterMb: +cyclesAfter.toFixed(1),
    growthMb: +(cyclesAfter - cyclesBefore).toFixed(2),
    memoryEvery50CyclesMb: cycleSamples,
    memoryAfterMb: memoryMb(),
  };
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });

  const growth = Math.max((report.callsPhase as { growthMb: number }).growthMb, (report.loadPhase as { growthMb: number }).growthMb);
  report.limitMb = LIMIT_MB;
  report.pass = growth < LIMIT_MB;
  const json = JSON.stringify(report, null, 2);
  process.stdout.write(`${json}\n`);
  const out = option('json', '');
  if (out) fs.writeFileSync(out, `${json}\n`);
  process.exitCode = report.pass ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`soak: ${(err as Error).stack}\n`);
  process.exit(2);
});

/**
 * Engine benchmark on the full facebook/xglm-564M shape with random weights: load time, RSS
 * after load and after decoding (against file size + 64 MiB), prefill and decode speed, with
 * and without ggml's repacked CPU weight layout.
 *
 *   node --import tsx bench/engine-564m.ts [--type q4_0] [--threads N] [--prompt 128] [--decode 32]
 *                                           [--cache DIR] [--json]
 *
 * The random checkpoint and its GGUF are made once into .bench-cache/ (gitignored; shared
 * with bench/convert.ts) and reused. Each measured load runs in its own child process, so
 * that its RSS is its own.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { SAMPLER_OFF } from '../src/sampler.js';
import { XGLM_564M_SHAPE, convert, writeRandomCheckpoint } from '../src/convert/index.js';
import { openEngineModel } from '../src/engine/model.js';
import { packageRoot } from '../src/paths.js';

interface RunResult {
  useRepack: boolean;
  fileMb: number;
  loadMs: number;
  rssAfterLoadMb: number;
  rssAfterDecodeMb: number;
  ownedMb: number;
  prefillTps: number;
  decodeTps: number;
  threads: number;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

/** Resident set size now (VmRSS), in MiB. */
function rssMb(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function child(): Promise<void> {
  const [, , , file, repack, threads, nPrompt, nDecode] = process.argv;
  const useRepack = repack === 'true';
  const fileMb = fs.statSync(file!).size / 2 ** 20;
  let start = performance.now();
  const model = await openEngineModel(file!, { useRepack });
  const loadMs = performance.now() - start;
  const rssAfterLoadMb = rssMb();
  const ctx = await model.createContext({ contextSize: 512, threads: Number(threads) });
  const np = Number(nPrompt);
  const nd = Number(nDecode);
  const tokens = Array.from({ length: np }, (_, i) => 4 + ((i * 7919) % 250000));
  start = performance.now();
  await ctx.evaluate({ tokens, positions: tokens.map((_, i) => i) });
  const prefillMs = performance.now() - start;
  let id = await ctx.sample(np - 1, { ...SAMPLER_OFF, temperature: 0 });
  start = performance.now();
  for (let k = 0; k < nd; k++) {
    await ctx.evaluate({ tokens: [id], positions: [np + k] });
    id = await ctx.sample(0, { ...SAMPLER_OFF, temperature: 0 });
  }
  const decodeMs = performance.now() - start;
  const result: RunResult = {
    useRepack,
    fileMb,
    loadMs,
    rssAfterLoadMb,
    rssAfterDecodeMb: rssMb(),
    ownedMb: model.native.ownedBytes / 2 ** 20,
    prefillTps: (np * 1000) / prefillMs,
    decodeTps: (nd * 1000) / decodeMs,
    threads: ctx.info.threads,
  };
  await ctx.dispose();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function main(): Promise<void> {
  const type = arg('--type', 'q4_0');
  const cache = path.resolve(arg('--cache', path.join(packageRoot, '.bench-cache')));
  const threads = arg('--threads', '0');
  const hfDir = path.join(cache, 'xglm-564m-random-f32');
  // own name: bench/convert.ts writes and deletes its outputs in the same folder
  const gguf = path.join(cache, `engine-564m-random-${type}.gguf`);
  if (!fs.existsSync(path.join(hfDir, 'model.safetensors'))) {
    process.stderr.write(`writing a random 564M checkpoint to ${hfDir} …\n`);
    await writeRandomCheckpoint(hfDir, { ...XGLM_564M_SHAPE });
  }
  if (!fs.existsSync(gguf)) {
    process.stderr.write(`converting to ${type} …\n`);
    await convert(hfDir, gguf, { type });
  }
  const results: RunResult[] = [];
  for (const repack of [true, false]) {
    const out = execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', gguf, String(repack), threads, arg('--prompt', '128'), arg('--decode', '32')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    results.push(JSON.parse(out.trim().split('\n').pop()!) as RunResult);
  }
  if (process.argv.includes('--json')) {
    process.stdout.write(`${JSON.stringify(results)}\n`);
    return;
  }
  for (const r of results) {
    const limit = r.fileMb + 64;
    process.stdout.write(
      `${type} repack=${r.useRepack}: file ${r.fileMb.toFixed(0)} MiB, load ${r.loadMs.toFixed(0)} ms, ` +
        `RSS after load ${r.rssAfterLoadMb.toFixed(0)} MiB, after decode ${r.rssAfterDecodeMb.toFixed(0)} MiB ` +
        `(limit file + 64 = ${limit.toFixed(0)} MiB: ${r.rssAfterLoadMb <= limit ? 'ok' : 'OVER'}), owned ${r.ownedMb.toFixed(0)} MiB, ` +
        `prefill ${r.prefillTps.toFixed(1)} tok/s, decode ${r.decodeTps.toFixed(1)} tok/s, ${r.threads} threads\n`,
    );
  }
}

(process.argv[2] === '--child' ? child() : main()).catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

/**
 * Converter benchmark: a random-weight checkpoint of the real facebook/xglm-564M shape
 * (float32, 2.3 GB, as model.safetensors and as pytorch_model.bin) converted to f16 and q4_0;
 * peak RSS and seconds per run.
 *
 *   node --import tsx bench/convert.ts [--types f16,q4_0] [--weights safetensors,pytorch]
 *                                      [--cache DIR] [--threads N] [--json]
 *
 * The checkpoint is generated once into .bench-cache/ (gitignored) and reused. Each conversion
 * runs in its own child process so that its peak RSS is its own.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { XGLM_564M_SHAPE, convert, writeRandomCheckpoint } from '../src/convert/index.js';
import { packageRoot } from '../src/paths.js';

interface RunResult {
  type: string;
  weights: string;
  seconds: number;
  peakRssMb: number;
  outputMb: number;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

async function child(): Promise<void> {
  const [, , , dir, out, type, threads, weights] = process.argv;
  const start = process.hrtime.bigint();
  await convert(dir!, out!, { type: type!, threads: Number(threads), weights: weights as 'safetensors' | 'pytorch' });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  // maxRSS is in kilobytes (getrusage).
  const result: RunResult = { type: type!, weights: weights!, seconds, peakRssMb: process.resourceUsage().maxRSS / 1024, outputMb: fs.statSync(out!).size / 2 ** 20 };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function main(): Promise<void> {
  const cache = path.resolve(arg('--cache', path.join(packageRoot, '.bench-cache')));
  const types = arg('--types', 'f16,q4_0').split(',');
  const weightsList = arg('--weights', 'safetensors,pytorch').split(',');
  const threads = arg('--threads', String(Math.max(1, (await import('node:os')).availableParallelism())));
  const dir = path.join(cache, 'xglm-564m-random-f32');
  const configFile = path.join(dir, 'config.json');
  if (!fs.existsSync(configFile) || !fs.existsSync(path.join(dir, 'model.safetensors')) || !fs.existsSync(path.join(dir, 'pytorch_model.bin'))) {
    process.stderr.write(`generating a random ${JSON.stringify(XGLM_564M_SHAPE)} checkpoint in ${dir} ...\n`);
    const t0 = Date.now();
    const bytes = await writeRandomCheckpoint(dir, { ...XGLM_564M_SHAPE, seed: 1, dtype: 'F32', formats: ['safetensors', 'pytorch'] });
    const gib = (n = 0) => (n / 2 ** 30).toFixed(2);
    process.stderr.write(
      `  safetensors ${gib(bytes.safetensorsBytes)} GiB, pytorch_model.bin ${gib(bytes.pytorchBytes)} GiB in ${((Date.now() - t0) / 1000).toFixed(1)} s, peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB\n`,
    );
  }
  const results: RunResult[] = [];
  for (const weights of weightsList) for (const type of types) {
    // Own name: other benchmarks keep their GGUFs of this checkpoint in the same folder.
    const out = path.join(cache, `convert-bench-${weights}-${type}.gguf`);
    const line = execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', dir, out, type, threads, weights], {
      cwd: packageRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const result = JSON.parse(line.trim().split('\n').pop()!) as RunResult;
    results.push(result);
    fs.rmSync(out, { force: true });
    if (!process.argv.includes('--json')) {
      process.stdout.write(`${weights.padEnd(12)} → ${type.padEnd(7)} ${result.seconds.toFixed(1).padStart(6)} s   peak RSS ${result.peakRssMb.toFixed(0).padStart(5)} MB   output ${result.outputMb.toFixed(0)} MB   (${threads} threads)\n`);
    }
  }
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ model: '564M-shape random f32 checkpoint', threads: Number(threads), results })}\n`);
}

(process.argv[2] === '--child' ? child() : main()).catch((err: unknown) => {
  process.stderr.write(`bench/convert: ${(err as Error).message}\n`);
  process.exit(1);
});

/**
 * A fuzz child process: runs cases [start, end) of one format and reports each outcome to the
 * parent (scripts/fuzz.ts) over IPC. The case being run is always on disk at
 * <workDir>/current.bin, so when this process crashes or hangs the parent can keep it.
 *
 *   argv[2] = JSON { format, start, end, seedsDir, workDir, rssLimitMb }
 *   messages: { i, outcome } per case; { i, failure, message } for an untyped error or a
 *   runaway allocation (the process then exits, 3, so the parent starts a fresh one).
 */
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../../src/native.js';
import { Rng } from './mutate.js';
import { type FormatName, makeTarget, runCase } from './targets.js';

interface WorkerArgs {
  format: FormatName;
  start: number;
  end: number;
  seedsDir: string;
  workDir: string;
  rssLimitMb: number;
}

/** Rebuilds case `i` of a format exactly as the fuzzer made it. */
export function caseOf(format: FormatName, target: ReturnType<typeof makeTarget>, i: number) {
  const rng = Rng.forCase(format, i);
  return target.mutate(rng, i % target.seedCount);
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]!) as WorkerArgs;
  const send = (m: object) => new Promise<void>((resolve) => process.send!(m, () => resolve()));
  fs.mkdirSync(args.workDir, { recursive: true });
  // the native loader must be there: a missing addon would pass every case as ERR_XGLM_NATIVE_LOAD
  if (args.format === 'gguf-native') native();
  const target = makeTarget(args.format, args.seedsDir);
  const current = path.join(args.workDir, 'current.bin');
  const ctx = { seedsDir: args.seedsDir, workDir: args.workDir, currentFile: current };
  for (let i = args.start; i < args.end; i++) {
    let input;
    try {
      input = caseOf(args.format, target, i);
    } catch (err) {
      // a bug of the mutator, not of the code under test: report it, do not count a crash
      await send({ i, failure: 'harness', message: String((err as Error).stack) });
      continue;
    }
    fs.writeFileSync(current, input.bytes);
    let outcome: string;
    try {
      outcome = await runCase(target, input, ctx);
    } catch (err) {
      const e = err as Error;
      // kept here: the parent copies it after this process has moved on to the next case
      const saved = path.join(args.workDir, `failed-${i}.bin`);
      fs.writeFileSync(saved, input.bytes);
      await send({ i, failure: 'untyped-error', saved, message: `${e?.name}: ${e?.message}\n${e?.stack?.split('\n').slice(1, 4).join('\n')}` });
      continue;
    }
    const peakMb = process.resourceUsage().maxRSS / 1024;
    if (peakMb > args.rssLimitMb) {
      await send({ i, failure: 'memory', message: `peak RSS ${peakMb.toFixed(0)} MB after this case (limit ${args.rssLimitMb} MB)` });
      process.exit(3);
    }
    await send({ i, outcome });
  }
  process.disconnect();
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`fuzz worker: ${(err as Error).stack}\n`);
    process.exit(2);
  });
}

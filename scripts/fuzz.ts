/**
 * The bounded fuzz run (npm run fuzz): mutated GGUF files, safetensors headers,
 * pytorch_model.bin zips and pickles, sentencepiece protos and tokenizer.json files are fed to
 * the TS readers, the converter, the tokenizer loaders and the native loader, in child
 * processes (test/fuzz/worker.ts), so a crash or a hang is detected and recorded instead of
 * taking the run down.
 *
 *   npm run fuzz -- [--cases 20000] [--time 900] [--formats gguf,pickle,...] [--jobs 2]
 *                   [--timeout 10000] [--rss-limit 2048] [--addon build/Sanitize/xglm.node]
 *                   [--report fuzz-report.json] [--no-save]
 *
 * --cases is per format; --time (seconds) bounds the whole run, per format a share of it.
 * Every failing case (untyped error, crash signal, hang, runaway allocation) is copied to
 * test/fuzz/corpus/<format>/, which test/hardening-corpus.test.ts replays in `npm test`.
 * Exit code 1 when anything failed.
 */
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FORMATS, type FormatName, prepareSeeds, SEEDS_DIR } from '../test/fuzz/targets.js';

const root = path.resolve(__dirname, '..');

interface Options {
  cases: number;
  timeSeconds: number;
  formats: FormatName[];
  jobs: number;
  timeoutMs: number;
  rssLimitMb: number;
  addon: string | undefined;
  report: string | undefined;
  save: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { cases: 20_000, timeSeconds: 1800, formats: [...FORMATS], jobs: 2, timeoutMs: 10_000, rssLimitMb: 2048, addon: undefined, report: undefined, save: true };
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`);
      return v;
    };
    switch (argv[i]) {
      case '--cases': o.cases = Number(value()); break;
      case '--time': o.timeSeconds = Number(value()); break;
      case '--jobs': o.jobs = Number(value()); break;
      case '--timeout': o.timeoutMs = Number(value()); break;
      case '--rss-limit': o.rssLimitMb = Number(value()); break;
      case '--addon': o.addon = path.resolve(value()); break;
      case '--report': o.report = value(); break;
      case '--no-save': o.save = false; break;
      case '--formats': {
        const list = value().split(',') as FormatName[];
        for (const f of list) if (!FORMATS.includes(f)) throw new Error(`unknown format ${f} (known: ${FORMATS.join(', ')})`);
        o.formats = list;
        break;
      }
      default:
        throw new Error(`unknown option ${argv[i]}`);
    }
  }
  return o;
}

interface FormatStats {
  cases: number;
  outcomes: Record<string, number>;
  untyped: number;
  crashes: number;
  hangs: number;
  memory: number;
  /** Cases the mutator itself failed to make (a bug of the harness). */
  harness: number;
  seconds: number;
  failures: Array<{ case: number; kind: string; message: string; saved?: string }>;
}

/** Runs cases [start, end) of a format in child processes, restarting after each crash or hang. */
async function runRange(format: FormatName, start: number, end: number, deadline: number, o: Options, seedsDir: string, job: number, stats: FormatStats): Promise<void> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), `xglm-fuzz-${format}-${job}-`));
  const corpusDir = path.join(root, 'test', 'fuzz', 'corpus', format);
  const keep = (i: number, kind: string, message: string, savedByChild?: string) => {
    const entry: FormatStats['failures'][number] = { case: i, kind, message };
    const current = savedByChild ?? path.join(workDir, 'current.bin');
    if (o.save && kind !== 'harness' && fs.existsSync(current)) {
      fs.mkdirSync(corpusDir, { recursive: true });
      entry.saved = path.join(corpusDir, `${kind}-${i}.bin`);
      fs.copyFileSync(current, entry.saved);
    }
    stats.failures.push(entry);
    process.stderr.write(`fuzz: ${format} case ${i}: ${kind}: ${message.split('\n')[0]}\n`);
  };
  let next = start;
  try {
    while (next < end && Date.now() < deadline) {
      const env = { ...process.env, ...(o.addon ? { XGLM_ADDON_PATH: o.addon } : {}) };
      const args = { format, start: next, end, seedsDir, workDir, rssLimitMb: o.rssLimitMb };
      const child: ChildProcess = fork(path.join(root, 'test', 'fuzz', 'worker.ts'), [JSON.stringify(args)], {
        execArgv: ['--import', 'tsx', '--max-old-space-size=1024'],
        env,
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-4000);
      });
      let last = Date.now();
      let hung = false;
      const timer = setInterval(() => {
        const limit = next === args.start ? o.timeoutMs + 30_000 : o.timeoutMs; // first case includes startup
        if (Date.now() - last > limit) {
          hung = true;
          child.kill('SIGKILL');
        } else if (Date.now() > deadline) {
          child.kill('SIGTERM');
        }
      }, 250);
      child.on('message', (m: { i: number; outcome?: string; failure?: string; message?: string; saved?: string }) => {
        last = Date.now();
        next = m.i + 1;
        stats.cases++;
        if (m.outcome) stats.outcomes[m.outcome] = (stats.outcomes[m.outcome] ?? 0) + 1;
        if (m.failure === 'untyped-error') stats.untyped++;
        if (m.failure === 'memory') stats.memory++;
        if (m.failure === 'harness') stats.harness++;
        if (m.failure) keep(m.i, m.failure, m.message ?? '', m.saved);
      });
      const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
      clearInterval(timer);
      if (next >= end || Date.now() >= deadline) break;
      if (code === 3) continue; // reported a runaway allocation, restart after that case
      // died in the middle of case `next`: a crash or a hang
      stats.cases++;
      if (hung) {
        stats.hangs++;
        keep(next, 'hang', `no result within ${o.timeoutMs} ms`);
      } else {
        stats.crashes++;
        keep(next, 'crash', `exit code ${code}, signal ${signal}; stderr: ${stderr.trim().split('\n').slice(-6).join(' | ')}`);
      }
      next++;
    }
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const seedsDir = SEEDS_DIR;
  await prepareSeeds(seedsDir);
  if (!o.addon && o.formats.includes('gguf-native')) {
    // A private copy: a rebuild of build/Release during the run must not change what is fuzzed.
    o.addon = path.join(seedsDir, `xglm-${process.pid}.node`);
    fs.copyFileSync(path.join(root, 'build', 'Release', 'xglm.node'), o.addon);
    process.on('exit', () => fs.rmSync(o.addon!, { force: true }));
  }
  const started = Date.now();
  const end = started + o.timeSeconds * 1000;
  const report: Record<string, FormatStats> = {};
  process.stderr.write(`fuzz: ${o.cases} cases per format, ${o.jobs} jobs, at most ${o.timeSeconds} s; formats ${o.formats.join(', ')}${o.addon ? `; addon ${o.addon}` : ''}\n`);
  for (const [n, format] of o.formats.entries()) {
    const stats: FormatStats = { cases: 0, outcomes: {}, untyped: 0, crashes: 0, hangs: 0, memory: 0, harness: 0, seconds: 0, failures: [] };
    report[format] = stats;
    const t0 = Date.now();
    // a fair share of the time left, with slack for formats that are slower than others
    const deadline = Math.min(end, t0 + ((end - t0) / (o.formats.length - n)) * 1.5);
    const chunk = Math.ceil(o.cases / o.jobs);
    await Promise.all(
      Array.from({ length: o.jobs }, (_, j) => runRange(format, j * chunk, Math.min(o.cases, (j + 1) * chunk), deadline, o, seedsDir, j, stats)),
    );
    stats.seconds = (Date.now() - t0) / 1000;
    const top = Object.entries(stats.outcomes).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
    process.stderr.write(
      `fuzz: ${format.padEnd(14)} ${String(stats.cases).padStart(6)} cases in ${stats.seconds.toFixed(0)} s: ` +
        `${stats.untyped} untyped errors, ${stats.crashes} crashes, ${stats.hangs} hangs, ${stats.memory} runaway allocations${stats.harness ? `, ${stats.harness} harness errors` : ''} (${top})\n`,
    );
  }
  const bad = Object.values(report).reduce((n, s) => n + s.untyped + s.crashes + s.hangs + s.memory, 0);
  const short = Object.entries(report).filter(([, s]) => s.cases < o.cases).map(([f]) => f);
  if (o.report) fs.writeFileSync(o.report, JSON.stringify({ options: o, report }, null, 2));
  process.stderr.write(`fuzz: ${bad === 0 ? 'no failures' : `${bad} failures (kept in test/fuzz/corpus/)`}${short.length ? `; time ran out before ${o.cases} cases for ${short.join(', ')}` : ''}\n`);
  process.exitCode = bad === 0 ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`fuzz: ${(err as Error).stack}\n`);
  process.exit(2);
});

/**
 * `npm run bench`: xglm-node against node-llama-cpp@3.21.1 and against llama.cpp's llama-bench
 * (the same llama.cpp commit, built here with clang-19 and -march=native: bench/llama-cpp.ts) on
 * random-weight models of the exact facebook/xglm-564M shape, side by side on this machine, and
 * against the machine's limits. Writes docs/benchmarks/<cpu>.{json,svg} and this CPU's results
 * block of docs/benchmarks.md (one block per CPU, keyed by bench/cpu.ts's key; others are kept).
 *
 *   npm run bench [-- --types f16,q8_0,q4_0,q4_k_m] [--threads 1,2] [--reps 3] [--decode 128]
 *                    [--prompts 32,64,128,256,512] [--copa 200] [--no-peer] [--no-llama-cpp] [--prepare]
 *
 * Models are generated once into .bench-cache/ (gitignored): a float32 checkpoint by the
 * project's generator, our GGUFs by its converter, and the peer's GPT-2-architecture GGUFs
 * with identical tensors (bench/peer-gguf.ts). node-llama-cpp is installed on demand into
 * .bench-cache/peer/, never as a dependency; llama-bench is built from the llama.cpp source
 * node-llama-cpp carries, into .bench-cache/llama.cpp/ (`--prepare` makes the models and installs
 * both peers only). Every measurement runs in its own child process; the implementations take
 * turns, repetition by repetition, in an order that reverses every repetition.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { XGLM_564M_SHAPE, chooseTensorType, convert, parseOutputType, writeRandomCheckpoint } from '../src/convert/index.js';
import { readGgufHeader } from '../src/gguf/index.js';
import { native } from '../src/native.js';
import { benchPromptIds } from '../src/cli/bench.js';
import { packageRoot } from '../src/paths.js';
import { cpuInfo, describeCpu } from './cpu.js';
import { ensureLlamaCpp, llamaCppBuildFlags, runLlamaBench, type LlamaCppResult } from './llama-cpp.js';
import { toGpt2Gguf } from './peer-gguf.js';
import { writeReport, type BenchReport, type ImplResult } from './report.js';

const PEER = 'node-llama-cpp@3.21.1';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}
const list = (s: string) => s.split(',').filter(Boolean);
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

const cache = path.join(packageRoot, '.bench-cache');
const types = list(arg('types', 'f16,q8_0,q4_0,q4_k_m'));
const threadsList = list(arg('threads', '1,2')).map(Number);
const reps = Number(arg('reps', '3'));
const decode = Number(arg('decode', '128'));
const prompts = list(arg('prompts', '32,64,128,256,512')).map(Number);
const copaItems = Number(arg('copa', '200'));
const withPeer = !process.argv.includes('--no-peer');
const withLlamaCpp = !process.argv.includes('--no-llama-cpp');
/** Both peers run the GPT-2-architecture files; llama.cpp's source comes with node-llama-cpp's package. */
const needPeerFiles = withPeer || withLlamaCpp;
const nCtx = 1024;

async function ensureModels(): Promise<void> {
  fs.mkdirSync(cache, { recursive: true });
  const ckpt = path.join(cache, 'xglm-564m-random-f32');
  const need = types.filter((t) => !fs.existsSync(path.join(cache, `xglm-564m-random-${t}.gguf`)));
  if (need.length && !fs.existsSync(path.join(ckpt, 'model.safetensors'))) {
    log(`generating a random-weight checkpoint of the xglm-564M shape in ${path.relative(packageRoot, ckpt)} (2.3 GB)`);
    await writeRandomCheckpoint(ckpt, { ...XGLM_564M_SHAPE, seed: 1, dtype: 'F32' });
  }
  for (const t of types) {
    const ours = path.join(cache, `xglm-564m-random-${t}.gguf`);
    const peer = path.join(cache, `gpt2-564m-random-${t}.gguf`);
    if (fs.existsSync(ours) && !typesAreCurrent(ours, t)) {
      log(`${path.basename(ours)} was made with an older type mix; converting again`);
      fs.rmSync(ours);
      fs.rmSync(peer, { force: true });
    }
    if (!fs.existsSync(ours)) {
      log(`converting to ${t}`);
      await convert(ckpt, ours, { type: t, weights: 'safetensors' });
    }
    if (needPeerFiles && !fs.existsSync(peer)) {
      log(`writing the peer's GPT-2 file for ${t}`);
      await toGpt2Gguf(ours, peer);
    }
  }
}

/** Whether a cached file has the tensor types today's converter chooses. */
function typesAreCurrent(file: string, type: string): boolean {
  const h = readGgufHeader(file);
  const nLayers = XGLM_564M_SHAPE.nLayers;
  return h.tensors.every((t) => chooseTensorType(parseOutputType(type), t.name, t.dims, nLayers).type === t.type);
}

/** bench/peer-runner.mjs, copied beside the peer's node_modules (where its import resolves). */
let peerRunner = '';
function ensurePeer(): string {
  const dir = path.join(cache, 'peer');
  if (!fs.existsSync(path.join(dir, 'node_modules', 'node-llama-cpp', 'package.json'))) {
    log(`installing ${PEER} into ${path.relative(packageRoot, dir)}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'xglm-bench-peer', private: true }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', PEER], { cwd: dir, stdio: 'inherit' });
  }
  // named after its content: checkouts sharing one peer folder do not overwrite each other's runner
  const runner = fs.readFileSync(path.join(__dirname, 'peer-runner.mjs'));
  peerRunner = path.join(dir, `peer-runner-${createHash('sha256').update(runner).digest('hex').slice(0, 12)}.mjs`);
  fs.writeFileSync(peerRunner, runner);
  return dir;
}

/**
 * The machine's limits come from native/tools/machine-probe.cpp, a diagnostic executable that is
 * not part of the addon: built here on demand as the CMake target xglm-machine-probe of the
 * native build tree (which `npm run build:native` makes; an up-to-date probe builds in
 * milliseconds) into build/Release, then run once per figure, printing one JSON line.
 */
const probeBuildDir = path.join(packageRoot, 'build', 'cmake-native');
const probePath = path.join(packageRoot, 'build', 'Release', 'xglm-machine-probe');
function buildMachineProbe(): void {
  const cacheFile = path.join(probeBuildDir, 'CMakeCache.txt');
  if (!fs.existsSync(cacheFile)) {
    throw new Error(`${probeBuildDir} is missing: run \`npm run build:native\` once (the machine probe is built in its CMake tree)`);
  }
  // a build tree copied from another checkout builds that checkout's sources into its own
  // folder: compile this checkout's probe directly instead (one file, no dependencies)
  const home = /^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$/m.exec(fs.readFileSync(cacheFile, 'utf8'))?.[1];
  if (home && path.resolve(home) !== path.resolve(packageRoot)) {
    fs.mkdirSync(path.dirname(probePath), { recursive: true });
    execFileSync('c++', ['-O3', '-std=c++17', '-pthread', path.join(packageRoot, 'native', 'tools', 'machine-probe.cpp'), '-o', probePath], { stdio: ['ignore', 'ignore', 'inherit'] });
    return;
  }
  execFileSync('cmake', ['--build', probeBuildDir, '--target', 'xglm-machine-probe'], { stdio: ['ignore', 'ignore', 'inherit'] });
}
function machineProbe(...args: (string | number)[]): Record<string, number | string> {
  const out = JSON.parse(execFileSync(probePath, args.map(String), { encoding: 'utf8' }).trim().split('\n').pop()!) as Record<string, number | string>;
  if (typeof (out.bandwidth_gbs ?? out.gflops) !== 'number') throw new Error(`xglm-machine-probe ${args.join(' ')}: ${String(out.error)}`);
  return out;
}
const measureReadBandwidth = (bytes: number, threads: number, repetitions: number) => machineProbe('bandwidth', bytes, threads, repetitions).bandwidth_gbs as number;
/** FP32 FMA GFLOP/s of the widest vector unit (AVX-512 where present), and with 256-bit code. */
const measurePeakFlops = (threads: number) => {
  const out = machineProbe('flops', threads);
  return { widest: out.gflops as number, isa: String(out.isa ?? 'avx2'), avx2: (out.gflops_avx2 ?? out.gflops) as number };
};

function runChild(cmd: string[], cwd: string): ImplResult {
  const outText = execFileSync(process.execPath, cmd, { cwd, encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(outText.trim().split('\n').pop()!) as ImplResult;
}

/**
 * Weights a prefill token is multiplied with: the matrices of the layers (q/k/v, output, up,
 * down). Prefill computes no logits row (ours: generate with maxTokens 0; node-llama-cpp:
 * evaluateWithoutGeneratingNewTokens; llama-bench pp: the last token's row only), so the
 * 256,008 × 1,024 output matrix is not multiplied, and the token embedding is a row lookup.
 */
function layerWeights(file: string): number {
  let n = 0;
  for (const t of readGgufHeader(file).tensors) if (t.name.startsWith('blk.') && t.dims.length >= 2 && t.dims[1]! > 1) n += t.dims.reduce((a, b) => a * b, 1);
  return n;
}

/** Bytes a decode step reads: every weight, once (the position table: one row). */
function bytesPerToken(file: string): number {
  const h = readGgufHeader(file);
  let bytes = 0;
  for (const t of h.tensors) bytes += t.name === 'position_embd.weight' ? t.byteLength / (t.dims[1] ?? 1) : t.byteLength;
  return bytes;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** COPA-shaped items: a premise and two one-sentence choices, words from a small multilingual list. */
function copaLikeItems(n: number): Array<{ premise: string; choices: string[] }> {
  const words = 'the man woman child house water fire light door window street city river tree dog cat bread book friend morning night rain sun wind stone road car train ship letter song table chair'.split(' ');
  let x = 42;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648), x / 2147483648);
  const sentence = (k: number) => Array.from({ length: k }, () => words[Math.floor(rnd() * words.length)]).join(' ');
  return Array.from({ length: n }, () => ({
    premise: `${sentence(14)}. What was the CAUSE of this?`,
    choices: [`\n${sentence(7)}.`, `\n${sentence(7)}.`],
  }));
}

async function main(): Promise<void> {
  const started = new Date();
  await ensureModels();
  const peerPackageDir = needPeerFiles ? ensurePeer() : undefined;
  const peerDir = withPeer ? peerPackageDir : undefined;
  // before any measurement: the first build takes every core for minutes
  const llamaCpp = withLlamaCpp ? ensureLlamaCpp(cache, peerPackageDir!, log) : undefined;
  if (process.argv.includes('--prepare')) return; // models and peers only
  const addon = native();
  const cpu = cpuInfo();
  log(`CPU: ${describeCpu(cpu)}`);
  log('measuring the machine');
  buildMachineProbe();
  const machine: BenchReport['machine'] = {
    cpu: cpu.modelName,
    cpuInfo: cpu,
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    backend: addon.backendInfo(),
    bandwidthGBs: {},
    peakGflops: {},
    peakGflopsAvx2: {},
    peakIsa: 'avx2',
    loadAverage: { start: os.loadavg()[0]! },
  };
  for (const t of threadsList) {
    machine.bandwidthGBs[t] = measureReadBandwidth(1 << 30, t, 5);
    const peak = measurePeakFlops(t);
    machine.peakGflops[t] = peak.widest;
    machine.peakGflopsAvx2![t] = peak.avx2;
    machine.peakIsa = peak.isa;
  }
  log(`read bandwidth ${JSON.stringify(machine.bandwidthGBs)} GB/s, peak FMA (${machine.peakIsa}) ${JSON.stringify(machine.peakGflops)} GFLOP/s, with 256-bit code ${JSON.stringify(machine.peakGflopsAvx2)}`);

  const report: BenchReport = {
    date: started.toISOString(),
    machine,
    settings: { reps, decode, prompts, nCtx, peer: withPeer ? PEER : undefined, llamaCpp: llamaCpp ? { description: llamaCpp.description, buildFlags: llamaCppBuildFlags(llamaCpp.bench) } : undefined },
    rows: [],
  };
  for (const type of types) {
    const ours = path.join(cache, `xglm-564m-random-${type}.gguf`);
    const peer = path.join(cache, `gpt2-564m-random-${type}.gguf`);
    const perToken = bytesPerToken(ours);
    const weightsPerPrefillToken = layerWeights(ours);
    for (const threads of threadsList) {
      const runs: { ours: ImplResult[]; peer: ImplResult[]; llamaCpp: LlamaCppResult[] } = { ours: [], peer: [], llamaCpp: [] };
      for (let r = 0; r < reps; r++) {
        // the peer's runner takes its token ids from here: one generator for both sides
        const promptIds = benchPromptIds(Math.max(16, 64, ...prompts), XGLM_564M_SHAPE.vocabSize);
        const cfg = { threads, prompts, decode, ttftPrompt: 64, nCtx, vocab: XGLM_564M_SHAPE.vocabSize, promptIds };
        // ours, node-llama-cpp, llama.cpp; then the reverse: drift favours none of them
        const forward = ['ours', 'peer', 'llama.cpp'] as const;
        const order = r % 2 === 0 ? forward : [...forward].reverse();
        for (const who of order) {
          if (who === 'peer' && !peerDir) continue;
          if (who === 'llama.cpp' && !llamaCpp) continue;
          // this VM's read bandwidth drifts from minute to minute: measure it beside each run too
          const bandwidth_gbs = measureReadBandwidth(512 << 20, threads, 3);
          if (who === 'ours') runs.ours.push({ ...runChild(['--import', 'tsx', path.join(__dirname, 'ours-runner.ts'), JSON.stringify({ ...cfg, modelPath: ours })], packageRoot), bandwidth_gbs });
          else if (who === 'peer') runs.peer.push({ ...runChild([peerRunner, JSON.stringify({ ...cfg, modelPath: peer })], peerDir!), bandwidth_gbs });
          else runs.llamaCpp.push({ ...runLlamaBench(llamaCpp!.bench, peer, threads, 512, decode), bandwidth_gbs });
        }
        const last = (xs: Array<{ decode_tps?: number; tg_tps?: number }>) => (xs.at(-1)?.decode_tps ?? xs.at(-1)?.tg_tps)?.toFixed(1);
        log(
          `${type} t=${threads} rep ${r + 1}/${reps}: decode t/s ours ${last(runs.ours)}` +
            (runs.peer.length ? `, node-llama-cpp ${last(runs.peer)}` : '') +
            (runs.llamaCpp.length ? `, llama.cpp ${last(runs.llamaCpp)} (pp512 ${runs.llamaCpp.at(-1)!.pp_tps.toFixed(0)})` : ''),
        );
      }
      report.rows.push({ type, threads, bytesPerToken: perToken, weightsPerPrefillToken, ours: runs.ours, peer: runs.peer, llamaCpp: runs.llamaCpp });
    }
  }

  if (copaItems > 0) {
    const type = types.includes('q4_0') ? 'q4_0' : types[0]!;
    const threads = Math.max(...threadsList);
    log(`scoring ${copaItems} COPA-shaped items (${type}, ${threads} threads)`);
    const copa = copaLikeItems(copaItems);
    const base = { threads, prompts: [], decode: 0, ttftPrompt: 64, nCtx, vocab: XGLM_564M_SHAPE.vocabSize, promptIds: benchPromptIds(64, XGLM_564M_SHAPE.vocabSize) };
    const o = runChild(['--import', 'tsx', path.join(__dirname, 'ours-runner.ts'), JSON.stringify({ ...base, modelPath: path.join(cache, `xglm-564m-random-${type}.gguf`), copa })], packageRoot);
    let peerMs: number | undefined;
    if (peerDir) {
      const p = runChild([peerRunner, JSON.stringify({ ...base, modelPath: path.join(cache, `gpt2-564m-random-${type}.gguf`), scoreTexts: o.score_token_ids })], peerDir);
      peerMs = p.score_ms;
    }
    report.scoring = { type, threads, items: copaItems, scoreEachMs: o.score_ms!, scoreContinuationsMs: o.score_continuations_ms!, chooseMs: o.choose_ms!, chooseAgrees: o.choose_agrees!, peerEvaluateEachMs: peerMs };
  }
  machine.loadAverage!.end = os.loadavg()[0]!;
  writeReport(report, median);
}

main().catch((err) => {
  process.stderr.write(`bench: error: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});

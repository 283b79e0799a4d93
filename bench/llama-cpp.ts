/**
 * The second peer of `npm run bench`: llama.cpp's own `llama-bench`, built on demand from the
 * llama.cpp commit that node-llama-cpp@3.21.1 bundles (its `llama/gitRelease.bundle`), with
 * clang-19 and `-DGGML_NATIVE=ON` (`-march=native`), so it uses everything this CPU has —
 * including ggml's AMX path on CPUs with AMX, which Debian's GCC 12 miscompiles.
 * Never a dependency and never copied into the repository: the clone and its build live in
 * .bench-cache/llama.cpp/ (gitignored), rebuilt only when the bundle's commit or the build
 * settings change. It runs the same GPT-2-architecture GGUF files as node-llama-cpp.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** CMake settings of the build; a change rebuilds (they are part of the stamp). */
export const LLAMA_CPP_CMAKE_FLAGS = [
  '-DCMAKE_BUILD_TYPE=Release',
  '-DGGML_NATIVE=ON',
  '-DLLAMA_CURL=OFF',
  '-DLLAMA_BUILD_TESTS=OFF',
  '-DLLAMA_BUILD_EXAMPLES=OFF',
  '-DLLAMA_BUILD_SERVER=OFF',
];
const COMPILERS = { CC: 'clang-19', CXX: 'clang++-19' };
/** clang-19's OpenMP runtime: llama.cpp builds with OpenMP by default, and without it when it is missing. */
const APT_PACKAGES = ['clang-19', 'libomp-19-dev'];

export interface LlamaCppBuild {
  bench: string;
  commit: string;
  /** How it was built, for the report. */
  description: string;
}

const installed = (pkg: string) => {
  try {
    return execFileSync('dpkg-query', ['-W', '-f', '${Status}', pkg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes('install ok installed');
  } catch {
    return false;
  }
};

/** Installs clang-19 (Debian package) if missing, clones the bundle and builds llama-bench once. */
export function ensureLlamaCpp(cache: string, peerDir: string, log: (s: string) => void): LlamaCppBuild {
  const bundle = path.join(peerDir, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle');
  if (!fs.existsSync(bundle)) throw new Error(`${bundle} is missing: node-llama-cpp's package brings llama.cpp's source as that git bundle`);
  const src = path.join(cache, 'llama.cpp');
  const build = path.join(src, 'build');
  const bench = path.join(build, 'bin', 'llama-bench');
  // the bundle holds one (squashed) commit: its head names the source
  const want = execFileSync('git', ['bundle', 'list-heads', bundle], { encoding: 'utf8' }).trim().split(/\s+/)[0]!;
  if (fs.existsSync(src) && gitHead(src) !== want) {
    log(`${path.relative(process.cwd(), src)} is not at the bundle's commit ${want.slice(0, 10)}: cloning again`);
    fs.rmSync(src, { recursive: true, force: true });
  }
  if (!fs.existsSync(src)) {
    log(`cloning llama.cpp ${want.slice(0, 10)} from node-llama-cpp's bundle into ${src}`);
    execFileSync('git', ['clone', '--quiet', bundle, src], { stdio: ['ignore', 'ignore', 'inherit'] });
    execFileSync('git', ['-c', 'advice.detachedHead=false', 'checkout', '--quiet', want], { cwd: src, stdio: 'inherit' });
  }
  const description = `llama.cpp ${want.slice(0, 10)} (node-llama-cpp@3.21.1's bundle), built with ${COMPILERS.CXX} ${LLAMA_CPP_CMAKE_FLAGS.join(' ')}`;
  const stampFile = path.join(build, 'xglm-bench.stamp');
  const stamp = JSON.stringify({ commit: want, compilers: COMPILERS, flags: LLAMA_CPP_CMAKE_FLAGS });
  if (fs.existsSync(bench) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp) return { bench, commit: want, description };

  const missing = APT_PACKAGES.filter((p) => !installed(p));
  if (missing.length) {
    log(`installing ${missing.join(', ')} (Debian packages) for the llama.cpp build`);
    execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'inherit' });
  }
  log(`building llama-bench with ${COMPILERS.CXX} in ${build} (a few minutes on 2 cores; cached afterwards)`);
  fs.rmSync(stampFile, { force: true });
  const env = { ...process.env, ...COMPILERS };
  execFileSync('cmake', ['-S', src, '-B', build, ...LLAMA_CPP_CMAKE_FLAGS], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync('cmake', ['--build', build, '--target', 'llama-bench', '-j', String(os.availableParallelism())], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  fs.writeFileSync(stampFile, stamp);
  return { bench, commit: want, description };
}

function gitHead(dir: string): string | undefined {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: dir, encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
}

/** One test of llama-bench's JSON output (the fields the report uses). */
interface LlamaBenchTest {
  build_commit: string;
  build_number: number;
  cpu_info: string;
  gpu_info: string;
  backends: string;
  model_type: string;
  n_batch: number;
  n_ubatch: number;
  n_threads: number;
  type_k: string;
  type_v: string;
  flash_attn: boolean | number | string;
  load_mode: string;
  poll: number;
  n_prompt: number;
  n_gen: number;
  avg_ts: number;
  samples_ts: number[];
}

/** One llama-bench process: prefill of `prompt` tokens and decode of `gen` tokens, both flash-attention settings. */
export interface LlamaCppResult {
  /** Tokens/s of the faster flash-attention setting, and which it was. */
  pp_tps: number;
  pp_fa: string;
  tg_tps: number;
  tg_fa: string;
  /** Both settings' figures: { "off": t/s, "on": t/s }. */
  pp_by_fa: Record<string, number>;
  tg_by_fa: Record<string, number>;
  /** Read bandwidth (GB/s) measured just before this run, as for the other two. */
  bandwidth_gbs?: number;
  info: { build_commit: string; cpu_info: string; backends: string; model_type: string; n_batch: number; n_ubatch: number; n_threads: number; type_k: string; type_v: string; load_mode: string; poll: number };
}

const faName = (v: LlamaBenchTest['flash_attn']) => (v === true || v === 1 || v === 'on' || v === '1' ? 'on' : v === false || v === 0 || v === 'off' || v === '0' ? 'off' : String(v));

/**
 * `llama-bench -m MODEL -p PROMPT -n GEN -t THREADS -r 1 -fa 0,1 -o json`: one repetition (after
 * llama-bench's own warm-up run) per call, so bench/index.ts can alternate it with the other
 * implementations run by run; flash attention off and on, the faster of the two kept per test.
 */
export function runLlamaBench(bench: string, model: string, threads: number, prompt: number, gen: number): LlamaCppResult {
  const args = ['-m', model, '-p', String(prompt), '-n', String(gen), '-t', String(threads), '-r', '1', '-fa', '0,1', '-o', 'json'];
  // its shared libraries sit beside it; LD_LIBRARY_PATH finds them if the cache folder moved
  const env = { ...process.env, LD_LIBRARY_PATH: [path.dirname(bench), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') };
  const out = execFileSync(bench, args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'], env });
  const tests = JSON.parse(out) as LlamaBenchTest[];
  const pp = tests.filter((t) => t.n_prompt === prompt && t.n_gen === 0);
  const tg = tests.filter((t) => t.n_prompt === 0 && t.n_gen === gen);
  if (!pp.length || !tg.length) throw new Error(`llama-bench ${args.join(' ')}: no pp${prompt}/tg${gen} results in its output`);
  const best = (xs: LlamaBenchTest[]) => xs.reduce((a, b) => (b.avg_ts > a.avg_ts ? b : a));
  const byFa = (xs: LlamaBenchTest[]) => Object.fromEntries(xs.map((t) => [faName(t.flash_attn), t.avg_ts]));
  const t0 = tests[0]!;
  return {
    pp_tps: best(pp).avg_ts,
    pp_fa: faName(best(pp).flash_attn),
    tg_tps: best(tg).avg_ts,
    tg_fa: faName(best(tg).flash_attn),
    pp_by_fa: byFa(pp),
    tg_by_fa: byFa(tg),
    info: {
      build_commit: t0.build_commit,
      cpu_info: t0.cpu_info,
      backends: t0.backends,
      model_type: t0.model_type,
      n_batch: t0.n_batch,
      n_ubatch: t0.n_ubatch,
      n_threads: t0.n_threads,
      type_k: t0.type_k,
      type_v: t0.type_v,
      load_mode: t0.load_mode,
      poll: t0.poll,
    },
  };
}

/** Which CPU code the build uses: ggml's compile-time feature list (`llama-bench --list-devices` does not say). */
export function llamaCppBuildFlags(bench: string): string | undefined {
  // llama-bench logs "system_info: …" only in verbose mode; the CPU backend's features are in its JSON's `backends`
  // and in the build's CMakeCache (GGML_NATIVE → -march=native), so report the compiler flags the build used.
  const cacheFile = path.join(path.dirname(path.dirname(bench)), 'CMakeCache.txt');
  if (!fs.existsSync(cacheFile)) return undefined;
  const cache = fs.readFileSync(cacheFile, 'utf8');
  const get = (k: string) => new RegExp(`^${k}:[A-Z]+=(.*)$`, 'm').exec(cache)?.[1];
  return [`GGML_NATIVE=${get('GGML_NATIVE') ?? '?'}`, `GGML_OPENMP=${get('GGML_OPENMP') ?? '?'}`, `OpenMP ${get('OpenMP_CXX_FLAGS') ? 'found' : 'not found'}`].join(', ');
}

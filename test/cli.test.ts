/**
 * The `xglm` binary as users and scripts meet it (README.md, “The CLI”): each test spawns
 * bin/xglm.js (run `npm run build:ts` first; `npm test` does) and checks output shapes,
 * values against the fixtures, and exit codes.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { planBenchmark } from '../src/cli/bench.js';
import { backendInfo } from '../src/index.js';
import { startFakeHub } from './helpers/fake-hub.js';
import { FIXTURES_DIR, fixtureGguf, golden, relDiff } from './helpers/fixtures.js';

const BIN = path.join(__dirname, '..', 'bin', 'xglm.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-cli-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function xglm(args: string[], input = '', env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(input);
  });
}

const jsonl = (lines: unknown[]) => lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
const parseLines = (out: string) => out.trim().split('\n').map((l) => JSON.parse(l));

/** A failure must be one `xglm: error:` line, no stack trace, no signal. */
function assertCleanError(t: import('ava').ExecutionContext, r: Run, code: number): void {
  t.is(r.code, code, r.stderr);
  t.is(r.signal, null);
  t.regex(r.stderr, /^xglm: error: .+/m);
  t.notRegex(r.stderr, /\n\s+at .+\(.*:\d+:\d+\)/, 'no stack trace');
}

test('tokenize --jsonl gives the fixture ids', async (t) => {
  const g = golden('tiny-b');
  const cases = g.tokenizer.cases.filter((c) => c.category !== 'special_literal').slice(0, 60);
  const r = await xglm(['tokenize', '-m', await fixtureGguf('tiny-b'), '--jsonl'], jsonl(cases.map((c) => c.text)));
  t.is(r.code, 0, r.stderr);
  t.deepEqual(parseLines(r.stdout).map((l) => l.ids), cases.map((c) => c.ids));
});

test('logprobs --jsonl: shapes and values equal the fixture (F32 KV)', async (t) => {
  const g = golden('tiny-a');
  const p = g.prompts[0];
  const r = await xglm(['logprobs', '-m', await fixtureGguf('tiny-a'), '--top', '5', '--kv-type', 'f32', '--jsonl'], jsonl([p.text]));
  t.is(r.code, 0, r.stderr);
  const [out] = parseLines(r.stdout);
  t.deepEqual(out.ids, p.ids);
  t.is(out.logprobs.length, p.ids.length - 1);
  t.is(out.top.length, p.ids.length);
  for (const ref of p.top5) {
    t.deepEqual(out.top[ref.pos].map((x: number[]) => x[0]), ref.ids);
    t.true(relDiff(out.top[ref.pos].map((x: number[]) => x[1]), ref.logprobs) <= 1e-4);
  }
});

test('generate --temp 0 equals the fixture greedy continuation; --json shape', async (t) => {
  const g = golden('tiny-b');
  const p = g.prompts[1];
  const model = await fixtureGguf('tiny-b');
  const n = String(p.greedy.eos_index ?? p.greedy.ids.length);
  const j = await xglm(['generate', '-m', model, '-n', n, '--temp', '0', '--kv-type', 'f32', '--json', p.text]);
  t.is(j.code, 0, j.stderr);
  const out = JSON.parse(j.stdout);
  t.deepEqual(Object.keys(out).sort(), ['ids', 'text']);
  t.deepEqual(out.ids, p.greedy.ids.slice(0, Number(n)));
  const s = await xglm(['generate', '-m', model, '-n', n, '--temp', '0', '--kv-type', 'f32', p.text]);
  t.is(s.code, 0);
  t.is(s.stdout, `${out.text}\n`);
});

test('score --jsonl sums log-probabilities as the model card does', async (t) => {
  const g = golden('tiny-a');
  const items = g.copa.map((c) => ({ texts: c.results.map((r) => r.text) }));
  const r = await xglm(['score', '-m', await fixtureGguf('tiny-a'), '--kv-type', 'f32', '--jsonl'], jsonl(items));
  t.is(r.code, 0, r.stderr);
  const lines = parseLines(r.stdout);
  lines.forEach((l, i) => {
    const ref = g.copa[i].results;
    t.deepEqual(l.tokens, ref.map((x) => x.ids.length - 1));
    l.logprobs.forEach((v: number, k: number) => t.true(Math.abs(v - ref[k].sum_all) <= 1e-4 * Math.abs(ref[k].sum_all)));
  });
});

test('convert, quantize and info: files that load and describe themselves', async (t) => {
  const f16 = path.join(tmp, 'a-f16.gguf');
  const q4 = path.join(tmp, 'a-q4_0.gguf');
  const c = await xglm(['convert', path.join(FIXTURES_DIR, 'tiny-a'), '-o', f16, '--type', 'f16', '--json']);
  t.is(c.code, 0, c.stderr);
  t.is(JSON.parse(c.stdout).type, 'f16');
  const q = await xglm(['quantize', f16, q4, 'q4_0']);
  t.is(q.code, 0, q.stderr);
  const i = await xglm(['info', q4, '--json']);
  t.is(i.code, 0, i.stderr);
  const info = JSON.parse(i.stdout);
  t.is(info.architecture, 'xglm');
  t.is(info.fileType, 'q4_0');
  t.is(info.embeddingLength, 64);
  t.is(info.blockCount, 2);
  t.is(info.vocabSize, 2008);
  t.true(info.tensorTypes.q4_0.tensors > 0);
  t.is(typeof info.cpu.variant, 'string');
  t.deepEqual(info.kernels, backendInfo().kernelPlan, '--json has the kernel plan as its kernels object');
  const text = await xglm(['info', q4]);
  t.regex(text.stdout, /architecture\s+xglm/);
  t.regex(text.stdout, /CPU\s+\S+/);
  t.regex(text.stdout, /kernel plan/);
  for (const op of backendInfo().kernelPlan.ops) t.true(text.stdout.includes(`${op.node}: `), `the text names ${op.node}`);
});

test('info: the kernel plan follows XGLM_KERNELS (ggml: every node ggml\'s, with the reason; unknown: said)', async (t) => {
  const plan = async (value: string) => JSON.parse((await xglm(['info', '--json'], '', { XGLM_KERNELS: value })).stdout).kernels;
  const ggml = await plan('ggml');
  t.is(ggml.vnni, false);
  t.true(ggml.ops.length >= 4);
  for (const op of ggml.ops) t.is(op.impl, 'ggml', op.node);
  // the nodes our ops would take say why they do not
  const ours = backendInfo().kernels === 'none' ? 'runs no AVX2 code' : 'XGLM_KERNELS=ggml';
  t.true(ggml.ops.filter((o: { detail: string }) => o.detail.includes(ours)).length >= 4, JSON.stringify(ggml.ops));
  const bogus = await plan('fastest');
  t.regex(bogus.error, /XGLM_KERNELS=fastest is not known/);
  if (backendInfo().kernels !== 'none') {
    const auto = await plan('auto');
    t.true(auto.ops.some((o: { impl: string }) => o.impl === 'xglm'));
    const avx2 = await plan('avx2');
    t.is(avx2.vnni, false);
    // every op in its AVX2 form, but the K-quant layer products, whose kernels are VNNI only
    type Op = { node: string; impl: string; detail: string };
    const kQuant = (o: Op) => o.node.includes('Q5_K, Q6_K (q4_k_m files)');
    const others = (ops: Op[]) => ops.filter((o) => !kQuant(o)).map((o) => o.impl);
    t.deepEqual(others(avx2.ops), others(auto.ops), 'avx2 keeps every other op, in its AVX2 form');
    const k = avx2.ops.find(kQuant) as Op;
    t.is(k.impl, 'ggml');
    t.regex(k.detail, /XGLM_KERNELS=avx2|no AVX-512/);
  }
});

test('perplexity and bench run and print their JSON shapes', async (t) => {
  const file = path.join(tmp, 'text.txt');
  fs.writeFileSync(file, golden('tiny-a').prompts[6].text);
  const model = await fixtureGguf('tiny-a');
  const p = await xglm(['perplexity', '-m', model, '-c', '32', '--json', file]);
  t.is(p.code, 0, p.stderr);
  const pp = JSON.parse(p.stdout);
  t.true(pp.perplexity > 1 && pp.tokens > 0 && pp.windows > 1);
  const b = await xglm(['bench', '-m', model, '-p', '32', '-n', '8', '-t', '1', '--json']);
  t.is(b.code, 0, b.stderr);
  const bench = JSON.parse(b.stdout);
  t.deepEqual(Object.keys(bench).sort(), BENCH_KEYS);
  t.is(bench.threads, 1);
  t.true(bench.decode_tps > 0 && bench.prefill_tps > 0);
  // the figures say which code produced them
  t.like(bench, { variant: backendInfo().variant, kernels: backendInfo().kernels });
  t.like(bench, { prompt_tokens: 32, gen_tokens: 8, ttft_prompt_tokens: 64 });
});

const BENCH_KEYS = ['context_size', 'cpu', 'decode_tps', 'gen_tokens', 'kernels', 'load_ms', 'peak_rss_mb', 'prefill_tps', 'threads', 'ttft_ms', 'ttft_prompt_tokens', 'prompt_tokens', 'variant'].sort();
const DEMO_NOTE = /^xglm: note: no -m given, using the tiny embedded demo model/;

/** stderr as lines; each must be a one-line `xglm: note:`. */
function notes(t: import('ava').ExecutionContext, r: Run): string[] {
  t.true(r.stderr === '' || r.stderr.endsWith('\n'), r.stderr);
  const lines = r.stderr.split('\n').slice(0, -1);
  for (const l of lines) t.regex(l, /^xglm: note: \S/);
  return lines;
}

test('bench --json with its default flags (-p 512 -n 128) runs on the demo model (context 512)', async (t) => {
  const r = await xglm(['bench', '--json']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.endsWith('\n') && r.stdout.trim().split('\n').length === 1, r.stdout);
  const b = JSON.parse(r.stdout);
  t.deepEqual(Object.keys(b).sort(), BENCH_KEYS);
  // 512 prompt tokens fill the demo model's 512-token context exactly: nothing is clamped.
  t.like(b, { prompt_tokens: 512, gen_tokens: 128, ttft_prompt_tokens: 64, context_size: 512, threads: 1 });
  for (const k of ['prefill_tps', 'decode_tps', 'ttft_ms', 'load_ms', 'peak_rss_mb']) t.true(Number.isFinite(b[k]) && b[k] > 0, `${k} ${b[k]}`);
  const lines = notes(t, r);
  t.is(lines.length, 1);
  t.regex(lines[0]!, DEMO_NOTE);
});

test('bench clamps a prompt longer than the context, with a one-line note, not an error', async (t) => {
  const r = await xglm(['bench', '-p', '600', '-n', '8', '--json']);
  t.is(r.code, 0, r.stderr);
  t.like(JSON.parse(r.stdout), { prompt_tokens: 512, gen_tokens: 8, ttft_prompt_tokens: 64, context_size: 512 });
  const lines = notes(t, r);
  t.is(lines.length, 2);
  t.regex(lines[0]!, DEMO_NOTE);
  t.is(lines[1], "xglm: note: the prompt of 600 tokens is longer than the model's context of 512 tokens: prefill measured with 512 tokens");
  // -c smaller than needed: the prompt and the decode run are fitted into it.
  const c = await xglm(['bench', '-c', '48', '-p', '100', '-n', '40', '--json']);
  t.is(c.code, 0, c.stderr);
  t.like(JSON.parse(c.stdout), { prompt_tokens: 48, gen_tokens: 40, ttft_prompt_tokens: 7, context_size: 48 });
  t.deepEqual(notes(t, c).slice(1), [
    'xglm: note: the prompt of 100 tokens is longer than the context size of 48 tokens: prefill measured with 48 tokens',
    'xglm: note: the first-token prompt of 64 tokens plus 41 generated tokens does not fit the context size of 48 tokens: first token measured after 7 prompt tokens',
  ]);
  // the text output names the counts measured
  const text = await xglm(['bench', '-p', '600', '-n', '8']);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /^prefill +[\d.]+ tokens\/s \(512 tokens\)$/m);
  t.regex(text.stdout, /^context +512 tokens$/m);
  t.true(text.stdout.endsWith('\n'));
  const help = await xglm(['bench', '--help']);
  t.regex(help.stdout, /longer than the context allows .* is clamped to it .*xglm: note:.* not an error/);
});

test('bench plans the 564M shape (context 2048): the defaults fit, a longer prompt is clamped', (t) => {
  t.like(planBenchmark(2048), { prompt: 512, decode: 128, ttftPrompt: 64, contextSize: 512, notes: [] });
  t.like(planBenchmark(2048, { prompt: 1500 }), { prompt: 1500, contextSize: 1500, notes: [] });
  t.like(planBenchmark(2048, { prompt: 32, decode: 500 }), { contextSize: 565, notes: [] });
  const long = planBenchmark(2048, { prompt: 4096 });
  t.like(long, { prompt: 2048, contextSize: 2048 });
  t.deepEqual(long.notes, ["the prompt of 4096 tokens is longer than the model's context of 2048 tokens: prefill measured with 2048 tokens"]);
  t.like(planBenchmark(2048, { contextSize: 1024 }), { prompt: 512, contextSize: 1024, notes: [] });
  t.like(planBenchmark(2048, { contextSize: 4096 }), { contextSize: 2048, notes: [] });
  t.like(planBenchmark(2048, { decode: 3000 }), { decode: 2046, ttftPrompt: 1, contextSize: 2048 });
  t.is(planBenchmark(2048, { decode: 3000 }).notes.length, 2);
  t.throws(() => planBenchmark(2048, { contextSize: 1 }), { message: /at least 2 tokens/ });
});

test('info: stdout ends with a newline; the demo-model note is its own line on stderr', async (t) => {
  const r = await xglm(['info']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.endsWith('\n'), JSON.stringify(r.stdout.slice(-40)));
  t.regex(r.stdout, /^ggml +\S+\n/m);
  t.regex(r.stdout, /^built with +(Clang|GNU|AppleClang|MSVC) \d+\.\d+/m);
  t.notRegex(r.stdout, /xglm: note/);
  const lines = notes(t, r);
  t.is(lines.length, 1);
  t.regex(lines[0]!, DEMO_NOTE);
  const j = await xglm(['info', '--json']);
  t.is(j.code, 0, j.stderr);
  t.true(j.stdout.endsWith('}\n'));
  t.is(JSON.parse(j.stdout).architecture, 'xglm');
  t.regex(j.stderr, /^xglm: note: [^\n]+\n$/);
});

test('pull downloads from a hub (HF_ENDPOINT) and converts', async (t) => {
  const hub = await startFakeHub({ 'facebook/xglm-tiny': { dir: path.join(FIXTURES_DIR, 'tiny-a') } });
  try {
    const out = path.join(tmp, 'pulled.gguf');
    const r = await xglm(['pull', 'facebook/xglm-tiny', '--type', 'f32', '-o', out, '--cache-dir', path.join(tmp, 'cache'), '--json'], '', {
      HF_ENDPOINT: hub.endpoint,
    });
    t.is(r.code, 0, r.stderr);
    t.is(JSON.parse(r.stdout).gguf, out);
    const i = await xglm(['info', out, '--json']);
    t.is(JSON.parse(i.stdout).vocabSize, 2008);
    const missing = await xglm(['pull', 'facebook/nope', '--cache-dir', path.join(tmp, 'cache')], '', { HF_ENDPOINT: hub.endpoint });
    assertCleanError(t, missing, 1);
    t.regex(missing.stderr, /404|not found/i);
  } finally {
    await hub.close();
  }
});

test('without -m the embedded demo model runs, with a one-line note on stderr', async (t) => {
  const r = await xglm(['generate', '-n', '5', '--temp', '0', 'Hello']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.trim().length > 0);
  t.regex(r.stderr, /demo model/);
  t.is(r.stderr.trim().split('\n').length, 1);
});

test('usage errors exit 2; runtime errors exit 1; both one clean line', async (t) => {
  assertCleanError(t, await xglm(['generate', '--temp', 'hot', 'x']), 2);
  assertCleanError(t, await xglm(['generate', '--no-such-flag', 'x']), 2);
  assertCleanError(t, await xglm(['generate']), 2);
  assertCleanError(t, await xglm(['frobnicate']), 2);
  assertCleanError(t, await xglm(['convert', 'x']), 2);
  assertCleanError(t, await xglm(['generate', '-m', path.join(tmp, 'missing.gguf'), 'x']), 1);
  const corrupt = path.join(tmp, 'corrupt.gguf');
  const good = fs.readFileSync(await fixtureGguf('tiny-a'));
  fs.writeFileSync(corrupt, good.subarray(0, 5000));
  for (const cmd of [['generate', '-m', corrupt, 'x'], ['info', corrupt], ['tokenize', '-m', corrupt, '--jsonl']]) {
    assertCleanError(t, await xglm(cmd, '"x"\n'), 1);
  }
  const flipped = Buffer.from(good);
  flipped.writeUInt32LE(0xffffffff, 8); // absurd tensor count
  fs.writeFileSync(corrupt, flipped);
  assertCleanError(t, await xglm(['info', corrupt]), 1);
  assertCleanError(t, await xglm(['score', '-m', await fixtureGguf('tiny-a'), '--jsonl'], '{"texts": 3}\n'), 1);
});

test('--help on every command shows usage and an example', async (t) => {
  const main = await xglm(['--help']);
  t.is(main.code, 0);
  const commands = [...main.stdout.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]!);
  t.deepEqual(commands.sort(), ['bench', 'convert', 'generate', 'info', 'logprobs', 'perplexity', 'pull', 'quantize', 'score', 'serve', 'tokenize']);
  for (const c of commands) {
    const h = await xglm([c, '--help']);
    t.is(h.code, 0);
    t.regex(h.stdout, new RegExp(`Usage: xglm ${c}`));
    t.regex(h.stdout, /Examples?:\n {2}(echo .* \| )?xglm /);
  }
});

/** Commands that run the model: generate, tokenize, logprobs, score, perplexity, bench. */
import fs from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';
import { benchmarkModel } from '../bench.js';
import { XglmError, backendInfo, loadModel, loadTokenizer, type ContextOptions, type KvType, type XglmContext } from '../../index.js';
import type { ParsedArgs } from '../args.js';
import type { CliIo } from '../main.js';
import { resolveModelPath } from '../model-path.js';
import { progressBar } from '../progress.js';

export function contextOptions(args: ParsedArgs): ContextOptions {
  const f = args.flags;
  return {
    ...(typeof f.threads === 'number' ? { threads: f.threads } : {}),
    ...(typeof f['ctx-size'] === 'number' ? { contextSize: f['ctx-size'] } : {}),
    ...(typeof f['kv-type'] === 'string' ? { kvType: f['kv-type'] as KvType } : {}),
  };
}

/** Loads the model, runs `fn` with a context, disposes both. */
async function withContext<T>(args: ParsedArgs, io: CliIo, fn: (ctx: XglmContext) => Promise<T>, extra: ContextOptions = {}): Promise<T> {
  const model = await loadModel(resolveModelPath(args.flags.model, io));
  try {
    const ctx = await model.createContext({ ...contextOptions(args), ...extra });
    return await fn(ctx);
  } finally {
    await model.dispose();
  }
}

/** Each stdin line parsed as JSON and checked by `check`; a bad line is a runtime error naming the line. */
async function* jsonLines<T>(io: CliIo, check: (v: unknown) => v is T, what: string): AsyncGenerator<T> {
  const rl = readline.createInterface({ input: io.stdin, crlfDelay: Infinity });
  let n = 0;
  for await (const line of rl) {
    n++;
    if (line.trim() === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `stdin line ${n} is not JSON`, { hint: `each line must be ${what}` });
    }
    if (!check(v)) throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `stdin line ${n} is not ${what}`, { hint: `each line must be ${what}` });
    yield v;
  }
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isTexts = (v: unknown): v is { texts: string[] } =>
  typeof v === 'object' && v !== null && Array.isArray((v as { texts?: unknown }).texts) && (v as { texts: unknown[] }).texts.every(isString);

function requireJsonl(args: ParsedArgs, command: string): void {
  if (!args.flags.jsonl) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', `xglm ${command} reads JSON lines from stdin: pass --jsonl`, {
      hint: `echo '"Hello"' | xglm ${command} --jsonl`,
    });
  }
}

function write(io: CliIo, value: unknown): void {
  io.stdout.write(JSON.stringify(value) + '\n');
}

export async function runTokenize(args: ParsedArgs, io: CliIo): Promise<void> {
  requireJsonl(args, 'tokenize');
  const tokenizer = loadTokenizer(resolveModelPath(args.flags.model, io));
  for await (const text of jsonLines(io, isString, 'a JSON string')) write(io, { ids: tokenizer.encode(text) });
}

export async function runLogprobs(args: ParsedArgs, io: CliIo): Promise<void> {
  requireJsonl(args, 'logprobs');
  const top = Number(args.flags.top);
  await withContext(args, io, async (ctx) => {
    for await (const text of jsonLines(io, isString, 'a JSON string')) {
      const r = await ctx.logprobs(text, { top });
      write(io, { ids: r.ids, logprobs: r.logprobs, top: r.top });
    }
  });
}

export async function runScore(args: ParsedArgs, io: CliIo): Promise<void> {
  requireJsonl(args, 'score');
  await withContext(args, io, async (ctx) => {
    for await (const item of jsonLines(io, isTexts, 'an object {"texts":[...strings]}')) {
      const r = await ctx.score(item.texts);
      write(io, { logprobs: r.map((s) => s.logprob), tokens: r.map((s) => s.tokens) });
    }
  });
}

export async function runGenerate(args: ParsedArgs, io: CliIo): Promise<void> {
  const f = args.flags;
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    await withContext(args, io, async (ctx) => {
      const gen = ctx.generate(args.positionals[0]!, {
        maxTokens: Number(f['max-tokens']),
        temperature: Number(f.temp),
        topK: Number(f['top-k']),
        topP: Number(f['top-p']),
        minP: Number(f['min-p']),
        repeatPenalty: Number(f['repeat-penalty']),
        ...(typeof f.seed === 'number' ? { seed: f.seed } : {}),
        ...(typeof f.stop === 'string' ? { stop: [f.stop] } : {}),
        signal: controller.signal,
      });
      if (f.json) {
        const r = await gen;
        write(io, { ids: r.tokens, text: r.text });
        return;
      }
      for await (const chunk of gen) if (chunk.text) io.stdout.write(chunk.text);
      io.stdout.write('\n');
    });
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

export async function runPerplexity(args: ParsedArgs, io: CliIo): Promise<void> {
  const file = args.positionals[0]!;
  const text = fs.readFileSync(file, 'utf8');
  const bar = progressBar('perplexity', { stream: io.stderr as NodeJS.WriteStream, enabled: !args.flags.json && Boolean(io.stderr.isTTY) });
  await withContext(args, io, async (ctx) => {
    const r = await ctx.perplexity(text, {
      ...(typeof args.flags.stride === 'number' ? { stride: Math.min(args.flags.stride, ctx.contextSize - 1) } : {}),
      onProgress: (done, total) => bar.update(done, total, 'tokens'),
    });
    bar.done();
    if (args.flags.json) write(io, { perplexity: r.perplexity, nll: r.nll, tokens: r.tokens, windows: r.windows, window: ctx.contextSize });
    else io.stdout.write(`perplexity ${r.perplexity.toFixed(4)} (mean NLL ${r.nll.toFixed(4)} nats over ${r.tokens} tokens, ${r.windows} windows of ${ctx.contextSize})\n`);
  });
}

export async function runBench(args: ParsedArgs, io: CliIo): Promise<void> {
  const f = args.flags;
  const r = await benchmarkModel(resolveModelPath(f.model, io), {
    prompt: Number(f.prompt),
    decode: Number(f['n-gen']),
    ...(typeof f['ctx-size'] === 'number' ? { contextSize: f['ctx-size'] } : {}),
    ...(typeof f.threads === 'number' ? { threads: f.threads } : {}),
    ...(typeof f['kv-type'] === 'string' ? { kvType: f['kv-type'] as KvType } : {}),
    // A prompt longer than the context allows is measured shorter, with a note (stderr: --json stays parseable).
    onNote: (message) => io.stderr.write(`xglm: note: ${message}\n`),
  });
  // which CPU and which code produced the figures
  const backend = backendInfo();
  const machine = { cpu: os.cpus()[0]?.model.trim() ?? 'unknown', variant: backend.variant, kernels: backend.kernels };
  if (f.json) {
    write(io, { ...r, ...machine });
    return;
  }
  io.stdout.write(
    [
      `cpu          ${machine.cpu}; ggml variant ${machine.variant}, xglm kernels ${machine.kernels}`,
      `load         ${r.load_ms.toFixed(0)} ms`,
      `prefill      ${r.prefill_tps.toFixed(1)} tokens/s (${r.prompt_tokens} tokens)`,
      `decode       ${r.decode_tps.toFixed(1)} tokens/s (${r.gen_tokens} tokens)`,
      `first token  ${r.ttft_ms.toFixed(1)} ms (${r.ttft_prompt_tokens}-token prompt)`,
      `context      ${r.context_size} tokens`,
      `peak RSS     ${r.peak_rss_mb.toFixed(0)} MB`,
      `threads      ${r.threads}`,
    ].join('\n') + '\n',
  );
}

/** The flags of every `xglm` command (README.md, “The CLI”), in one place. */
import type { CommandSpec, FlagSpec } from './args.js';

const model: FlagSpec = { type: 'string', short: 'm', valueName: 'FILE', description: 'GGUF model file (default: the tiny embedded demo model)' };
const threads: FlagSpec = { type: 'int', short: 't', valueName: 'N', min: 1, max: 256, description: 'compute threads (default: physical cores)' };
const ctxSize: FlagSpec = { type: 'int', short: 'c', valueName: 'N', min: 1, description: "context size in tokens (default: the model's, at most 2048)" };
const kvType: FlagSpec = { type: 'string', valueName: 'TYPE', choices: ['f16', 'f32', 'q8_0'], default: 'f16', description: 'KV-cache element type; f32 matches PyTorch to float32 accuracy' };
const json: FlagSpec = { type: 'boolean', description: 'print one JSON object' };
const jsonl: FlagSpec = { type: 'boolean', description: 'read JSON lines from stdin, write JSON lines to stdout' };
const runtime = { model, threads, 'ctx-size': ctxSize, 'kv-type': kvType };

export const CONVERT_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q6_k', 'q5_k_m', 'q5_0', 'q4_k_m', 'q4_0'] as const;

export const specs = {
  tokenize: {
    name: 'tokenize',
    summary: 'turn text into XGLM token ids',
    usage: 'xglm tokenize [-m FILE] --jsonl < lines.jsonl',
    flags: { model, jsonl },
    positionals: [0, 0],
    examples: [`echo '"Hello world"' | xglm tokenize --jsonl`],
    notes: ['Input: one JSON string per line. Output per line: {"ids":[...]} (ids start with 2, </s>).'],
  },
  logprobs: {
    name: 'logprobs',
    summary: 'log-probabilities of each token and the top-K alternatives',
    usage: 'xglm logprobs [-m FILE] [--top K] --jsonl < lines.jsonl',
    flags: { ...runtime, top: { type: 'int', valueName: 'K', min: 0, max: 100, default: 5, description: 'alternatives per position' }, jsonl },
    positionals: [0, 0],
    examples: [`echo '"The cat sat"' | xglm logprobs -m xglm-564M-q8_0.gguf --top 3 --jsonl`],
    notes: ['Output per line: {"ids":[...],"logprobs":[...],"top":[[[id,lp],...],...]}; logprobs[i] = log P(ids[i+1] | ids[0..i]); top has one entry per input position (the last is the next-token prediction).'],
  },
  generate: {
    name: 'generate',
    summary: 'continue a prompt, streaming the text',
    usage: 'xglm generate [-m FILE] [-n N] [sampling options] [--json] PROMPT',
    flags: {
      ...runtime,
      'max-tokens': { type: 'int', short: 'n', valueName: 'N', min: 0, default: 64, description: 'tokens to generate at most' },
      temp: { type: 'number', valueName: 'T', min: 0, default: 0.8, description: 'temperature; 0 = greedy' },
      'top-k': { type: 'int', valueName: 'K', min: 0, default: 40, description: 'keep the K most likely tokens (0 = all)' },
      'top-p': { type: 'number', valueName: 'P', min: 0, max: 1, default: 0.95, description: 'nucleus sampling threshold (1 = off)' },
      'min-p': { type: 'number', valueName: 'P', min: 0, max: 1, default: 0.05, description: 'drop tokens below P × the top probability (0 = off)' },
      'repeat-penalty': { type: 'number', valueName: 'X', min: 0, default: 1, description: 'repetition penalty over the last 64 tokens (1 = off)' },
      seed: { type: 'int', valueName: 'S', min: 0, description: 'random seed (same seed and input → same output)' },
      stop: { type: 'string', valueName: 'TEXT', description: 'stop when this text is generated (not printed)' },
      json,
    },
    positionals: [1, 1],
    examples: ['xglm generate -m xglm-564M-q4_k_m.gguf -n 32 --temp 0 "The capital of France is"'],
    notes: ['Prints the generated text as it comes; with --json prints {"ids":[generated],"text":"..."} once.'],
  },
  score: {
    name: 'score',
    summary: "total log-probability of texts (XGLM's few-shot scoring)",
    usage: 'xglm score [-m FILE] --jsonl < items.jsonl',
    flags: { ...runtime, jsonl },
    positionals: [0, 0],
    examples: [`echo '{"texts":["I wanted to conserve energy. I swept the floor.","I wanted to conserve energy. I shut off the light."]}' | xglm score -m xglm-564M-q8_0.gguf --jsonl`],
    notes: ['Input per line: {"texts":[...]}. Output: {"logprobs":[...],"tokens":[...]}: each text\'s sum of log P over all tokens after the leading </s> (as the model card\'s COPA example), and its token count.'],
  },
  convert: {
    name: 'convert',
    summary: 'convert a HuggingFace XGLM checkpoint folder to GGUF',
    usage: 'xglm convert SRC -o OUT [--type TYPE]',
    flags: {
      output: { type: 'string', short: 'o', valueName: 'OUT', description: 'GGUF file to write' },
      type: { type: 'string', valueName: 'TYPE', choices: CONVERT_TYPES, default: 'f16', description: 'tensor type' },
      threads,
      json,
    },
    positionals: [1, 1],
    examples: ['xglm convert ./xglm-564M -o xglm-564M-q4_k_m.gguf --type q4_k_m'],
    notes: ['SRC holds config.json, sentencepiece.bpe.model (or tokenizer.json) and model.safetensors or pytorch_model.bin. No Python needed.'],
  },
  quantize: {
    name: 'quantize',
    summary: 'requantize a GGUF file to another type',
    usage: 'xglm quantize IN OUT TYPE',
    flags: { threads, json },
    positionals: [3, 3],
    examples: ['xglm quantize xglm-564M-f16.gguf xglm-564M-q4_0.gguf q4_0'],
    notes: [`TYPE is one of ${CONVERT_TYPES.join(', ')}.`],
  },
  info: {
    name: 'info',
    summary: 'show a model file (architecture, dimensions, vocabulary, tensor types), the CPU variant and the kernel plan',
    usage: 'xglm info [MODEL] [--json]',
    flags: { json },
    positionals: [0, 1],
    examples: ['xglm info xglm-564M-q4_0.gguf --json'],
  },
  perplexity: {
    name: 'perplexity',
    summary: 'perplexity of a text file (sliding window)',
    usage: 'xglm perplexity [-m FILE] [--stride N] [--json] FILE',
    flags: {
      ...runtime,
      stride: { type: 'int', valueName: 'N', min: 1, description: 'window step in tokens (default: half the context)' },
      json,
    },
    positionals: [1, 1],
    examples: ['xglm perplexity -m xglm-564M-q8_0.gguf -c 512 wiki.test.raw'],
  },
  bench: {
    name: 'bench',
    summary: 'measure prompt (prefill) and generation (decode) speed',
    usage: 'xglm bench [-m FILE] [-p 512] [-n 128] [-c N] [-t N] [--json]',
    flags: {
      model,
      threads,
      'ctx-size': {
        type: 'int',
        short: 'c',
        valueName: 'N',
        min: 2,
        description: "context size in tokens (default: enough for the prompt and for a 64-token prompt plus the generated tokens, at most the model's)",
      },
      'kv-type': kvType,
      prompt: { type: 'int', short: 'p', valueName: 'N', min: 1, default: 512, description: 'prompt tokens to evaluate' },
      'n-gen': { type: 'int', short: 'n', valueName: 'N', min: 1, default: 128, description: 'tokens to generate (after a 64-token prompt, which also times the first token)' },
      json,
    },
    positionals: [0, 0],
    examples: ['xglm bench -m xglm-564M-q4_0.gguf -p 512 -n 128 -t 2 --json'],
    notes: [
      "A prompt longer than the context allows (the model's context length, or -c) is clamped to it and measured shorter, with a one-line 'xglm: note:' on stderr; so are -n and the 64-token first-token prompt when they do not fit. This is not an error.",
      '--json prints {"prefill_tps":…,"decode_tps":…,"ttft_ms":…,"load_ms":…,"peak_rss_mb":…,"threads":…,"prompt_tokens":…,"gen_tokens":…,"ttft_prompt_tokens":…,"context_size":…,"cpu":…,"variant":…,"kernels":…} on stdout (the *_tokens fields are the counts measured, after clamping; cpu, variant and kernels say which CPU and code produced the figures); notes go to stderr.',
    ],
  },
  serve: {
    name: 'serve',
    summary: 'an OpenAI-compatible HTTP server: completions, scoring, health',
    usage: 'xglm serve [-m FILE] [--host 127.0.0.1] [--port 8080] [--parallel N] [--api-key K] [--quiet]',
    flags: {
      ...runtime,
      host: { type: 'string', valueName: 'ADDR', default: '127.0.0.1', description: 'address to listen on (0.0.0.0: every interface — put a proxy with TLS in front)' },
      port: { type: 'int', valueName: 'PORT', min: 0, max: 65535, default: 8080, description: 'TCP port (0: any free port)' },
      parallel: { type: 'int', valueName: 'N', min: 1, max: 63, default: 4, description: 'requests running at once, each on a sequence of its own (at most 63)' },
      queue: { type: 'int', valueName: 'N', min: 0, max: 100000, default: 64, description: 'requests waiting beyond --parallel; more get 429 with Retry-After' },
      'api-key': { type: 'string', valueName: 'K', description: 'require Authorization: Bearer K on every request (default: $XGLM_API_KEY if set)' },
      'max-body': { type: 'int', valueName: 'BYTES', min: 1024, default: 1048576, description: 'larger request bodies get 413' },
      grace: { type: 'number', valueName: 'SECONDS', min: 0, default: 10, description: 'on SIGINT/SIGTERM, how long running requests may finish before they are aborted' },
      quiet: { type: 'boolean', description: 'no access log (one line per request on stderr)' },
    },
    positionals: [0, 0],
    examples: [
      'xglm serve -m xglm-564M-q8_0.gguf --port 8080 --parallel 4',
      `curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' -d '{"prompt":"The capital of France is","max_tokens":16,"temperature":0}'`,
    ],
    notes: [
      'Endpoints: POST /v1/completions (OpenAI: prompt, max_tokens, temperature, top_p, stop, seed, n, stream, logprobs, echo, …), GET /v1/models, GET /health (200 ready, 503 loading or draining), POST /v1/score ({"texts":[…]} or {"prefix":…,"continuations":[…]} → log-probabilities). docs/serve.md has the details, a reverse-proxy setup and how to scale out.',
      'The model is the one given here: a request cannot load another file. Listens on 127.0.0.1 unless --host says otherwise. The first SIGINT or SIGTERM stops accepting requests and lets running ones finish (up to --grace), then exits 0; a second one aborts them at once.',
    ],
  },
  pull: {
    name: 'pull',
    summary: 'download a model from the HuggingFace hub and convert it',
    usage: 'xglm pull REPO [--revision R] [--type TYPE] [-o OUT]',
    flags: {
      revision: { type: 'string', valueName: 'R', default: 'main', description: 'branch, tag or commit' },
      type: { type: 'string', valueName: 'TYPE', choices: CONVERT_TYPES, default: 'q8_0', description: 'tensor type of the GGUF file' },
      output: { type: 'string', short: 'o', valueName: 'OUT', description: 'GGUF file to write (default: in the cache folder)' },
      'cache-dir': { type: 'string', valueName: 'DIR', description: 'download cache (default: $XGLM_CACHE_DIR or ~/.cache/xglm-node)' },
      threads,
      json,
    },
    positionals: [1, 1],
    examples: ['xglm pull facebook/xglm-564M --type q4_k_m -o xglm-564M-q4_k_m.gguf'],
    notes: ['Honours HF_ENDPOINT (default https://huggingface.co) and HF_TOKEN. Interrupted downloads resume.'],
  },
} satisfies Record<string, CommandSpec>;

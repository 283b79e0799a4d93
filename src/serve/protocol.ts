/**
 * The HTTP API's shapes: OpenAI's error object, and each request body checked field by field
 * into what the Engine takes (a wrong type, an out-of-range value or an unknown model is a
 * 400 naming the field). Nothing in a request chooses a file: the model is the one the
 * server was started with, and `model` must name it.
 */
import { XglmError } from '../errors.js';
import type { CompletionRequest, TokenLogprob } from './engine.js';

export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_error' | 'server_error';

/** An error the client receives as `{"error":{"message","type","param","code"}}` with `status`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const invalid = (param: string, message: string, code = 'invalid_value') => new ApiError(400, message, 'invalid_request_error', param, code);

/** A library error met while serving a request: the client's fault (400) or ours (500). */
export function apiErrorOf(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof XglmError) {
    if (err.code === 'ERR_XGLM_CONTEXT_OVERFLOW') return new ApiError(400, err.message, 'invalid_request_error', null, 'context_length_exceeded');
    if (err.code === 'ERR_XGLM_INVALID_ARGUMENT' || err.code === 'ERR_XGLM_TOKENIZER') return new ApiError(400, err.message, 'invalid_request_error', null, 'invalid_value');
    if (err.code === 'ERR_XGLM_DISPOSED' || err.code === 'ERR_XGLM_ABORTED') return new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
  }
  return new ApiError(500, 'internal server error', 'server_error', null, 'internal_error');
}

type Body = Record<string, unknown>;

/** The parsed JSON body, which must be an object. */
export function parseBody(raw: Buffer): Body {
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new ApiError(400, `the body is not valid JSON: ${(err as Error).message}`, 'invalid_request_error', null, 'invalid_json');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ApiError(400, 'the body must be a JSON object', 'invalid_request_error', null, 'invalid_json');
  return v as Body;
}

/** `undefined` for a missing or null field (OpenAI's "use the default"). */
function field(body: Body, name: string): unknown {
  const v = body[name];
  return v === null ? undefined : v;
}

function num(body: Body, name: string, def: number, min: number, max: number, int = false): number {
  const v = field(body, name);
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || (int && !Number.isInteger(v))) throw invalid(name, `'${name}' must be ${int ? 'an integer' : 'a number'}`, 'invalid_type');
  if (v < min || v > max) throw invalid(name, `'${name}' must be from ${min} to ${max}, got ${v}`);
  return v;
}

function bool(body: Body, name: string): boolean {
  const v = field(body, name);
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalid(name, `'${name}' must be a boolean`, 'invalid_type');
  return v;
}

function strings(body: Body, name: string, maxItems: number, allowString: boolean): string[] | undefined {
  const v = field(body, name);
  if (v === undefined) return undefined;
  if (allowString && typeof v === 'string') return [v];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) {
    throw invalid(name, `'${name}' must be ${allowString ? 'a string or ' : ''}an array of strings`, 'invalid_type');
  }
  if (v.length > maxItems) throw invalid(name, `'${name}' has ${v.length} items, at most ${maxItems} are allowed`);
  return v as string[];
}

/** `model` must be absent or the served model's id: never a path, never loaded on demand. */
export function checkModel(body: Body, modelId: string): void {
  const v = field(body, 'model');
  if (v === undefined) return;
  if (typeof v !== 'string') throw invalid('model', "'model' must be a string", 'invalid_type');
  if (v !== modelId) throw new ApiError(400, `the model '${v}' does not exist: this server serves '${modelId}'`, 'invalid_request_error', 'model', 'model_not_found');
}

export const LIMITS = {
  /** Prompts per request times n. */
  choices: 64,
  n: 16,
  stop: 4,
  logprobs: 5,
  logitBias: 300,
  /** Texts or continuations per /v1/score request. */
  scoreTexts: 256,
} as const;

/** A checked /v1/completions request: prompts (text or ids) and one sampler setting. */
export interface CompletionsRequest {
  prompts: Array<string | number[]>;
  n: number;
  stream: boolean;
  includeUsage: boolean;
  echo: boolean;
  /** Requested; each prompt's is capped by the context. */
  maxTokens: number;
  sampling: Omit<CompletionRequest, 'prompt' | 'maxTokens'>;
}

function prompts(body: Body, vocabSize: number): Array<string | number[]> {
  const v = body.prompt;
  const badType = () => invalid('prompt', "'prompt' must be a string, an array of strings, an array of token ids or an array of arrays of token ids", 'invalid_type');
  const ids = (a: unknown[]): number[] => {
    for (const id of a) {
      if (typeof id !== 'number' || !Number.isInteger(id)) throw badType();
      if (id < 0 || id >= vocabSize) throw invalid('prompt', `token id ${id} is outside the vocabulary (0 to ${vocabSize - 1})`);
    }
    return a as number[];
  };
  if (v === undefined || v === null) throw invalid('prompt', "'prompt' is required", 'missing_required_parameter');
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v)) throw badType();
  if (v.length === 0) throw invalid('prompt', "'prompt' must not be an empty array");
  if (v.every((x) => typeof x === 'string')) return v as string[];
  if (v.every((x) => typeof x === 'number')) return [ids(v)];
  if (v.every((x) => Array.isArray(x))) return (v as unknown[][]).map(ids);
  throw badType();
}

function logitBias(body: Body, vocabSize: number): Record<number, number> | undefined {
  const v = field(body, 'logit_bias');
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid('logit_bias', "'logit_bias' must be an object of token id → bias", 'invalid_type');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > LIMITS.logitBias) throw invalid('logit_bias', `'logit_bias' has ${entries.length} entries, at most ${LIMITS.logitBias} are allowed`);
  const out: Record<number, number> = {};
  for (const [k, b] of entries) {
    const id = /^\d+$/.test(k) ? Number(k) : NaN;
    if (!(id < vocabSize)) throw invalid('logit_bias', `'logit_bias' key '${k}' is not a token id (0 to ${vocabSize - 1})`);
    if (typeof b !== 'number' || !Number.isFinite(b) || b < -100 || b > 100) throw invalid('logit_bias', `'logit_bias' values must be numbers from -100 to 100`);
    out[id] = b;
  }
  return out;
}

/** Checks a /v1/completions body (the model is checked by the caller). */
export function parseCompletions(body: Body, vocabSize: number): CompletionsRequest {
  const ps = prompts(body, vocabSize);
  const n = num(body, 'n', 1, 1, LIMITS.n, true);
  if (ps.length * n > LIMITS.choices) throw invalid(ps.length > LIMITS.choices ? 'prompt' : 'n', `prompts × n is ${ps.length * n}, at most ${LIMITS.choices} choices are allowed per request`);
  const bestOf = field(body, 'best_of');
  if (bestOf !== undefined && bestOf !== n && bestOf !== 1) throw invalid('best_of', "'best_of' is not supported (only equal to n)", 'unsupported_parameter');
  const suffix = field(body, 'suffix');
  if (suffix !== undefined && suffix !== '') throw invalid('suffix', "'suffix' is not supported: XGLM has no insertion mode", 'unsupported_parameter');
  const stop = strings(body, 'stop', LIMITS.stop, true) ?? [];
  if (stop.some((s) => s === '')) throw invalid('stop', "'stop' strings must not be empty");
  const streamOptions = field(body, 'stream_options');
  if (streamOptions !== undefined && (typeof streamOptions !== 'object' || Array.isArray(streamOptions))) throw invalid('stream_options', "'stream_options' must be an object", 'invalid_type');
  const includeUsage = streamOptions ? bool(streamOptions as Body, 'include_usage') : false;
  const stream = bool(body, 'stream');
  if (streamOptions !== undefined && !stream) throw invalid('stream_options', "'stream_options' is only allowed with 'stream': true");
  const logprobs = field(body, 'logprobs');
  if (logprobs !== undefined) num(body, 'logprobs', 0, 0, LIMITS.logprobs, true);
  const seed = field(body, 'seed');
  if (seed !== undefined) num(body, 'seed', 0, 0, Number.MAX_SAFE_INTEGER, true);
  const user = field(body, 'user');
  if (user !== undefined && typeof user !== 'string') throw invalid('user', "'user' must be a string", 'invalid_type');
  let temperature = num(body, 'temperature', 1, 0, 2);
  let topP = num(body, 'top_p', 1, 0, 1);
  if (topP === 0) [temperature, topP] = [0, 1]; // only the most likely token is left
  const bias = logitBias(body, vocabSize);
  return {
    prompts: ps,
    n,
    stream,
    includeUsage,
    echo: bool(body, 'echo'),
    maxTokens: num(body, 'max_tokens', 16, 0, Number.MAX_SAFE_INTEGER, true),
    sampling: {
      temperature,
      topP,
      // extensions (llama.cpp's names): off by default, as in OpenAI's sampling
      topK: num(body, 'top_k', 0, 0, vocabSize, true),
      minP: num(body, 'min_p', 0, 0, 1),
      presencePenalty: num(body, 'presence_penalty', 0, -2, 2),
      frequencyPenalty: num(body, 'frequency_penalty', 0, -2, 2),
      ...(bias ? { logitBias: bias } : {}),
      stop,
      ...(seed !== undefined ? { seed: seed as number } : {}),
      ...(logprobs !== undefined ? { logprobs: logprobs as number } : {}),
    },
  };
}

export type ScoreRequest = { kind: 'texts'; texts: string[] } | { kind: 'continuations'; prefix: string; continuations: string[] };

/** Checks a /v1/score body: `{texts}` or `{prefix, continuations}`. */
export function parseScore(body: Body): ScoreRequest {
  const texts = strings(body, 'texts', LIMITS.scoreTexts, false);
  const continuations = strings(body, 'continuations', LIMITS.scoreTexts, false);
  const prefix = field(body, 'prefix');
  if (texts !== undefined) {
    if (continuations !== undefined || prefix !== undefined) throw invalid('texts', "give either 'texts' or 'prefix' and 'continuations', not both");
    if (texts.length === 0) throw invalid('texts', "'texts' must not be empty");
    return { kind: 'texts', texts };
  }
  if (continuations === undefined) throw invalid('texts', "'texts' or 'prefix' and 'continuations' are required", 'missing_required_parameter');
  if (typeof prefix !== 'string') throw invalid('prefix', "'prefix' must be a string", prefix === undefined ? 'missing_required_parameter' : 'invalid_type');
  if (continuations.length === 0) throw invalid('continuations', "'continuations' must not be empty");
  return { kind: 'continuations', prefix, continuations };
}

/** OpenAI's completions logprobs object, offsets counted from `offset` (the prompt's length unless echoed). */
export function logprobsObject(items: readonly TokenLogprob[], offset: number) {
  const text_offset: number[] = [];
  for (const it of items) {
    text_offset.push(offset);
    offset += it.token.length;
  }
  return {
    tokens: items.map((it) => it.token),
    token_logprobs: items.map((it) => it.logprob),
    // the top alternatives and the chosen token (so up to logprobs + 1 entries)
    top_logprobs: items.map((it) => Object.fromEntries([...it.top, [it.token, it.logprob]])),
    text_offset,
  };
}

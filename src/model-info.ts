/**
 * What a GGUF model file is, read from its header in pure TypeScript (no weights are read,
 * the addon is not needed): for `xglm info`, and checked before the native loader runs.
 */
import { XglmError } from './errors.js';
import { ggmlTypeName, LlamaFileType, readGgufHeader, type GgufHeader, type GgufValue } from './gguf/index.js';

export interface ModelFileInfo {
  file: string;
  fileSize: number;
  ggufVersion: number;
  architecture: string;
  name: string | undefined;
  /** general.file_type as llama.cpp names it (`q4_k_m`), or undefined. */
  fileType: string | undefined;
  contextLength: number;
  embeddingLength: number;
  feedForwardLength: number;
  blockCount: number;
  headCount: number;
  layerNormEpsilon: number;
  embeddingScale: number;
  vocabSize: number;
  tokenizerModel: string | undefined;
  parameters: number;
  /** Tensor count and bytes per ggml type. */
  tensorTypes: Record<string, { tensors: number; bytes: number }>;
}

const FILE_TYPE_NAMES = new Map<number, string>(
  Object.entries(LlamaFileType).map(([k, v]) => [v, k.replace(/^(ALL|MOSTLY)_/, '').toLowerCase()]),
);

function num(header: GgufHeader, file: string, key: string, fallback?: number): number {
  const v = header.kv.find((e) => e.key === key)?.value;
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  throw new XglmError('ERR_XGLM_GGUF_INVALID', `${file}: metadata key ${key} is ${v === undefined ? 'missing' : 'not a number'}`, {
    hint: 'this is not an XGLM GGUF file made by xglm convert or llama.cpp; convert the model again',
  });
}

function str(value: GgufValue | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function describeModelFile(file: string, header: GgufHeader = readGgufHeader(file)): ModelFileInfo {
  const get = (key: string) => header.kv.find((e) => e.key === key)?.value;
  const arch = str(get('general.architecture'));
  if (arch === undefined) {
    throw new XglmError('ERR_XGLM_GGUF_INVALID', `${file}: general.architecture is missing`, { hint: 'convert the model again with xglm convert' });
  }
  const p = (key: string, fallback?: number) => num(header, file, `${arch}.${key}`, fallback);
  const tensorTypes: ModelFileInfo['tensorTypes'] = {};
  let parameters = 0;
  for (const t of header.tensors) {
    const name = ggmlTypeName(t.type);
    const entry = (tensorTypes[name] ??= { tensors: 0, bytes: 0 });
    entry.tensors++;
    entry.bytes += t.byteLength;
    if (t.name !== 'position_embd.weight') parameters += t.dims.reduce((a, b) => a * b, 1);
  }
  const tokens = get('tokenizer.ggml.tokens');
  const embd = header.tensors.find((t) => t.name === 'token_embd.weight');
  const fileTypeValue = get('general.file_type');
  return {
    file,
    fileSize: header.fileSize,
    ggufVersion: header.version,
    architecture: arch,
    name: str(get('general.name')),
    fileType: typeof fileTypeValue === 'number' ? FILE_TYPE_NAMES.get(fileTypeValue) ?? `ftype ${fileTypeValue}` : undefined,
    contextLength: p('context_length'),
    embeddingLength: p('embedding_length'),
    feedForwardLength: p('feed_forward_length'),
    blockCount: p('block_count'),
    headCount: p('attention.head_count'),
    layerNormEpsilon: p('attention.layer_norm_epsilon', 1e-5),
    embeddingScale: p('embedding_scale', 1),
    vocabSize: tokens && typeof tokens === 'object' && 'items' in tokens ? tokens.items.length : embd ? embd.dims[1] ?? 0 : 0,
    tokenizerModel: str(get('tokenizer.ggml.model')),
    parameters,
    tensorTypes,
  };
}

/**
 * config.json of a HuggingFace XGLM checkpoint, validated field by field.
 *
 * Missing fields take XGLMConfig's defaults (those of facebook/xglm-564M), as transformers
 * does; a present field with a wrong type or value is an error naming that field. Fields that
 * only matter for training (dropouts, layerdrop, init_std, use_cache) are read by nobody.
 */
import fs from 'node:fs';
import { XglmError } from '../errors.js';

/** What the converter takes from config.json. */
export interface XglmHParams {
  vocabSize: number;
  /** max_position_embeddings: the context length. */
  nCtx: number;
  /** d_model. */
  nEmbd: number;
  /** ffn_dim. */
  nFf: number;
  /** num_layers. */
  nLayer: number;
  /** attention_heads. */
  nHead: number;
  scaleEmbedding: boolean;
  /** XGLM's LayerNorm epsilon: not in config.json, fixed at 1e-5 in modeling_xglm.py. */
  layerNormEps: number;
  /** `_name_or_path`, when the config has one. */
  nameOrPath: string | undefined;
}

/** XGLMConfig defaults (transformers/models/xglm/configuration_xglm.py). */
export const XGLM_CONFIG_DEFAULTS = {
  vocab_size: 256008,
  max_position_embeddings: 2048,
  d_model: 1024,
  ffn_dim: 4096,
  num_layers: 24,
  attention_heads: 16,
  activation_function: 'gelu',
  scale_embedding: true,
  pad_token_id: 1,
  bos_token_id: 0,
  eos_token_id: 2,
  decoder_start_token_id: 2,
  tie_word_embeddings: true,
} as const;

export const XGLM_LAYER_NORM_EPS = 1e-5;

/** Upper bounds that keep every size a safe integer and every row count sane. */
const MAX_DIM = 1 << 20;
const MAX_VOCAB = 1 << 24;
const MAX_LAYERS = 1024;

function bad(file: string, field: string, message: string, hint?: string): XglmError {
  return new XglmError('ERR_XGLM_CONVERT', `${file}: field "${field}" ${message}`, {
    hint: hint ?? 'fix config.json or use the config.json that came with the checkpoint',
  });
}

/** Validates a parsed config.json object. `file` is only used in messages. */
export function validateXglmConfig(json: unknown, file = 'config.json'): XglmHParams {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new XglmError('ERR_XGLM_CONVERT', `${file} is not a JSON object`);
  }
  const c = json as Record<string, unknown>;
  if (c.model_type !== 'xglm') {
    throw bad(file, 'model_type', `is ${JSON.stringify(c.model_type)}, expected "xglm"`, 'this converter handles XGLM checkpoints (facebook/xglm-*) only');
  }

  const int = (field: keyof typeof XGLM_CONFIG_DEFAULTS, min: number, max: number): number => {
    const v = c[field] ?? XGLM_CONFIG_DEFAULTS[field];
    if (typeof v !== 'number' || !Number.isInteger(v)) throw bad(file, field, `must be an integer, got ${JSON.stringify(v)}`);
    if (v < min || v > max) throw bad(file, field, `is ${v}, expected ${min}..${max}`);
    return v;
  };
  const bool = (field: keyof typeof XGLM_CONFIG_DEFAULTS): boolean => {
    const v = c[field] ?? XGLM_CONFIG_DEFAULTS[field];
    if (typeof v !== 'boolean') throw bad(file, field, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const fixedId = (field: keyof typeof XGLM_CONFIG_DEFAULTS): void => {
    const v = c[field] ?? XGLM_CONFIG_DEFAULTS[field];
    if (v !== XGLM_CONFIG_DEFAULTS[field]) {
      throw bad(file, field, `is ${JSON.stringify(v)}; XGLM's fairseq vocabulary fixes it at ${XGLM_CONFIG_DEFAULTS[field]}`);
    }
  };

  const hp: XglmHParams = {
    vocabSize: int('vocab_size', 12, MAX_VOCAB),
    nCtx: int('max_position_embeddings', 1, MAX_DIM),
    nEmbd: int('d_model', 2, MAX_DIM),
    nFf: int('ffn_dim', 1, MAX_DIM),
    nLayer: int('num_layers', 1, MAX_LAYERS),
    nHead: int('attention_heads', 1, MAX_DIM),
    scaleEmbedding: bool('scale_embedding'),
    layerNormEps: XGLM_LAYER_NORM_EPS,
    nameOrPath: undefined,
  };
  if (hp.nEmbd % hp.nHead !== 0) throw bad(file, 'attention_heads', `(${hp.nHead}) does not divide d_model (${hp.nEmbd})`);
  if (hp.nEmbd % 2 !== 0) throw bad(file, 'd_model', `is ${hp.nEmbd}; the sinusoidal positions need an even width`);

  const act = c.activation_function ?? XGLM_CONFIG_DEFAULTS.activation_function;
  if (act !== 'gelu') {
    throw bad(file, 'activation_function', `is ${JSON.stringify(act)}; only "gelu" (exact erf GELU, as every released XGLM) is supported`);
  }
  if (!bool('tie_word_embeddings')) {
    throw bad(file, 'tie_word_embeddings', 'is false; XGLM ties its output projection to embed_tokens and the GGUF layout has no separate output.weight');
  }
  for (const field of ['pad_token_id', 'bos_token_id', 'eos_token_id', 'decoder_start_token_id'] as const) fixedId(field);

  if (c.architectures !== undefined) {
    if (!Array.isArray(c.architectures) || !c.architectures.every((a) => typeof a === 'string')) {
      throw bad(file, 'architectures', 'must be a list of strings');
    }
  }
  if (c.torch_dtype !== undefined && c.torch_dtype !== null && !['float32', 'float16', 'bfloat16'].includes(c.torch_dtype as string)) {
    throw bad(file, 'torch_dtype', `is ${JSON.stringify(c.torch_dtype)}; weights must be float32, float16 or bfloat16`);
  }
  if (typeof c._name_or_path === 'string' && c._name_or_path.length > 0) hp.nameOrPath = c._name_or_path;
  return hp;
}

/** Reads and validates `<dir>/config.json`. */
export function readXglmConfig(file: string): XglmHParams {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (cause) {
    throw new XglmError('ERR_XGLM_CONVERT', `cannot read ${file}: ${(cause as Error).message}`, {
      cause,
      hint: 'pass the folder of a HuggingFace checkpoint (config.json, weights, sentencepiece.bpe.model)',
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new XglmError('ERR_XGLM_CONVERT', `${file} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  return validateXglmConfig(json, file);
}

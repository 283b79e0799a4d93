/**
 * Which files of a transformers XGLM repo the converter needs, out of everything the repo
 * holds (facebook/xglm-564M also carries flax_model.msgpack, tf_model.h5, …).
 */
import { XglmError } from '../errors.js';
import type { RepoListing } from './api.js';
import { assertSafeRepoFile } from './paths.js';

export const CONFIG_FILE = 'config.json';
/** The SentencePiece model is what the converter reads; the others are small and informative. */
const TOKENIZER_FILES = ['sentencepiece.bpe.model', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
const REQUIRED_TOKENIZER_FILES = ['sentencepiece.bpe.model', 'tokenizer.json'];
/** In order of preference: safetensors needs no unpickling. */
const WEIGHT_FORMATS = [
  { single: 'model.safetensors', index: 'model.safetensors.index.json' },
  { single: 'pytorch_model.bin', index: 'pytorch_model.bin.index.json' },
];

export interface DownloadPlan {
  /** Small files, fetched first so a wrong repo fails before gigabytes move. */
  small: string[];
  /** Single weights file, or the shard index whose shards come after it. */
  weights: { file: string; sharded: boolean };
}

export function planDownloads(listing: RepoListing): DownloadPlan {
  const has = (name: string) => listing.files.has(name);
  const where = `${listing.repo}@${listing.revision}`;
  if (!has(CONFIG_FILE)) {
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `${where} has no config.json`, {
      hint: 'xglm pull needs a transformers checkpoint such as facebook/xglm-564M',
    });
  }
  if (!REQUIRED_TOKENIZER_FILES.some(has)) {
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `${where} has no tokenizer (${REQUIRED_TOKENIZER_FILES.join(' or ')})`, {
      hint: 'xglm pull needs the XGLM SentencePiece model next to the weights, as in facebook/xglm-564M',
    });
  }
  for (const format of WEIGHT_FORMATS) {
    if (has(format.single)) return { small: [CONFIG_FILE, ...TOKENIZER_FILES.filter(has)], weights: { file: format.single, sharded: false } };
    if (has(format.index)) {
      return { small: [CONFIG_FILE, ...TOKENIZER_FILES.filter(has), format.index], weights: { file: format.index, sharded: true } };
    }
  }
  throw new XglmError('ERR_XGLM_UNSUPPORTED', `${where} has no model.safetensors or pytorch_model.bin weights`, {
    hint: 'xglm pull converts transformers checkpoints; for a GGUF file, download it directly',
  });
}

/** The shard files a `*.index.json` names in its `weight_map`, each listed by the hub. */
export function shardsFromIndex(indexText: string, listing: RepoListing, indexName: string): string[] {
  let weightMap: unknown;
  try {
    weightMap = (JSON.parse(indexText) as { weight_map?: unknown }).weight_map;
  } catch (cause) {
    throw new XglmError('ERR_XGLM_HUB', `${indexName} is not JSON`, { cause });
  }
  if (!weightMap || typeof weightMap !== 'object') throw new XglmError('ERR_XGLM_HUB', `${indexName} has no weight_map`);
  const shards = [...new Set(Object.values(weightMap as Record<string, unknown>))];
  for (const shard of shards) {
    if (typeof shard !== 'string') throw new XglmError('ERR_XGLM_HUB', `${indexName} maps a tensor to a non-string file`);
    assertSafeRepoFile(shard);
    if (!listing.files.has(shard)) {
      throw new XglmError('ERR_XGLM_HUB', `${indexName} names ${shard}, which ${listing.repo}@${listing.revision} does not hold`);
    }
  }
  return (shards as string[]).sort();
}

/** Fails early (before the weights) when config.json is not an XGLM config. */
export function assertXglmConfig(configText: string, where: string): void {
  let modelType: unknown;
  try {
    modelType = (JSON.parse(configText) as { model_type?: unknown }).model_type;
  } catch (cause) {
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `config.json of ${where} is not JSON`, { cause });
  }
  if (modelType !== 'xglm') {
    throw new XglmError('ERR_XGLM_UNSUPPORTED', `${where} is a ${JSON.stringify(modelType)} model, not XGLM`, {
      hint: 'xglm-node runs the XGLM family: facebook/xglm-564M, -1.7B, -2.9B, -4.5B, -7.5B',
    });
  }
}

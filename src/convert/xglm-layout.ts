/**
 * HuggingFace XGLM tensor names → GGUF tensor names (llama.cpp's "xglm" layout; docs/converting.md),
 * with the expected PyTorch shape of every source tensor and the list of tensors deliberately
 * left out. The planner refuses a checkpoint with a missing, misshapen or unexplained tensor.
 *
 * Shapes: PyTorch [out, in] Linear weights become ggml dims [in, out] (same bytes: ggml's dims
 * are PyTorch's reversed); q, k and v are stacked as rows, so attn_qkv is [n_embd, 3·n_embd].
 */
import { XglmError } from '../errors.js';
import type { XglmHParams } from './config.js';
import { type SourceTensor, rowCount } from './source.js';

/** One GGUF tensor built from the rows of one or more checkpoint tensors (or generated). */
export interface PlannedTensor {
  name: string;
  /** ggml dims: dims[0] is the row length. */
  dims: number[];
  /** Checkpoint tensors whose rows are concatenated, in order; empty for generated tensors. */
  parts: Array<{ source: string; rows: number }>;
  /** Set for tensors computed rather than read (position_embd). */
  generated?: 'position_embd';
}

/** The name mapping, per block and global. `{i}` is the block index. */
export const XGLM_TENSOR_MAP: ReadonlyArray<{ gguf: string; hf: string[]; shape: (hp: XglmHParams) => number[][] }> = [
  { gguf: 'token_embd.weight', hf: ['model.embed_tokens.weight'], shape: (hp) => [[hp.vocabSize, hp.nEmbd]] },
  { gguf: 'blk.{i}.attn_norm.weight', hf: ['model.layers.{i}.self_attn_layer_norm.weight'], shape: (hp) => [[hp.nEmbd]] },
  { gguf: 'blk.{i}.attn_norm.bias', hf: ['model.layers.{i}.self_attn_layer_norm.bias'], shape: (hp) => [[hp.nEmbd]] },
  {
    gguf: 'blk.{i}.attn_qkv.weight',
    hf: ['model.layers.{i}.self_attn.q_proj.weight', 'model.layers.{i}.self_attn.k_proj.weight', 'model.layers.{i}.self_attn.v_proj.weight'],
    shape: (hp) => Array(3).fill([hp.nEmbd, hp.nEmbd]),
  },
  {
    gguf: 'blk.{i}.attn_qkv.bias',
    hf: ['model.layers.{i}.self_attn.q_proj.bias', 'model.layers.{i}.self_attn.k_proj.bias', 'model.layers.{i}.self_attn.v_proj.bias'],
    shape: (hp) => Array(3).fill([hp.nEmbd]),
  },
  { gguf: 'blk.{i}.attn_output.weight', hf: ['model.layers.{i}.self_attn.out_proj.weight'], shape: (hp) => [[hp.nEmbd, hp.nEmbd]] },
  { gguf: 'blk.{i}.attn_output.bias', hf: ['model.layers.{i}.self_attn.out_proj.bias'], shape: (hp) => [[hp.nEmbd]] },
  { gguf: 'blk.{i}.ffn_norm.weight', hf: ['model.layers.{i}.final_layer_norm.weight'], shape: (hp) => [[hp.nEmbd]] },
  { gguf: 'blk.{i}.ffn_norm.bias', hf: ['model.layers.{i}.final_layer_norm.bias'], shape: (hp) => [[hp.nEmbd]] },
  { gguf: 'blk.{i}.ffn_up.weight', hf: ['model.layers.{i}.fc1.weight'], shape: (hp) => [[hp.nFf, hp.nEmbd]] },
  { gguf: 'blk.{i}.ffn_up.bias', hf: ['model.layers.{i}.fc1.bias'], shape: (hp) => [[hp.nFf]] },
  { gguf: 'blk.{i}.ffn_down.weight', hf: ['model.layers.{i}.fc2.weight'], shape: (hp) => [[hp.nEmbd, hp.nFf]] },
  { gguf: 'blk.{i}.ffn_down.bias', hf: ['model.layers.{i}.fc2.bias'], shape: (hp) => [[hp.nEmbd]] },
  { gguf: 'output_norm.weight', hf: ['model.layer_norm.weight'], shape: (hp) => [[hp.nEmbd]] },
  { gguf: 'output_norm.bias', hf: ['model.layer_norm.bias'], shape: (hp) => [[hp.nEmbd]] },
];

/**
 * Checkpoint tensors that are deliberately not converted, and why:
 *   lm_head.weight                 tied to model.embed_tokens.weight (checked equal)
 *   model.embed_positions.*        the sinusoid buffer (fairseq's `_float_tensor`, `weights`):
 *                                  position_embd.weight is recomputed from the formula
 */
export const TIED_OUTPUT = 'lm_head.weight';
export const IGNORED_TENSORS: readonly RegExp[] = [/^model\.embed_positions\.(weights|_float_tensor)$/];

function fail(message: string, hint = 'the checkpoint does not match its config.json, or is not an XGLM model'): XglmError {
  return new XglmError('ERR_XGLM_CONVERT', message, { hint });
}

/**
 * The GGUF tensors in file order, each traced to its checkpoint tensors.
 * @throws XglmError ERR_XGLM_CONVERT for a missing, misshapen or unexpected tensor.
 */
export function planXglmTensors(hp: XglmHParams, tensors: ReadonlyMap<string, SourceTensor>): { plan: PlannedTensor[]; ignored: string[] } {
  const used = new Set<string>();
  const plan: PlannedTensor[] = [];
  const add = (entry: (typeof XGLM_TENSOR_MAP)[number], layer: number | undefined): void => {
    const sub = (s: string) => (layer === undefined ? s : s.replaceAll('{i}', String(layer)));
    const shapes = entry.shape(hp);
    const parts = entry.hf.map((pattern, k) => {
      const source = sub(pattern);
      const t = tensors.get(source);
      if (!t) throw fail(`checkpoint has no tensor ${source}`);
      const want = shapes[k]!;
      if (t.shape.join() !== want.join()) throw fail(`${source} has shape [${t.shape.join(', ')}], config.json implies [${want.join(', ')}]`);
      if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
        throw fail(`${source} is ${t.dtype}`, 'weights must be float32, float16 or bfloat16');
      }
      used.add(source);
      return { source, rows: rowCount(t.shape) };
    });
    const first = shapes[0]!;
    const rowLength = first[first.length - 1]!;
    // Matrices stack their parts as rows; vectors (the fused qkv bias) are joined end to end.
    const dims = first.length === 1 ? [rowLength * parts.length] : [rowLength, parts.reduce((n, p) => n + p.rows, 0)];
    plan.push({ name: sub(entry.gguf), dims, parts });
  };

  const globalEntries = XGLM_TENSOR_MAP.filter((e) => !e.gguf.includes('{i}'));
  const blockEntries = XGLM_TENSOR_MAP.filter((e) => e.gguf.includes('{i}'));
  add(globalEntries.find((e) => e.gguf === 'token_embd.weight')!, undefined);
  plan.push({ name: 'position_embd.weight', dims: [hp.nEmbd, hp.nCtx], parts: [], generated: 'position_embd' });
  for (let i = 0; i < hp.nLayer; i++) for (const e of blockEntries) add(e, i);
  for (const e of globalEntries) if (e.gguf !== 'token_embd.weight') add(e, undefined);

  const ignored: string[] = [];
  for (const name of tensors.keys()) {
    if (used.has(name)) continue;
    if (name === TIED_OUTPUT || IGNORED_TENSORS.some((re) => re.test(name))) {
      ignored.push(name);
      continue;
    }
    throw fail(`checkpoint tensor ${name} is neither converted nor known to be safe to ignore`, 'is this an XGLM checkpoint with extra layers? num_layers in config.json may be wrong');
  }
  if (tensors.has(TIED_OUTPUT) && tensors.get(TIED_OUTPUT)!.shape.join() !== [hp.vocabSize, hp.nEmbd].join()) {
    throw fail(`${TIED_OUTPUT} has shape [${tensors.get(TIED_OUTPUT)!.shape.join(', ')}], not that of the tied embedding`);
  }
  return { plan, ignored };
}

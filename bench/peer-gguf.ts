/**
 * The peer's model: the same GGUF with llama.cpp's GPT-2 architecture keys. XGLM and GPT-2
 * share every tensor name and shape in this layout (learned → here precomputed position
 * table, fused QKV, pre-LayerNorm, tied output), so the file has identical tensor bytes and
 * the same FLOPs per token; only the metadata keys change (xglm.* → gpt2.*).
 */
import fs from 'node:fs';
import { GgufReader, GgufWriter, type GgufKv } from '../src/gguf/index.js';

export async function toGpt2Gguf(xglmFile: string, outFile: string): Promise<void> {
  const reader = GgufReader.open(xglmFile);
  try {
    const kv: GgufKv[] = reader.kv
      .filter((e) => e.key !== 'xglm.embedding_scale')
      .map((e) => {
        if (e.key === 'general.architecture') return { ...e, value: 'gpt2' };
        if (e.key.startsWith('xglm.')) return { ...e, key: `gpt2.${e.key.slice(5)}` };
        return e;
      });
    const writer = await GgufWriter.create(outFile, kv, reader.tensors.map((t) => ({ name: t.name, dims: t.dims, type: t.type })));
    const CHUNK = 64 << 20;
    for (const t of reader.tensors) {
      for (let at = 0; at < t.byteLength; at += CHUNK) {
        await writer.write(reader.readTensorBytes(t, at, Math.min(CHUNK, t.byteLength - at)));
      }
    }
    await writer.finish();
  } finally {
    reader.close();
  }
  if (!fs.existsSync(outFile)) throw new Error(`${outFile} was not written`);
}

import { backendInfo, describeModelFile } from '../../index.js';
import type { ParsedArgs } from '../args.js';
import type { CliIo } from '../main.js';
import { resolveModelPath } from '../model-path.js';

function mb(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

export async function runInfo(args: ParsedArgs, io: CliIo): Promise<void> {
  const file = resolveModelPath(args.positionals[0], io);
  const info = describeModelFile(file);
  const backend = backendInfo();
  if (args.flags.json) {
    const { kernelPlan, ...cpu } = backend;
    io.stdout.write(JSON.stringify({ ...info, cpu, kernels: kernelPlan }) + '\n');
    return;
  }
  const types = Object.entries(info.tensorTypes)
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .map(([t, v]) => `${t} ×${v.tensors} (${mb(v.bytes)})`)
    .join(', ');
  const rows: [string, string][] = [
    ['file', `${info.file} (${mb(info.fileSize)}, GGUF v${info.ggufVersion})`],
    ['architecture', `${info.architecture}${info.name ? ` — ${info.name}` : ''}`],
    ['file type', info.fileType ?? 'unknown'],
    ['parameters', `${(info.parameters / 1e6).toFixed(1)} M`],
    ['layers', String(info.blockCount)],
    ['d_model', String(info.embeddingLength)],
    ['heads', `${info.headCount} (head_dim ${info.embeddingLength / info.headCount})`],
    ['ffn_dim', String(info.feedForwardLength)],
    ['context', `${info.contextLength} tokens`],
    ['vocabulary', `${info.vocabSize} (${info.tokenizerModel ?? 'no'} tokenizer)`],
    ['tensor types', types],
    ['CPU', `${backend.variant}${backend.dynamic ? ` (chosen from ${backend.available.length} variants)` : ' (built for this machine)'}; ${backend.features.join(' ')}`],
    ['kernels', `${backend.kernels}${backend.kernels === 'none' ? ' (ggml ops only)' : ' (xglm-node attention, decode products, GELU)'}${backend.kernelPlan.vnni ? ', AVX-512 VNNI products' : ''}`],
    ['ggml', backend.ggmlVersion],
    ...(backend.compiler ? [['built with', backend.compiler] as [string, string]] : []),
  ];
  const w = Math.max(...rows.map(([k]) => k.length)) + 2;
  const plan = backend.kernelPlan;
  const planLines = plan.error
    ? [`  ${plan.error}`]
    : plan.ops.map((o) => `  ${o.node}: ${o.impl === 'xglm' ? 'xglm-node' : 'ggml'} — ${o.detail}`);
  io.stdout.write(rows.map(([k, v]) => `${k.padEnd(w)}${v}`).join('\n') + '\n' + 'kernel plan (per kind of graph node; see docs/api.md, XGLM_KERNELS)\n' + planLines.join('\n') + '\n');
}

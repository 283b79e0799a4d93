import path from 'node:path';
import { convert, quantize, type ProgressEvent } from '../../convert/index.js';
import { pull } from '../../hub/index.js';
import { UsageError, type ParsedArgs } from '../args.js';
import type { CliIo } from '../main.js';
import { progressBar } from '../progress.js';

function threadsOf(args: ParsedArgs): number | undefined {
  return typeof args.flags.threads === 'number' ? args.flags.threads : undefined;
}

/** A bar over bytes written, drawn on a TTY unless --json. */
function writeProgress(label: string, args: ParsedArgs, io: CliIo) {
  const bar = progressBar(label, { unit: 'bytes', stream: io.stderr as NodeJS.WriteStream, enabled: !args.flags.json && Boolean(io.stderr.isTTY) });
  return {
    bar,
    onProgress: (e: ProgressEvent) => bar.update(e.bytesWritten, e.bytesTotal, `${e.tensorsDone}/${e.tensorsTotal} ${e.tensor}`),
    onWarning: (message: string) => {
      if (!args.flags.json) io.stderr.write(`\nxglm: warning: ${message}\n`);
    },
  };
}

export async function runConvert(args: ParsedArgs, io: CliIo): Promise<void> {
  const out = args.flags.output;
  if (typeof out !== 'string' || out === '') throw new UsageError('missing -o OUT (the GGUF file to write)', 'convert');
  const { bar, onProgress, onWarning } = writeProgress('convert', args, io);
  const result = await convert(args.positionals[0]!, out, { type: String(args.flags.type), onProgress, onWarning, threads: threadsOf(args) });
  bar.done(`${result.file} (${(result.bytes / 1e6).toFixed(1)} MB, ${result.type})`);
  const summary = { file: result.file, type: result.type, bytes: result.bytes, tensors: result.tensors.length, source: result.source, fallbacks: result.fallbacks };
  if (args.flags.json) io.stdout.write(JSON.stringify(summary) + '\n');
  else io.stdout.write(`wrote ${result.file}: ${result.tensors.length} tensors, ${(result.bytes / 1e6).toFixed(1)} MB, ${result.type}${result.fallbacks.length ? `, ${result.fallbacks.length} type fallbacks` : ''}\n`);
}

export async function runQuantize(args: ParsedArgs, io: CliIo): Promise<void> {
  const [input, output, type] = args.positionals as [string, string, string];
  if (path.resolve(input) === path.resolve(output)) throw new UsageError('IN and OUT must be different files', 'quantize');
  const { bar, onProgress, onWarning } = writeProgress('quantize', args, io);
  const result = await quantize(input, output, type, { onProgress, onWarning, threads: threadsOf(args) });
  bar.done(`${result.file} (${result.type})`);
  if (args.flags.json) io.stdout.write(JSON.stringify(result) + '\n');
  else io.stdout.write(`wrote ${result.file} (${result.type})\n`);
}

export async function runPull(args: ParsedArgs, io: CliIo): Promise<void> {
  const showBars = !args.flags.json && Boolean(io.stderr.isTTY);
  const download = progressBar('download', { unit: 'bytes', stream: io.stderr as NodeJS.WriteStream, enabled: showBars });
  const conv = progressBar('convert', { unit: 'bytes', stream: io.stderr as NodeJS.WriteStream, enabled: showBars });
  let converting = false;
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    const result = await pull(args.positionals[0]!, {
      revision: String(args.flags.revision),
      type: String(args.flags.type),
      ...(typeof args.flags.output === 'string' ? { outFile: args.flags.output } : {}),
      ...(typeof args.flags['cache-dir'] === 'string' ? { cacheDir: args.flags['cache-dir'] } : {}),
      signal: controller.signal,
      onProgress: (p) => {
        if (p.totalBytes !== undefined) download.update(p.totalBytesDone, p.totalBytes, `${p.fileIndex + 1}/${p.fileCount} ${p.file}`);
      },
      onConvertProgress: (e) => {
        if (!converting) {
          converting = true;
          download.done('done');
        }
        conv.update(e.bytesWritten, e.bytesTotal, `${e.tensorsDone}/${e.tensorsTotal}`);
      },
    });
    if (!converting) download.done(result.fromCache ? 'in the cache' : 'done');
    else conv.done('done');
    if (args.flags.json) io.stdout.write(JSON.stringify({ repo: result.repo, commit: result.commit, dir: result.dir, gguf: result.gguf, converted: result.converted }) + '\n');
    else io.stdout.write(`${result.gguf ?? result.dir}\n`);
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

/**
 * Loads the native addon and types its whole surface once.
 *
 * Load order: `XGLM_ADDON_PATH` when set; else the prebuild for this platform
 * (prebuilds/<platform>-<arch>/), unless a local build (build/Release/xglm.node) is newer,
 * which is what a developer who just rebuilt expects; else the local build.
 * The addon is loaded on first use, so tokenizer- or GGUF-only users never need it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { XglmError } from './errors.js';

/** Which ggml CPU code runs in this process. */
export interface BackendInfo {
  /** `native` for a build made for this machine; else the ggml variant (`haswell`, `x64`, …). */
  variant: string;
  /** True when the CPU variant was picked at run time from several shipped libraries. */
  dynamic: boolean;
  /** CPU features the chosen code uses (`AVX2`, `FMA`, …). */
  features: string[];
  /** Variant libraries found beside the addon (empty for a static build). */
  available: string[];
  ggmlVersion: string;
}

export interface GgmlTypeInfo {
  name: string;
  blockSize: number;
  typeSize: number;
  quantized: boolean;
}

/** The native surface, as addon.cpp registers it. */
export interface NativeAddon {
  backendInfo(): BackendInfo;
  ggmlTypeInfo(type: number): GgmlTypeInfo;
  rowSize(type: number, nPerRow: number): number;
  /** Quantizes `nRows` rows of `src` into `dst` on native threads; resolves with the bytes written. */
  quantizeRows(type: number, src: Float32Array, dst: Uint8Array, nRows: number, nPerRow: number, nThreads: number): Promise<number>;
  /** Memory read bandwidth in GB/s with `threads` threads over `bytes` (best of `repetitions`); for the benchmark. */
  measureReadBandwidth(bytes: number, threads: number, repetitions: number): Promise<number>;
  /** Peak FP32 FMA throughput in GFLOP/s with `threads` threads (AVX2+FMA); for the benchmark. */
  measurePeakFlops(threads: number): Promise<number>;
}

/** The package root (this file lives in src/ or dist/). */
export const packageRoot = path.resolve(__dirname, '..');

export const BUILD_FROM_SOURCE_COMMAND = 'npm run build:native';

function mtime(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

function findPrebuild(): string | undefined {
  const dir = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  const node = names.filter((n) => n.endsWith('.node')).sort()[0];
  return node ? path.join(dir, node) : undefined;
}

/** The addon files to try, in order. */
export function addonCandidates(): string[] {
  const override = process.env.XGLM_ADDON_PATH;
  if (override) return [path.resolve(override)];
  const prebuild = findPrebuild();
  const local = path.join(packageRoot, 'build', 'Release', 'xglm.node');
  const haveLocal = mtime(local) >= 0;
  if (prebuild && haveLocal && mtime(local) > mtime(prebuild)) return [local, prebuild];
  return [prebuild, haveLocal ? local : undefined].filter((p): p is string => p !== undefined);
}

let addon: NativeAddon | undefined;

/** The loaded addon; throws an XglmError that names the build command when none loads. */
export function native(): NativeAddon {
  if (addon) return addon;
  const candidates = addonCandidates();
  const failures: string[] = [];
  for (const file of candidates) {
    try {
      addon = require(file) as NativeAddon;
      return addon;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ERR_XGLM_BACKEND') {
        throw new XglmError('ERR_XGLM_BACKEND', e.message, { cause: err, hint: 'unset XGLM_CPU_VARIANT or reinstall xglm-node' });
      }
      failures.push(`${path.relative(packageRoot, file)}: ${e.message}`);
    }
  }
  const tried = failures.length ? ` Tried: ${failures.join('; ')}.` : '';
  throw new XglmError(
    'ERR_XGLM_NATIVE_LOAD',
    `no usable native addon for ${process.platform}-${process.arch} (Node-API 8).${tried}`,
    { hint: `build it from source with '${BUILD_FROM_SOURCE_COMMAND}' in ${packageRoot} (needs cmake, a C++17 compiler and git)` },
  );
}

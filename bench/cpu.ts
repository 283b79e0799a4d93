/**
 * Which CPU a benchmark ran on, precisely enough to tell machines apart that report the same
 * name (`lscpu` says "AMD EPYC" for Zen 3 and Zen 4 virtual machines alike): lscpu's model
 * name, /proc/cpuinfo's family/model/stepping, and the SIMD flags that decide which code runs.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

export interface CpuInfo {
  /** lscpu "Model name" (os.cpus() where lscpu is missing). */
  modelName: string;
  vendor?: string;
  family?: number;
  model?: number;
  stepping?: number;
  /** Microarchitecture from vendor, family and model where known (`Zen 4`, `Sapphire Rapids`, …). */
  microarchitecture?: string;
  /** The SIMD flags of SIMD_FLAGS this CPU has, in that order. */
  simd: string[];
  /** Key of this CPU's results block in docs/benchmarks.md. */
  key: string;
}

/** Flags that decide which kernels run (names as in /proc/cpuinfo). */
const SIMD_FLAGS = ['avx', 'avx2', 'fma', 'f16c', 'avx_vnni', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'avx512vbmi', 'avx512_fp16', 'amx_tile', 'amx_int8', 'amx_bf16', 'asimd', 'asimddp', 'sve', 'i8mm'];

function microarchitecture(vendor: string | undefined, family: number | undefined, model: number | undefined): string | undefined {
  if (family === undefined || model === undefined) return undefined;
  if (vendor === 'AuthenticAMD') {
    if (family === 0x17) return model >= 0x30 ? 'Zen 2' : 'Zen / Zen+';
    if (family === 0x19) {
      if (model <= 0x0f || (model >= 0x20 && model <= 0x5f)) return 'Zen 3';
      return 'Zen 4';
    }
    if (family === 0x1a) return 'Zen 5';
  }
  if (vendor === 'GenuineIntel' && family === 6) {
    const intel: Record<number, string> = { 0x55: 'Skylake-SP / Cascade Lake', 0x6a: 'Ice Lake-SP', 0x8f: 'Sapphire Rapids', 0xcf: 'Emerald Rapids', 0xad: 'Granite Rapids', 0x97: 'Alder Lake', 0xb7: 'Raptor Lake' };
    return intel[model];
  }
  return undefined;
}

export function cpuInfo(): CpuInfo {
  let modelName = os.cpus()[0]?.model?.trim() || 'unknown CPU';
  try {
    const m = /^Model name:\s*(.+)$/m.exec(execFileSync('lscpu', { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } }));
    if (m) modelName = m[1]!.trim();
  } catch {
    // no lscpu: keep os.cpus()'s name
  }
  const text = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const first = text.split(/\n\n/)[0] ?? '';
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(first)?.[1]?.trim();
  const num = (name: string) => {
    const v = field(name);
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  };
  const flags = new Set((field('flags') ?? field('Features') ?? '').split(/\s+/));
  const vendor = field('vendor_id');
  const family = num('cpu family');
  const model = num('model');
  const stepping = num('stepping');
  const uarch = microarchitecture(vendor, family, model);
  const simd = SIMD_FLAGS.filter((f) => flags.has(f));
  const key = family !== undefined && model !== undefined ? `${modelName}, family ${family} model ${model}` : `${modelName} (${os.arch()})`;
  return { modelName, vendor, family, model, stepping, microarchitecture: uarch, simd, key };
}

/** One line for the report: `AMD EPYC (Zen 4; family 25 model 17 stepping 1; AVX2 FMA … AVX512_VNNI)`. */
export function describeCpu(c: CpuInfo): string {
  const id = c.family !== undefined ? `family ${c.family} model ${c.model} stepping ${c.stepping}` : undefined;
  const parts = [c.microarchitecture, id, c.simd.map((f) => f.toUpperCase()).join(' ') || 'no AVX'].filter(Boolean);
  return `${c.modelName} (${parts.join('; ')})`;
}

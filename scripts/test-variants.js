#!/usr/bin/env node
// `npm run test:variants`: the oracle suites once per ggml CPU variant this CPU can execute.
//
// Builds every ggml CPU variant beside one addon in build/Variants (not build/Release, which
// stays this machine's native build; the first build takes ~20 minutes on 2 cores, later ones
// only rebuild what changed), asks each variant whether it runs here, then runs the suites
// with XGLM_ADDON_PATH=build/Variants/xglm.node and XGLM_CPU_VARIANT=<variant>. xglm-node's
// own ops follow the variant (backendInfo().kernels): none under x64/sse42/..., avx2 under
// haswell, avx512 under the AVX-512 variants, so each code path meets the PyTorch oracle.
//
//   npm run test:variants                      every variant that runs on this CPU
//   npm run test:variants -- --variants x64,haswell   only these
//   npm run test:variants -- --no-build        use build/Variants as it is
//   npm run test:variants -- --files 'test/engine*.test.ts'   other suites
//
// Ends with the line `variants: N passed, N failed[, N skipped]`; exit code 1 on any failure.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'build', 'Variants');
const addon = path.join(outDir, 'xglm.node');
// The suites that compare against the PyTorch oracle or check the custom kernels.
const SUITES = [
  'test/engine.test.ts',
  'test/engine-kv.test.ts',
  'test/engine-quant.test.ts',
  'test/kv-f16.test.ts',
  'test/runtime.test.ts',
  'test/attention.test.ts',
  'test/output-gemv.test.ts',
  // concurrent streams: several rows per step through ggml's matrix products and the attention
  // op over several sequences, each stream equal to its run alone
  'test/batched.test.ts',
  // the C++ engine and op tests: xglm-engine-tests is built beside the addon in build/Variants
  // and loads the variant XGLM_CPU_VARIANT names, as the addon does
  'test/engine-native.test.ts',
];

const args = process.argv.slice(2);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const wanted = option('--variants')?.split(',').filter(Boolean);
const files = option('--files') ? [option('--files')] : SUITES;

function fail(message, hint) {
  process.stderr.write(`test-variants: error: ${message}\n  hint: ${hint}\n`);
  console.log('variants: 0 passed, 1 failed');
  process.exit(1);
}

if (!args.includes('--no-build')) {
  process.stderr.write('test-variants: building every ggml CPU variant into build/Variants (first time ~20 min on 2 cores)\n');
  const r = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js'), '--all-variants', '--out', outDir], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) fail('the multi-variant build failed', 'see the compiler output above');
}
if (!fs.existsSync(addon)) fail(`${path.relative(root, addon)} is missing`, 'run without --no-build');

const available = fs
  .readdirSync(outDir)
  .filter((n) => /^libggml-cpu-.+\.so$/.test(n))
  .map((n) => n.slice('libggml-cpu-'.length, -'.so'.length));
if (wanted) {
  const unknown = wanted.filter((v) => !available.includes(v));
  if (unknown.length) fail(`unknown variant(s): ${unknown.join(', ')}`, `choose among ${available.join(', ')}`);
}

/** backendInfo() of the addon forced to `variant`, or undefined when this CPU cannot run it. */
function probe(variant) {
  const r = spawnSync(process.execPath, ['-e', 'const i = require(process.env.XGLM_ADDON_PATH).backendInfo(); console.log(JSON.stringify(i))'], {
    env: { ...process.env, XGLM_ADDON_PATH: addon, XGLM_CPU_VARIANT: variant },
    encoding: 'utf8',
  });
  return r.status === 0 ? JSON.parse(r.stdout) : undefined;
}

const runnable = [];
for (const v of wanted ?? available) {
  const info = probe(v);
  if (!info) {
    process.stderr.write(`test-variants: ${v}: not for this CPU, skipped\n`);
    continue;
  }
  if (info.variant !== v) fail(`forcing ${v} loaded ${info.variant}`, 'XGLM_CPU_VARIANT is not honoured: a bug in native/engine/backend.cpp');
  runnable.push({ name: v, kernels: info.kernels });
}
if (runnable.length === 0) fail('no variant runs on this CPU', 'check the build in build/Variants');
// run the plain ones first: a failure there is the cheapest to read
const order = ['x64', 'sse42', 'sandybridge', 'ivybridge', 'piledriver', 'haswell'];
runnable.sort((a, b) => (order.indexOf(a.name) + 1 || 99) - (order.indexOf(b.name) + 1 || 99));

// ava's package exports do not expose its CLI: take the path from its package.json
const avaDir = path.join(root, 'node_modules', 'ava');
const ava = path.join(avaDir, JSON.parse(fs.readFileSync(path.join(avaDir, 'package.json'), 'utf8')).bin.ava ?? 'entrypoints/cli.mjs');
const totals = { passed: 0, failed: 0, skipped: 0 };
const lines = [];
for (const v of runnable) {
  process.stderr.write(`\ntest-variants: ── ${v.name} (xglm kernels: ${v.kernels}) ──\n`);
  const r = spawnSync(process.execPath, [ava, ...files], {
    cwd: root,
    env: { ...process.env, XGLM_ADDON_PATH: addon, XGLM_CPU_VARIANT: v.name, FORCE_COLOR: '0' },
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  const out = `${r.stdout}${r.stderr}`;
  process.stdout.write(out);
  const count = (re) => out.split('\n').filter((l) => re.test(l)).length;
  const summary = (re) => Number((re.exec(out) ?? [])[1] ?? 0);
  const passed = count(/^\s*✔/);
  let failed = Math.max(count(/^\s*✘/), summary(/(\d+) tests? failed/));
  failed += summary(/(\d+) uncaught exceptions?/) + summary(/(\d+) unhandled rejections?/) + summary(/(\d+) tests? timed out/);
  if (r.status !== 0 && failed === 0) failed = 1;
  const skipped = count(/^\s*- \[skip\]/);
  totals.passed += passed;
  totals.failed += failed;
  totals.skipped += skipped;
  lines.push(`  ${v.name.padEnd(16)} kernels ${v.kernels.padEnd(7)} ${passed} passed, ${failed} failed, ${skipped} skipped`);
}

console.log(`\ntest-variants: ${runnable.length} variants on this CPU:\n${lines.join('\n')}`);
console.log(`variants: ${totals.passed} passed, ${totals.failed} failed${totals.skipped ? `, ${totals.skipped} skipped` : ''}`);
process.exit(totals.failed === 0 ? 0 : 1);

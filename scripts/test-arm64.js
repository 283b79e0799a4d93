#!/usr/bin/env node
// `npm run test:arm64`: runs the addon's test suites on the linux-arm64 prebuild, under
// qemu-user with Debian's arm64 Node.js (scripts/arm64-env.js installs both on first use).
//
// 1. Variant check: for several emulated CPUs, the addon loads and picks the ggml variant
//    that CPU supports (a Cortex-A72, Raspberry Pi 4 class, is ARMv8.0 → armv8.0_1; a
//    Neoverse-N1 has dotprod + fp16 → armv8.2_2); XGLM_CPU_VARIANT forces a lower one and
//    refuses one the CPU cannot run.
// 2. The suites: ava's runner on the host Node.js, every test file in an arm64 Node.js
//    under qemu (scripts/arm64-exec-shim.js redirects its fork), loading
//    prebuilds/linux-arm64/xglm.node through XGLM_ADDON_PATH. TypeScript is compiled by tsx
//    with the host's esbuild binary (ESBUILD_BINARY_PATH), which runs natively.
//
//   node scripts/test-arm64.js [--cpu cortex-a72] [--all] [--no-timing] [--match=<ava title glob>] [test files…]
//   (default files: the native, engine and runtime suites; --all: every test file)
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { root, nodeDir, log, fail, ensureHostTools, ensureArm64Node } = require('./arm64-env.js');

const TAG = 'test-arm64';
const args = process.argv.slice(2);
const cpuAt = args.indexOf('--cpu');
const suiteCpu = cpuAt >= 0 ? args[cpuAt + 1] : 'cortex-a72';
const all = args.includes('--all');
const explicitFiles = args.filter((a, i) => !a.startsWith('--') && !(cpuAt >= 0 && i === cpuAt + 1));
// ava's own title filter passes through: --match='*worker*'
const avaOptions = args.filter((a) => a.startsWith('--match='));

// The suites that exercise the addon (native code, engine, runtime); the others are plain
// TypeScript and gain nothing from emulation. Matched against test/*.test.ts names.
const DEFAULT_SUITES = [/^native/, /^engine/, /^runtime/, /^generat/, /^session/, /^electron/, /^memory/, /^model/];

const addon = path.join(root, 'prebuilds', 'linux-arm64', 'xglm.node');
if (!fs.existsSync(addon)) fail(TAG, 'prebuilds/linux-arm64/xglm.node is missing', "build it with 'npm run build:prebuilds:arm64' first");

ensureHostTools(TAG, ['qemu-aarch64', 'dpkg-deb']);
const arm64 = ensureArm64Node(TAG);

// A host script that runs the arm64 Node.js: what the shim execs instead of process.execPath.
const wrapper = path.join(nodeDir, 'node-arm64');
fs.writeFileSync(wrapper, `#!/bin/sh\nexec qemu-aarch64 -L '${arm64.sysroot}' '${arm64.node}' "$@"\n`, { mode: 0o755 });

const esbuildBinary = (() => {
  try {
    return path.join(path.dirname(require.resolve('@esbuild/linux-x64/package.json', { paths: [root] })), 'bin', 'esbuild');
  } catch {
    return undefined;
  }
})();

function emulatedEnv(cpu, extra = {}) {
  const env = {
    ...process.env,
    QEMU_CPU: cpu,
    XGLM_ADDON_PATH: addon,
    XGLM_ARM64_NODE_WRAPPER: wrapper,
    NODE_OPTIONS: `${process.env.NODE_OPTIONS || ''} --require=${path.join(__dirname, 'arm64-exec-shim.js')}`.trim(),
    ...extra,
  };
  if (esbuildBinary && !env.ESBUILD_BINARY_PATH) env.ESBUILD_BINARY_PATH = esbuildBinary;
  delete env.XGLM_CPU_VARIANT;
  if (extra.XGLM_CPU_VARIANT) env.XGLM_CPU_VARIANT = extra.XGLM_CPU_VARIANT;
  return env;
}

// --- 1. which variant each emulated CPU gets --------------------------------------------
const probe = `
  try {
    const i = require(process.env.XGLM_ADDON_PATH).backendInfo();
    console.log(JSON.stringify({ arch: process.arch, node: process.version, variant: i.variant, dynamic: i.dynamic, features: i.features, available: i.available }));
  } catch (e) {
    console.log(JSON.stringify({ error: String(e && e.message) }));
  }`;

function probeCpu(cpu, variant) {
  const t0 = Date.now();
  const r = spawnSync(wrapper, ['-e', probe], { env: emulatedEnv(cpu, variant ? { XGLM_CPU_VARIANT: variant } : {}), encoding: 'utf8' });
  const line = (r.stdout || '').trim().split('\n').pop() || '';
  try {
    return { ...JSON.parse(line), seconds: (Date.now() - t0) / 1000 };
  } catch {
    fail(TAG, `the arm64 Node.js did not run under qemu (${cpu}): ${r.stderr || r.error}`, 'check qemu-user and build/arm64-node (delete it to fetch again)');
  }
}

// Expected picks follow from the cores' documented features and the variants' requirements
// (deps/ggml/src/CMakeLists.txt): A72 = ARMv8.0 (no dotprod); Neoverse-N1 = ARMv8.2 with
// dotprod and fp16 but no SVE; qemu's `max` has everything qemu emulates.
const checks = [
  { cpu: 'cortex-a72', expect: 'armv8.0_1' },
  { cpu: 'neoverse-n1', expect: 'armv8.2_2' },
  { cpu: 'max' },
  { cpu: 'max', force: 'armv8.0_1', expect: 'armv8.0_1' },
  { cpu: 'cortex-a72', force: 'armv8.2_1', expectError: /not a variant this CPU can run/ },
];
let failures = 0;
for (const c of checks) {
  const got = probeCpu(c.cpu, c.force);
  const label = `${c.cpu}${c.force ? ` XGLM_CPU_VARIANT=${c.force}` : ''}`;
  let ok;
  if (c.expectError) ok = got.error !== undefined && c.expectError.test(got.error);
  else ok = got.error === undefined && got.arch === 'arm64' && got.dynamic === true && (c.expect === undefined || got.variant === c.expect);
  failures += ok ? 0 : 1;
  const what = got.error !== undefined ? `error: ${got.error}` : `${got.arch} node ${got.node}: variant ${got.variant} [${got.features.join(' ')}]`;
  log(TAG, `${ok ? 'ok  ' : 'FAIL'} ${label}: ${what} (${got.seconds.toFixed(1)} s)`);
  if (c === checks[0] && got.available) log(TAG, `variants shipped: ${got.available.sort().join(', ')}`);
}

// --- 2. the suites ---------------------------------------------------------------------------
const testDir = path.join(root, 'test');
const files = explicitFiles.length > 0
  ? explicitFiles
  : fs.readdirSync(testDir)
    .filter((n) => n.endsWith('.test.ts') && (all || DEFAULT_SUITES.some((re) => re.test(n))))
    .sort()
    .map((n) => path.join('test', n));
log(TAG, `running under qemu-aarch64 -cpu ${suiteCpu} with Debian ${arm64.debianSuite}'s Node.js ${arm64.nodeVersion}: ${files.join(' ')}`);
const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs'); // not in ava's exports map
if (!fs.existsSync(ava)) fail(TAG, 'ava is not installed', "run 'npm install' in the package folder first");
const t0 = Date.now();
// Emulation is 10-50x slower: long timeouts, one file at a time (2 shared cores).
const r = spawnSync(process.execPath, [ava, '--timeout=60m', '--concurrency=1', ...avaOptions, ...files], {
  cwd: root,
  stdio: 'inherit',
  env: emulatedEnv(suiteCpu, { XGLM_ARM64: '1' }),
});
log(TAG, `suites took ${((Date.now() - t0) / 1000).toFixed(0)} s under emulation`);

// --- 3. per-token time of the fixture models, emulated and (for scale) on the host ----------
if (r.status === 0 && fs.existsSync(path.join(root, 'src', 'engine.ts')) && !args.includes('--no-timing')) {
  const timing = path.join(__dirname, 'arm64-token-time.js');
  const emulated = spawnSync(wrapper, ['--import=tsx', timing, '16'], { cwd: root, env: emulatedEnv(suiteCpu), encoding: 'utf8' });
  const host = spawnSync(process.execPath, ['--import=tsx', timing, '16'], { cwd: root, encoding: 'utf8' });
  for (const [where, out] of [[`qemu -cpu ${suiteCpu}`, emulated], ['host x64', host]]) {
    if (out.status !== 0) {
      log(TAG, `timing (${where}) failed: ${(out.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
      continue;
    }
    for (const line of out.stdout.trim().split('\n')) {
      const m = JSON.parse(line);
      log(TAG, `per-token (${where}, ${m.variant}, 1 thread): ${m.model} ${m.type} ${m.msPerToken} ms/token over ${m.tokens} tokens; prompt of ${m.promptTokens} tokens ${m.promptMs} ms`);
    }
  }
}
if (failures > 0) fail(TAG, `${failures} variant check(s) failed`, 'see the lines marked FAIL above');
process.exit(r.status === null ? 1 : r.status);

#!/usr/bin/env node
// Checks the package as a user gets it: `npm pack`, install the tarball into a fresh
// project with install scripts disabled, then `require` and `import` it and print the CPU
// variant each loads (and that XGLM_CPU_VARIANT=x64 forces the baseline).
// Run after `npm run prebuild` (and `npm run build:ts`).
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-pack-'));
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: work, encoding: 'utf8', ...opts });

try {
  const packed = JSON.parse(sh('npm', ['pack', root, '--json', '--pack-destination', work]))[0];
  const files = packed.files.map((f) => f.path);
  const prebuilt = files.filter((f) => f.startsWith('prebuilds/'));
  if (!prebuilt.some((f) => f.endsWith('.node'))) throw new Error('the tarball holds no prebuilds/*.node: run npm run prebuild first');
  console.log(`tarball ${packed.filename}: ${(packed.size / 1e6).toFixed(1)} MB, ${files.length} files, ${prebuilt.length} in prebuilds/`);
  fs.writeFileSync(path.join(work, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  sh('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', path.join(work, packed.filename)], { stdio: 'pipe' });
  const addonDir = path.join(work, 'node_modules', 'xglm-node');
  if (fs.existsSync(path.join(addonDir, 'build'))) throw new Error('installing created build/: something compiled');
  const cjs = sh(process.execPath, ['-e', "const x = require('xglm-node'); const i = x.backendInfo(); console.log(i.variant + ' dynamic=' + i.dynamic)"]).trim();
  const esm = sh(process.execPath, ['--input-type=module', '-e', "import { backendInfo } from 'xglm-node'; console.log(backendInfo().variant)"]).trim();
  const forced = sh(process.execPath, ['-e', "console.log(require('xglm-node').backendInfo().variant)"], { env: { ...process.env, XGLM_CPU_VARIANT: 'x64' } }).trim();
  console.log(`require: ${cjs}\nimport: ${esm}\nXGLM_CPU_VARIANT=x64: ${forced}`);
  if (forced !== 'x64') throw new Error(`forcing the x64 variant gave ${forced}`);
  if (!cjs.endsWith('dynamic=true')) throw new Error('the installed package did not load the multi-variant prebuild');
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}

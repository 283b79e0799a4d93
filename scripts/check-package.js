#!/usr/bin/env node
// Checks the package as a user gets it: `npm pack`, then
// - the packed package.json has no install-time script (`preinstall`, `install`,
//   `postinstall`) and `gypfile: false` (without it npm adds `node-gyp rebuild` as the
//   install script, because binding.gyp is in the package);
// - install the tarball into a fresh project with install scripts disabled, `require` and
//   `import` it and print the CPU variant each loads (and that XGLM_CPU_VARIANT=x64 forces
//   the baseline);
// - install it once more into a second fresh project WITH scripts enabled (as a plain
//   `npm install xglm-node` does): nothing may compile (no build/ folder) and it must load
//   from prebuilds/. (`prepare` builds from source in a clone, but npm never runs it when
//   installing a tarball or a registry package.)
// Run after `npm run build:prebuilds` (and `npm run build:ts`).
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-pack-'));
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: work, encoding: 'utf8', ...opts });
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall'];

/** A fresh consumer project in work/<name>, with the tarball installed (scripts on or off). */
function consumer(name, tarball, { ignoreScripts }) {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, private: true }));
  const flags = ['install', '--no-audit', '--no-fund', ...(ignoreScripts ? ['--ignore-scripts'] : ['--foreground-scripts']), tarball];
  const r = spawnSync('npm', flags, { cwd: dir, encoding: 'utf8', env: { ...process.env, npm_config_ignore_scripts: String(ignoreScripts) } });
  const log = `${r.stdout}${r.stderr}`;
  if (r.status !== 0) throw new Error(`${name}: npm install failed\n${log}`);
  const addonDir = path.join(dir, 'node_modules', 'xglm-node');
  if (!fs.existsSync(path.join(addonDir, 'package.json'))) throw new Error(`${name}: the package was not installed`);
  if (fs.existsSync(path.join(addonDir, 'build'))) throw new Error(`${name}: installing created build/: something compiled\n${log}`);
  // With --foreground-scripts npm prints '> xglm-node@<version> <event>' for each script it runs.
  const ran = [...log.matchAll(/^> xglm-node@\S+ (\S+)$/gm)].map((m) => m[1]);
  if (ran.length) throw new Error(`${name}: npm ran xglm-node's ${ran.join(', ')} script\n${log}`);
  // npm ≥ 11 lists a dependency's install-time scripts not covered by an allowScripts policy:
  // for a tarball that includes `prepare` (which npm runs only for git and folder dependencies),
  // never an install script.
  const listed = [...log.matchAll(/install-scripts +xglm-node@\S+ \(([^)]*)\)/g)].flatMap((m) => m[1].split(/,\s*/).map((e) => e.split(':')[0]));
  if (listed.some((event) => event !== 'prepare')) throw new Error(`${name}: npm lists install scripts of xglm-node: ${listed.join(', ')}\n${log}`);
  return dir;
}

try {
  const packed = JSON.parse(sh('npm', ['pack', root, '--json', '--pack-destination', work]))[0];
  const tarball = path.join(work, packed.filename);
  const files = packed.files.map((f) => f.path);
  const prebuilt = files.filter((f) => f.startsWith('prebuilds/'));
  if (!prebuilt.some((f) => f.endsWith('.node'))) throw new Error('the tarball holds no prebuilds/*.node: run npm run build:prebuilds first');
  if (files.some((f) => f.startsWith('build/'))) throw new Error('the tarball holds build/: local build output must not ship');
  console.log(`tarball ${packed.filename}: ${(packed.size / 1e6).toFixed(1)} MB, ${files.length} files, ${prebuilt.length} in prebuilds/`);

  // The package.json inside the tarball, as npm will read it when installing.
  const manifest = JSON.parse(sh('tar', ['-xzOf', tarball, 'package/package.json']));
  const installScripts = INSTALL_SCRIPTS.filter((s) => manifest.scripts && s in manifest.scripts);
  if (installScripts.length) throw new Error(`the packed package.json has install-time scripts: ${installScripts.join(', ')}`);
  if (manifest.gypfile !== false) throw new Error('the packed package.json lacks "gypfile": false (npm would run node-gyp rebuild on install)');
  console.log('packed package.json: no preinstall/install/postinstall script, gypfile false');

  // 1. Scripts disabled: loads from prebuilds/, require and import, variant forcing.
  const plain = consumer('no-scripts', tarball, { ignoreScripts: true });
  const run = (args, env = process.env) => sh(process.execPath, args, { cwd: plain, env }).trim();
  const cjs = run(['-e', "const x = require('xglm-node'); const i = x.backendInfo(); console.log(i.variant + ' dynamic=' + i.dynamic)"]);
  const esm = run(['--input-type=module', '-e', "import { backendInfo } from 'xglm-node'; console.log(backendInfo().variant)"]);
  const forced = run(['-e', "const i = require('xglm-node').backendInfo(); console.log(i.variant + ' kernels=' + i.kernels)"], { ...process.env, XGLM_CPU_VARIANT: 'x64' });
  console.log(`require: ${cjs}\nimport: ${esm}\nXGLM_CPU_VARIANT=x64: ${forced}`);
  // the x64 variant has no AVX2 code, so xglm-node's own ops must not run either
  if (forced !== 'x64 kernels=none') throw new Error(`forcing the x64 variant gave ${forced}`);
  if (!cjs.endsWith('dynamic=true')) throw new Error('the installed package did not load the multi-variant prebuild');

  // 2. Scripts enabled: npm must run nothing that compiles; the package still loads its prebuild.
  const scripted = consumer('with-scripts', tarball, { ignoreScripts: false });
  const loaded = sh(process.execPath, ['-e', "const i = require('xglm-node').backendInfo(); console.log(i.variant + ' dynamic=' + i.dynamic)"], { cwd: scripted }).trim();
  console.log(`installed with scripts enabled: no build/, require: ${loaded}`);
  if (!loaded.endsWith('dynamic=true')) throw new Error('the package installed with scripts enabled did not load the multi-variant prebuild');
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}

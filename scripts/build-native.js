#!/usr/bin/env node
// Builds the addon from source: fetches ggml (pinned, checksummed) and runs the one CMake
// build through cmake-js. Output: build/Release/xglm.node (+ ggml libraries in variant mode).
//
//   node scripts/build-native.js              native build for this CPU (dev, CI)
//   node scripts/build-native.js --all-variants   every ggml CPU variant, picked at run time
//   node scripts/build-native.js --sanitize   ASan/UBSan build into build/Sanitize (never build/Release;
//                                             scripts/sanitize.sh runs the native tests on it)
//   --out DIR                                 put the .node (and libraries) in DIR instead
//                                             (npm run test:variants builds into build/Variants)
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const allVariants = args.includes('--all-variants') || process.env.XGLM_ALL_VARIANTS === '1';
const sanitize = args.includes('--sanitize');
const outArg = args.indexOf('--out');

function fail(message, hint) {
  process.stderr.write(`build-native: error: ${message}\n  hint: ${hint}\n`);
  process.exit(1);
}

function haveCommand(cmd) {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore' });
  return !r.error;
}

if (!haveCommand('cmake')) fail('cmake was not found on PATH', 'install CMake ≥ 3.18 (Debian: apt-get install cmake) and run this again');
if (!haveCommand('c++') && !haveCommand('g++')) fail('no C++ compiler on PATH', 'install a C++17 compiler (Debian: apt-get install g++) and run this again');

const fetch = spawnSync(process.execPath, [path.join(__dirname, 'fetch-ggml.js')], { stdio: 'inherit' });
if (fetch.status !== 0) process.exit(fetch.status || 1);

// The build tools (cmake-js, node-addon-api, node-api-headers) are dev dependencies: a clone's
// `npm ci` has them; an installed package does not, so they are installed on demand, at the
// versions its package.json pins, into build/tools/ (never into the user's dependencies).
const env = { ...process.env };
let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  require.resolve('node-addon-api', { paths: [root] });
} catch {
  const toolsDir = path.join(root, 'build', 'tools');
  const toolsModules = path.join(toolsDir, 'node_modules');
  const pins = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).devDependencies || {};
  const specs = ['cmake-js', 'node-addon-api', 'node-api-headers'].map((name) => `${name}@${pins[name] || 'latest'}`);
  if (!fs.existsSync(path.join(toolsModules, 'cmake-js', 'package.json')) || !fs.existsSync(path.join(toolsModules, 'node-addon-api', 'package.json'))) {
    process.stderr.write(`build-native: installing the build tools into ${path.relative(root, toolsDir)}: ${specs.join(' ')}\n`);
    fs.mkdirSync(toolsDir, { recursive: true });
    fs.writeFileSync(path.join(toolsDir, 'package.json'), '{"private":true}\n');
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const i = spawnSync(npm, ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--ignore-scripts', ...specs], { cwd: toolsDir, stdio: 'inherit', shell: process.platform === 'win32' });
    if (i.status !== 0) fail('installing the build tools failed (see npm\'s output above)', `check the connection to the npm registry, or run 'npm install --no-save ${specs.join(' ')}' in ${root}`);
  }
  cmakeJs = path.join(toolsModules, 'cmake-js', 'bin', 'cmake-js');
  // CMakeLists.txt asks `node -p "require('node-addon-api')"` for its headers.
  env.NODE_PATH = [toolsModules, env.NODE_PATH].filter(Boolean).join(path.delimiter);
}

// One CMake build tree per configuration, so switching modes does not mix caches.
const flavour = sanitize ? 'sanitize' : allVariants ? 'variants' : 'native';
const buildDir = path.join(root, 'build', `cmake-${flavour}`);
// A sanitizer build has its own output folder: it must never replace the dev build.
const outDir = outArg >= 0 && args[outArg + 1] ? path.resolve(args[outArg + 1]) : path.join(root, 'build', sanitize ? 'Sanitize' : 'Release');
// Variant libraries of an earlier build must not sit beside a static addon (or the reverse).
// (Only our files: node-gyp keeps its own bookkeeping in build/Release too.)
fs.mkdirSync(outDir, { recursive: true });
for (const name of fs.readdirSync(outDir)) {
  if (name.endsWith('.node') || /\.so(\.|$)/.test(name)) fs.rmSync(path.join(outDir, name), { force: true });
}

const cmakeArgs = [
  cmakeJs, 'build', '--directory', root, '--out', buildDir, '--config', 'Release',
  '--parallel', String(Math.max(1, os.availableParallelism ? os.availableParallelism() : os.cpus().length)),
  `--CDXGLM_OUTPUT_DIR=${outDir}`,
  `--CDXGLM_ALL_VARIANTS=${allVariants ? 'ON' : 'OFF'}`,
  `--CDXGLM_SANITIZE=${sanitize ? 'ON' : 'OFF'}`,
  '--log-level', 'warn',
];
const r = spawnSync(process.execPath, cmakeArgs, { stdio: 'inherit', cwd: root, env });
if (r.status !== 0) fail('the CMake build failed (see the compiler output above)', `fix the reported problem, then run 'npm run build:native' again`);
const outRel = path.relative(root, path.join(outDir, 'xglm.node'));
if (!fs.existsSync(path.join(outDir, 'xglm.node'))) fail(`the build finished but ${outRel} is missing`, 'report this as a bug');
process.stderr.write(`build-native: ${outRel} (${flavour})\n`);

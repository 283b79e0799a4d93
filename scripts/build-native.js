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
//
// Compiler (Linux): CC/CXX when set; otherwise, for the build for this CPU (-march=native), clang
// ≥ 15 when one is on PATH (clang++-19 … clang++), else the system's GCC: ggml's CPU kernels built
// with clang 19 measured 9–15% faster prefill than with GCC 12 on a Zen 4 (docs/benchmarks.md).
// The all-variants build (prebuilds, test:variants) keeps GCC: there clang measured no faster
// under the zen4 variant and up to 1.7x slower under haswell (F16 and Q8_0 prefill).
// XGLM_COMPILER=gcc|clang chooses; the sanitizer build keeps GCC (sanitize.sh preloads its runtimes).
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

/** The full path of a command on PATH, or null. */
function which(cmd) {
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { encoding: 'utf8' });
  const found = r.status === 0 ? r.stdout.trim() : '';
  return found && path.isAbsolute(found) ? found : null;
}

/** The C and C++ compilers to configure with ({ cc, cxx, why }), or null for CMake's default. */
function chooseCompiler() {
  if (process.platform !== 'linux') return null;
  if (process.env.CC || process.env.CXX) {
    return { cc: process.env.CC ? which(process.env.CC) || process.env.CC : null, cxx: process.env.CXX ? which(process.env.CXX) || process.env.CXX : null, why: 'CC/CXX' };
  }
  const pref = (process.env.XGLM_COMPILER || (sanitize || allVariants ? 'gcc' : 'auto')).toLowerCase();
  if (pref !== 'auto' && pref !== 'clang' && pref !== 'gcc') {
    fail(`XGLM_COMPILER=${process.env.XGLM_COMPILER} is not a compiler choice`, 'use XGLM_COMPILER=auto (clang when found, else GCC), clang or gcc; or set CC and CXX');
  }
  if (pref !== 'gcc') {
    for (const v of ['-19', '-18', '-17', '-16', '-15', '']) {
      const cxx = which(`clang++${v}`);
      const cc = which(`clang${v}`);
      if (!cxx || !cc) continue;
      const out = spawnSync(cxx, ['--version'], { encoding: 'utf8' }).stdout || '';
      const major = Number((/clang version (\d+)/.exec(out) || [])[1]);
      if (major >= 15) return { cc, cxx, why: `clang ${major}` };
    }
    if (pref === 'clang') fail('XGLM_COMPILER=clang, but no clang ≥ 15 was found on PATH', 'install one (Debian: apt-get install clang-19) or use XGLM_COMPILER=gcc');
  }
  const cxx = which('g++') || which('c++');
  const cc = which('gcc') || which('cc');
  return cxx && cc ? { cc, cxx, why: 'GCC' } : null;
}

const compiler = chooseCompiler();
// CMake keeps the compiler of a build tree's first configuration: a tree made with another one
// is started afresh (else the choice would be silently ignored, or name a compiler now gone).
const cachePath = path.join(buildDir, 'CMakeCache.txt');
if (compiler && compiler.cxx && fs.existsSync(cachePath)) {
  const cached = (/^CMAKE_CXX_COMPILER:[A-Z]+=(.*)$/m.exec(fs.readFileSync(cachePath, 'utf8')) || [])[1];
  const real = (p) => { try { return fs.realpathSync(p); } catch { return p; } };
  if (cached && real(cached) !== real(compiler.cxx)) {
    process.stderr.write(`build-native: ${path.relative(root, buildDir)} was configured with ${cached}; starting it afresh with ${compiler.cxx}\n`);
    fs.rmSync(buildDir, { recursive: true, force: true });
  }
}
if (compiler) process.stderr.write(`build-native: compiler ${compiler.cxx || compiler.cc} (${compiler.why}; XGLM_COMPILER=gcc|clang or CC/CXX choose another)\n`);
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
  ...(compiler && compiler.cc ? [`--CDCMAKE_C_COMPILER=${compiler.cc}`] : []),
  ...(compiler && compiler.cxx ? [`--CDCMAKE_CXX_COMPILER=${compiler.cxx}`] : []),
  '--log-level', 'warn',
];
const r = spawnSync(process.execPath, cmakeArgs, { stdio: 'inherit', cwd: root, env });
if (r.status !== 0) fail('the CMake build failed (see the compiler output above)', `fix the reported problem, then run 'npm run build:native' again`);
const outRel = path.relative(root, path.join(outDir, 'xglm.node'));
if (!fs.existsSync(path.join(outDir, 'xglm.node'))) fail(`the build finished but ${outRel} is missing`, 'report this as a bug');
process.stderr.write(`build-native: ${outRel} (${flavour})\n`);

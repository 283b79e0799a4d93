#!/usr/bin/env node
// `npm run build:prebuilds:arm64`: cross-compiles the addon and ggml for linux-arm64 on an x64
// Debian host, into prebuilds/linux-arm64/: xglm.node (Node-API) + libggml.so +
// libggml-base.so + one libggml-cpu-<variant>.so per ggml ARM variant (armv8.0_1 … armv9.2_2),
// the best of which native/engine/backend.cpp picks at run time. Stripped for aarch64.
//
// The same CMakeLists.txt as the x64 build, driven by CMake directly (cmake-js does not
// cross-compile): toolchain cmake/aarch64-linux-gnu.cmake, Node-API headers from the
// node-api-headers package (a Node-API addon on Linux links against nothing from Node).
// Build tree build/cmake-arm64/, output build/arm64/ (build/Release is left alone).
// A cold build takes ~30+ minutes on 2 shared cores; a rebuild after a native/ change, seconds.
//
//   node scripts/prebuild-arm64.js [--jobs N]
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { root, TRIPLE, log, fail, run, ensureHostTools } = require('./arm64-env.js');
const { crossBuild } = require('./cross-env.js');

const TAG = 'prebuild-arm64';
const args = process.argv.slice(2);
const jobsAt = args.indexOf('--jobs');
const jobs = jobsAt >= 0 ? Number(args[jobsAt + 1]) : os.availableParallelism ? os.availableParallelism() : os.cpus().length;

const buildDir = path.join(root, 'build', 'cmake-arm64');
const outDir = path.join(root, 'build', 'arm64');
const prebuildDir = path.join(root, 'prebuilds', 'linux-arm64');

ensureHostTools(TAG);
const buildSeconds = crossBuild(TAG, { triple: TRIPLE, buildDir, outDir, jobs, script: 'npm run build:prebuilds:arm64' });

// Pack: the addon and every ggml library beside it (found through RPATH $ORIGIN).
const wanted = fs.readdirSync(outDir).filter((n) => n === 'xglm.node' || /^libggml.*\.so$/.test(n));
if (!wanted.includes('xglm.node')) fail(TAG, `the build finished but ${path.relative(root, outDir)}/xglm.node is missing`, 'report this as a bug');
fs.rmSync(prebuildDir, { recursive: true, force: true });
fs.mkdirSync(prebuildDir, { recursive: true });
for (const name of wanted) {
  const to = path.join(prebuildDir, name);
  fs.copyFileSync(path.join(outDir, name), to);
  run(TAG, `${TRIPLE}-strip`, ['--strip-unneeded', to]);
  const machine = fs.readFileSync(to).readUInt16LE(18); // ELF e_machine
  if (machine !== 183) fail(TAG, `${name} is not an AArch64 ELF file (e_machine ${machine})`, 'check the toolchain file');
}
fs.copyFileSync(path.join(root, 'deps', 'ggml', 'LICENSE'), path.join(prebuildDir, 'LICENSE.ggml'));

const files = fs.readdirSync(prebuildDir);
const variants = files.filter((n) => n.startsWith('libggml-cpu-')).map((n) => n.slice(12, -3));
const bytes = files.reduce((s, n) => s + fs.statSync(path.join(prebuildDir, n)).size, 0);
log(TAG, `prebuilds/linux-arm64: ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB; CPU variants: ${variants.join(', ')}`);
log(TAG, `build step ${buildSeconds.toFixed(0)} s; run the suites under emulation with 'npm run test:arm64'`);

#!/usr/bin/env node
// `npm run prebuild:win32`: cross-compiles the addon and ggml for win32-x64 on an x64 Debian
// host with mingw-w64, into prebuilds/win32-x64/: xglm.node (Node-API, bound to the host
// process, native/addon/win32-host.cpp) + ggml.dll + ggml-base.dll + one ggml-cpu-<variant>.dll
// per ggml x64 variant (x64 … zen4, sapphirerapids; the same 12 of ggml's 14 as linux-x64,
// scripts/ship-prebuild.js says which two stay out and why), the best of which
// native/engine/backend.cpp picks at run time. The C and C++ runtimes are
// linked statically: the files import only Windows system DLLs (checked below with objdump)
// and the Node-API functions of the host executable.
//
// The same CMakeLists.txt as the Linux builds, driven by CMake directly (cmake-js does not
// cross-compile): toolchain cmake/x86_64-w64-mingw32.cmake, Node-API headers from the
// node-api-headers package. Build tree build/cmake-win32/, output build/win32/.
// A cold build compiles ggml's CPU code fifteen times: ~35-45 minutes on 2 shared cores.
//
//   node scripts/prebuild-win32.js [--jobs N]
//   node scripts/prebuild-win32.js --dev-variants x64,haswell,zen4
//       development only: compiles just those variants (the others become empty stand-ins) and
//       packs build/win32-dev/prebuild (never prebuilds/); test it with 'npm run test:win32 -- --dev'
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { root, TRIPLE, log, fail, run, ensureHostTools } = require('./win32-env.js');
const { crossBuild } = require('./cross-env.js');
const { LEFT_OUT } = require('./ship-prebuild.js');

const TAG = 'prebuild-win32';
const args = process.argv.slice(2);
const jobsAt = args.indexOf('--jobs');
const jobs = jobsAt >= 0 ? Number(args[jobsAt + 1]) : os.availableParallelism ? os.availableParallelism() : os.cpus().length;
const devAt = args.indexOf('--dev-variants');
const devVariants = devAt >= 0 ? String(args[devAt + 1] || '').split(',').filter(Boolean) : [];
const dev = devVariants.length > 0;

// One build tree for both: a dev build leaves the other variants' objects alone (stand-ins link
// elsewhere), so the full build afterwards compiles only what the dev build skipped.
const buildDir = path.join(root, 'build', 'cmake-win32');
const outDir = path.join(root, 'build', 'win32');
const prebuildDir = dev ? path.join(root, 'build', 'win32-dev', 'prebuild') : path.join(root, 'prebuilds', 'win32-x64');

// What a DLL of the prebuild may import: Windows' own DLLs, and Node-API from the host
// ("node.exe" is the name in the delay-load import table; win32-host.cpp maps it to the
// running executable). ggml's libraries import each other.
const SYSTEM_DLLS = new Set(['kernel32.dll', 'msvcrt.dll', 'user32.dll', 'advapi32.dll', 'shell32.dll', 'ole32.dll', 'ws2_32.dll', 'bcrypt.dll', 'ntdll.dll', 'api-ms-win-core-synch-l1-2-0.dll']);
const OWN_DLLS = new Set(['ggml.dll', 'ggml-base.dll']);

/**
 * The DLLs a PE file imports (objdump -p's import tables), and whether it delay-loads node.exe.
 * GNU ld leaves the PE header's delay-import directory empty for dlltool's delay-import
 * libraries (the thunks carry their descriptor), so objdump lists no delay imports: the
 * descriptor's DLL name in the file is the sign, and test:win32 proves the binding works.
 */
function imports(file) {
  const r = spawnSync(`${TRIPLE}-objdump`, ['-p', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) fail(TAG, `objdump -p ${file} failed: ${r.stderr}`, 'check binutils-mingw-w64-x86-64');
  const plain = [...r.stdout.matchAll(/^\s*DLL Name: (\S+)/gm)].map((m) => m[1].toLowerCase());
  const delayed = fs.readFileSync(file).includes(Buffer.from('node.exe\0', 'latin1')) ? ['node.exe'] : [];
  return { plain, delayed };
}

ensureHostTools(TAG, ['cmake', 'ninja', `${TRIPLE}-g++-posix`, `${TRIPLE}-dlltool`, `${TRIPLE}-objdump`]);
const buildSeconds = crossBuild(TAG, {
  triple: TRIPLE, buildDir, outDir, jobs, script: 'npm run prebuild:win32',
  defines: [`-DXGLM_DEV_CPU_VARIANTS=${devVariants.join(';')}`],
});

// Pack: the addon and every ggml DLL beside it (backend.cpp finds the variants there).
const isVariant = (n) => /^ggml-cpu-.+\.dll$/.test(n);
const wanted = fs.readdirSync(outDir).filter((n) => {
  if (n === 'xglm.node' || n === 'ggml.dll' || n === 'ggml-base.dll') return true;
  if (!isVariant(n)) return false;
  const variant = n.slice(9, -4);
  if (LEFT_OUT.x64.includes(variant)) return false; // the same 12 variants as linux-x64 (why: ship-prebuild.js)
  return !dev || devVariants.includes(variant); // the dev build's other variants are empty stand-ins
});
if (!wanted.includes('xglm.node')) fail(TAG, `the build finished but ${path.relative(root, outDir)}/xglm.node is missing`, 'report this as a bug');
fs.rmSync(prebuildDir, { recursive: true, force: true });
fs.mkdirSync(prebuildDir, { recursive: true });
const problems = [];
const report = [];
for (const name of wanted) {
  const to = path.join(prebuildDir, name);
  fs.copyFileSync(path.join(outDir, name), to);
  run(TAG, `${TRIPLE}-strip`, ['--strip-unneeded', to]);
  const buf = fs.readFileSync(to);
  const pe = buf.readUInt32LE(0x3c);
  if (buf.toString('latin1', pe, pe + 4) !== 'PE\0\0' || buf.readUInt16LE(pe + 4) !== 0x8664) fail(TAG, `${name} is not an x64 PE file`, 'check the toolchain file');
  const { plain, delayed } = imports(to);
  for (const d of plain) if (!SYSTEM_DLLS.has(d) && !OWN_DLLS.has(d)) problems.push(`${name} imports ${d}`);
  for (const d of delayed) if (d !== 'node.exe' || name !== 'xglm.node') problems.push(`${name} delay-loads ${d}`);
  if (name === 'xglm.node' && !delayed.includes('node.exe')) problems.push('xglm.node does not take Node-API from the host (no delay-loaded node.exe)');
  report.push(`${name}: ${[...plain, ...delayed.map((d) => `${d} (delay-loaded: the host)`)].join(', ')}`);
}
fs.copyFileSync(path.join(root, 'deps', 'ggml', 'LICENSE'), path.join(prebuildDir, 'LICENSE.ggml'));
for (const line of report) log(TAG, `imports ${line}`);
if (problems.length > 0) fail(TAG, `the prebuild depends on more than Windows and the host:\n  ${problems.join('\n  ')}`, 'link that library statically (CMakeLists.txt, MINGW)');

const files = fs.readdirSync(prebuildDir);
const variants = files.filter(isVariant).map((n) => n.slice(9, -4));
const bytes = files.reduce((s, n) => s + fs.statSync(path.join(prebuildDir, n)).size, 0);
log(TAG, `${path.relative(root, prebuildDir)}: ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB; CPU variants: ${variants.join(', ')}`);
log(TAG, `build step ${buildSeconds.toFixed(0)} s; run the suites under Wine with 'npm run test:win32${dev ? ' -- --dev' : ''}'`);

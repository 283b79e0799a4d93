// What the cross builds share (linux-arm64: arm64-env.js, prebuild-arm64.js; win32-x64:
// win32-env.js, prebuild-win32.js): messages, commands, host tools installed with apt-get on
// first use, and the all-variants CMake build for a toolchain file.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function log(tag, message) {
  process.stderr.write(`${tag}: ${message}\n`);
}

function fail(tag, message, hint) {
  process.stderr.write(`${tag}: error: ${message}\n  hint: ${hint}\n`);
  process.exit(1);
}

function run(tag, cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.error || r.status !== 0) fail(tag, `'${cmd} ${args.join(' ')}' failed`, opts.hint || 'see the output above');
  return r;
}

function haveCommand(cmd) {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore' });
  return !r.error;
}

let aptUpdated = false;

/**
 * Installs with apt-get (once per machine) the packages of the `needed` commands that are
 * missing. `tools` is a list of [command, 'package …'] pairs.
 */
function ensureHostTools(tag, tools, needed = tools.map(([cmd]) => cmd)) {
  const missing = [...new Set(tools.filter(([cmd]) => needed.includes(cmd) && !haveCommand(cmd)).flatMap(([, pkgs]) => pkgs.split(' ')))];
  if (missing.length === 0) return;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    fail(tag, `missing host packages: ${missing.join(' ')}`, `run 'sudo apt-get install --no-install-recommends ${missing.join(' ')}' and try again`);
  }
  log(tag, `installing ${missing.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) run(tag, 'apt-get', ['update', '-qq'], { env, hint: 'check the network access to the Debian mirror' });
  aptUpdated = true;
  run(tag, 'apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env, hint: 'install them by hand' });
}

/**
 * Fetches ggml, configures the one CMakeLists.txt for `triple`'s toolchain file with every CPU
 * variant and builds it, niced (the variants compile ggml's big files many times over on
 * shared cores). Returns the seconds the build took.
 */
function crossBuild(tag, { triple, buildDir, outDir, jobs, defines = [], script }) {
  run(tag, process.execPath, [path.join(__dirname, 'fetch-ggml.js')]);
  let napiInclude;
  try {
    napiInclude = require('node-api-headers').include_dir;
  } catch {
    fail(tag, 'the node-api-headers package is not installed', "run 'npm install' in the package folder first");
  }
  const started = Date.now();
  fs.mkdirSync(outDir, { recursive: true });
  run(tag, 'cmake', [
    '-S', root, '-B', buildDir, '-G', 'Ninja',
    `-DCMAKE_TOOLCHAIN_FILE=${path.join(root, 'cmake', `${triple}.cmake`)}`,
    '-DCMAKE_BUILD_TYPE=Release',
    '-DXGLM_ALL_VARIANTS=ON',
    `-DXGLM_OUTPUT_DIR=${outDir}`,
    `-DCMAKE_JS_INC=${napiInclude}`,
    ...defines,
    '--log-level=WARNING',
  ], { hint: 'the CMake configure step failed; see its output above' });
  run(tag, 'nice', ['-n', '10', 'cmake', '--build', buildDir, '--parallel', String(jobs)], {
    hint: `fix the reported problem, then run '${script}' again (the build resumes)`,
  });
  return (Date.now() - started) / 1000;
}

module.exports = { root, log, fail, run, haveCommand, ensureHostTools, crossBuild };

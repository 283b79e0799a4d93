// Preloaded (NODE_OPTIONS=--require) into the arm64 Node.js that scripts/test-arm64.js runs
// under qemu-user. Without binfmt_misc, the kernel cannot exec an arm64 binary, so a child
// Node.js started with process.execPath (ava's test workers, CLI tests) would fail with
// ENOEXEC. Such spawns are redirected to a host shell script that starts qemu-aarch64 with
// the same arm64 Node.js. Other programs (e.g. the host's esbuild) run as they are.
'use strict';

const childProcess = require('node:child_process');
const { syncBuiltinESMExports } = require('node:module');

const wrapper = process.env.XGLM_ARM64_NODE_WRAPPER;

if (wrapper) {
  const own = new Set([process.execPath, 'node', process.argv0]);
  const mapFile = (file) => (own.has(file) ? wrapper : file);

  const { fork, spawn, spawnSync, execFile, execFileSync } = childProcess;
  childProcess.fork = function (modulePath, args, options) {
    // fork(path, options) and fork(path, args, options)
    if (args !== undefined && args !== null && !Array.isArray(args) && typeof args === 'object') {
      return fork.call(this, modulePath, [], { ...args, execPath: mapFile(args.execPath || process.execPath) });
    }
    return fork.call(this, modulePath, args, { ...options, execPath: mapFile((options && options.execPath) || process.execPath) });
  };
  childProcess.spawn = function (file, ...rest) {
    return spawn.call(this, mapFile(file), ...rest);
  };
  childProcess.spawnSync = function (file, ...rest) {
    return spawnSync.call(this, mapFile(file), ...rest);
  };
  childProcess.execFile = function (file, ...rest) {
    return execFile.call(this, mapFile(file), ...rest);
  };
  childProcess.execFileSync = function (file, ...rest) {
    return execFileSync.call(this, mapFile(file), ...rest);
  };
  syncBuiltinESMExports();
}

#!/usr/bin/env node
// Builds what is missing or stale, nothing more. Run as `prepare` (so `npm ci` / `npm install`
// in a clone leaves a working package: `npx xglm ...` runs) and as `pretest` (`npm test`).
// - the native addon for this machine's CPU (build/Release/xglm.node; never all variants,
//   never prebuilds/), when there is neither a prebuild nor a local build, or a native
//   source is newer than the local build (an incremental CMake build takes seconds; a cold
//   one, ggml included, 2-4 minutes on 2 cores);
// - the TypeScript build in dist/ (the CLI and the package entry points run from it).
// npm never runs `prepare` when installing the published package (a tarball with prebuilds/).
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const addon = path.join(root, 'build', 'Release', 'xglm.node');

// An installed package (no src/: it ships dist/ and prebuilds/) has nothing to build, should
// an npm ever run its `prepare`.
if (!fs.existsSync(path.join(root, 'src'))) process.exit(0);

function mtime(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

// Every file under native/ counts (engine/, engine/ops/, addon/, tools/, tests/), at any depth.
function newestSource() {
  const files = [path.join(root, 'CMakeLists.txt')];
  for (const entry of fs.readdirSync(path.join(root, 'native'), { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) files.push(path.join(entry.parentPath ?? entry.path, entry.name));
  }
  return Math.max(...files.map(mtime));
}

function run(script, args = []) {
  const r = spawnSync(process.execPath, [path.join(__dirname, script), ...args], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) process.exit(r.status || 1);
}

const prebuildDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const havePrebuild = fs.existsSync(prebuildDir) && fs.readdirSync(prebuildDir).some((n) => n.endsWith('.node'));
const localTime = mtime(addon);
if ((localTime < 0 && !havePrebuild) || (localTime >= 0 && newestSource() > localTime)) run('build-native.js');

// TypeScript's package exports do not expose its bin script: take the path from its package.json.
const tsDir = path.join(root, 'node_modules', 'typescript');
if (!fs.existsSync(path.join(tsDir, 'package.json'))) {
  // e.g. `npm ci --omit=dev`: the dev dependencies, TypeScript among them, are not installed.
  process.stderr.write("ensure-built: error: TypeScript is not installed, so dist/ cannot be built\n  hint: run 'npm ci' (with the dev dependencies), then 'npm run build:ts'\n");
  process.exit(1);
}
const tsc = path.join(tsDir, JSON.parse(fs.readFileSync(path.join(tsDir, 'package.json'), 'utf8')).bin.tsc);
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit', cwd: root });
if (r.status !== 0) process.exit(r.status || 1);
run('write-esm-entry.js');

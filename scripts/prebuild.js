#!/usr/bin/env node
// `npm run build:prebuilds`: the distributable addon for this platform in prebuilds/<platform>-<arch>/:
// xglm.node (Node-API, stripped) plus libggml*.so and every ggml CPU variant library
// (libggml-cpu-<variant>.so), the best of which is chosen at run time; ship-prebuild.js
// strips the libraries and leaves out two variants (why: there).
//
// prebuildify runs `node-gyp rebuild`, which starts by deleting build/; to leave the
// developer's own build alone it runs in a copy of the sources (build/prebuild-src/).
// A cold build of all variants takes ~20 minutes on 2 cores.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { shipPrebuild } = require('./ship-prebuild.js');

const root = path.resolve(__dirname, '..');
const platformDir = `${process.platform}-${process.arch}`;
const work = path.join(root, 'build', 'prebuild-src');

function step(cmd, args, opts = {}) {
  process.stderr.write(`prebuild: ${cmd} ${args.join(' ')}\n`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.status !== 0) {
    process.stderr.write(`prebuild: error: '${cmd}' failed\n`);
    process.exit(r.status || 1);
  }
}

step(process.execPath, [path.join(__dirname, 'fetch-ggml.js')]);

fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });
for (const entry of ['package.json', 'binding.gyp', 'CMakeLists.txt', 'native', 'scripts', 'deps/ggml']) {
  fs.cpSync(path.join(root, entry), path.join(work, entry), { recursive: true });
}
fs.symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'), 'dir');

// The action in binding.gyp needs no Node headers (CMake takes Node-API's from the
// node-api-headers package), but node-gyp's configure step wants a header folder: use the
// running Node's own when it has one, so no download is needed.
const env = { ...process.env, XGLM_ALL_VARIANTS: '1' };
const nodePrefix = path.resolve(path.dirname(process.execPath), '..');
if (!env.npm_config_nodedir && fs.existsSync(path.join(nodePrefix, 'include', 'node', 'node_api.h'))) {
  env.npm_config_nodedir = nodePrefix;
}
const prebuildify = require.resolve('prebuildify/bin.js', { paths: [root] });
step(process.execPath, [prebuildify, '--napi', '--strip', '--target', process.versions.node], { cwd: work, env });

const from = path.join(work, 'prebuilds', platformDir);
const to = path.join(root, 'prebuilds', platformDir);
fs.rmSync(to, { recursive: true, force: true });
fs.mkdirSync(to, { recursive: true });
// prebuildify 6 names the addon after the package (xglm-node.node); the platform packages and
// the resolver (src/native.ts) load xglm.node.
for (const name of fs.readdirSync(from)) fs.copyFileSync(path.join(from, name), path.join(to, name.endsWith('.node') ? 'xglm.node' : name));
fs.copyFileSync(path.join(root, 'deps', 'ggml', 'LICENSE'), path.join(to, 'LICENSE.ggml'));
shipPrebuild(to);

const files = fs.readdirSync(to);
const variants = files.filter((n) => n.startsWith('libggml-cpu-')).map((n) => n.slice(12, -3));
const bytes = files.reduce((s, n) => s + fs.statSync(path.join(to, n)).size, 0);
process.stderr.write(`prebuild: prebuilds/${platformDir}: ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB; CPU variants: ${variants.join(', ')}\n`);

#!/usr/bin/env node
// Trims a linux prebuild folder to what ships: `node scripts/ship-prebuild.js prebuilds/linux-x64`
// (scripts/prebuild.js runs it on its output).
// - Symbols no loader needs are stripped from the ggml libraries (prebuildify strips only
//   the .node): ~1.2 MB of 19 on linux-x64.
// - Two of ggml's 14 x64 CPU variants are left out, because each repeats its neighbour for
//   CPUs almost nobody runs, and every user downloads every variant (the platform package has
//   a 20 MB budget, demo model and JS included):
//     cannonlake  skylakex plus AVX512-VBMI, which ggml 0.23 only reports and never computes
//                 with; the CPU itself was one laptop chip (Core i3-8121U): it loads skylakex;
//     cooperlake  4-socket Xeons of 2020; they load cascadelake, losing AVX512-BF16, which only
//                 BF16 model files use (vec.cpp, llamafile's sgemm).
//   The variant a CPU gets is still the best loadable one (native/engine/backend.cpp scores the
//   libraries it finds), and `npm run test:variants` keeps testing all 14 builds.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const LEFT_OUT = { x64: ['cannonlake', 'cooperlake'] };

function shipPrebuild(dir, arch = process.arch) {
  for (const variant of LEFT_OUT[arch] ?? []) fs.rmSync(path.join(dir, `libggml-cpu-${variant}.so`), { force: true });
  const libs = fs.readdirSync(dir).filter((n) => n.endsWith('.so')).map((n) => path.join(dir, n));
  if (libs.length > 0 && arch === process.arch) {
    const r = spawnSync('strip', ['--strip-unneeded', ...libs], { stdio: 'inherit' });
    if (r.error || r.status !== 0) process.stderr.write('ship-prebuild: warning: strip failed; the libraries ship unstripped\n');
  }
}

module.exports = { shipPrebuild, LEFT_OUT };

if (require.main === module) {
  const dir = process.argv[2];
  if (!dir || !fs.existsSync(dir)) {
    process.stderr.write('usage: node scripts/ship-prebuild.js <prebuilds/platform-arch folder>\n');
    process.exit(2);
  }
  shipPrebuild(path.resolve(dir));
}

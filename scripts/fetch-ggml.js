#!/usr/bin/env node
// Lays ggml's source in deps/ggml, taken from the npm registry and verified.
//
// ggml is not committed to this repository. The llama.cpp release bundled inside
// node-llama-cpp@3.21.1 (llama/gitRelease.bundle) carries ggml 0.23.0; we take the
// package tarball with `npm pack`, check its sha256, clone the bundle, check the commit,
// and copy ggml/ (CPU backend only) plus llama.cpp's MIT licence.
'use strict';

const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const PIN = {
  package: 'node-llama-cpp@3.21.1',
  tarball: 'node-llama-cpp-3.21.1.tgz',
  tarballSha256: '7a231d6bafa14142a1cbed9893d4ec5bc6041b2a5f5939a623accaab4203c11f',
  bundlePath: 'package/llama/gitRelease.bundle',
  commit: '80fb11ac73e66d89eae2c6a91d8a77428fa733ed',
  ggmlVersion: '0.23.0',
};

const root = path.resolve(__dirname, '..');
const depsDir = path.join(root, 'deps');
const ggmlDir = path.join(depsDir, 'ggml');
const stampFile = path.join(ggmlDir, '.xglm-node-stamp');
const cacheDir = path.join(depsDir, '.cache');

// Backends we never build: dropping them keeps deps/ggml small (CPU backend only).
const KEEP_SRC = new Set(['ggml-cpu']);

function fail(message, hint) {
  process.stderr.write(`fetch-ggml: error: ${message}\n  hint: ${hint}\n`);
  process.exit(1);
}

function run(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts }).toString();
  } catch (err) {
    if (err.code === 'ENOENT') {
      const pkg = cmd === 'npm' ? 'npm (it comes with Node.js)' : cmd;
      fail(`'${cmd}' was not found on PATH`, `install ${pkg} (Debian: apt-get install ${cmd}) and run 'npm run build:native' again`);
    }
    const stderr = err.stderr ? err.stderr.toString().trim() : '';
    fail(`'${cmd} ${args.join(' ')}' failed: ${stderr || err.message}`, 'check that the npm registry is reachable, then run \'npm run fetch-ggml\' again');
  }
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function isFetched() {
  try {
    return fs.readFileSync(stampFile, 'utf8').trim() === PIN.commit;
  } catch {
    return false;
  }
}

function obtainTarball() {
  fs.mkdirSync(cacheDir, { recursive: true });
  const file = path.join(cacheDir, PIN.tarball);
  if (!fs.existsSync(file) || sha256(file) !== PIN.tarballSha256) {
    process.stderr.write(`fetch-ggml: npm pack ${PIN.package}\n`);
    run('npm', ['pack', PIN.package, '--silent', '--pack-destination', cacheDir]);
  }
  const actual = sha256(file);
  if (actual !== PIN.tarballSha256) {
    fs.rmSync(file, { force: true });
    fail(`checksum mismatch for ${PIN.tarball}: expected sha256 ${PIN.tarballSha256}, got ${actual}`,
      'the registry served a different file; check your npm registry/proxy settings and run \'npm run fetch-ggml\' again');
  }
  return file;
}

function copyGgml(srcGgml) {
  fs.rmSync(ggmlDir, { recursive: true, force: true });
  fs.cpSync(srcGgml, ggmlDir, {
    recursive: true,
    filter: (src) => {
      const rel = path.relative(srcGgml, src).split(path.sep);
      if (rel[0] === 'src' && rel.length >= 2 && rel[1].startsWith('ggml-') && !rel[1].includes('.')) {
        return KEEP_SRC.has(rel[1]);
      }
      return true;
    },
  });
}

function main() {
  if (isFetched() && !process.argv.includes('--force')) return;
  run('git', ['--version']);
  const tarball = obtainTarball();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-ggml-'));
  try {
    run('tar', ['-xzf', tarball, '-C', work, PIN.bundlePath]);
    const clone = path.join(work, 'llama.cpp');
    run('git', ['clone', '--quiet', path.join(work, PIN.bundlePath), clone]);
    const head = run('git', ['-C', clone, 'rev-parse', 'HEAD']).trim();
    if (head !== PIN.commit) {
      fail(`the bundle holds commit ${head}, expected ${PIN.commit}`, `the pinned package ${PIN.package} changed; do not build from it`);
    }
    const cmakeText = fs.readFileSync(path.join(clone, 'ggml', 'CMakeLists.txt'), 'utf8');
    const version = ['MAJOR', 'MINOR', 'PATCH'].map((k) => (cmakeText.match(new RegExp(`GGML_VERSION_${k} (\\d+)`)) || [])[1]).join('.');
    if (version !== PIN.ggmlVersion) {
      fail(`the bundle holds ggml ${version}, expected ${PIN.ggmlVersion}`, `the pinned package ${PIN.package} changed; do not build from it`);
    }
    copyGgml(path.join(clone, 'ggml'));
    fs.copyFileSync(path.join(clone, 'LICENSE'), path.join(ggmlDir, 'LICENSE'));
    fs.writeFileSync(stampFile, PIN.commit + '\n');
    process.stderr.write(`fetch-ggml: ggml ${version} (llama.cpp ${PIN.commit.slice(0, 8)}) in ${path.relative(root, ggmlDir)}\n`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main();

#!/usr/bin/env node
// `npm run build:npm-packages`: the packages to publish, in build/npm/ (or --out DIR):
// - one per platform that has a prebuild (prebuilds/<platform>-<arch>/, made by
//   `npm run build:prebuilds` / `build:prebuilds:arm64`): `@xglm-node/<platform>-<arch>`, with
//   `os`, `cpu` and `libc` set so npm installs it only where it runs, the same version as
//   xglm-node, and only the addon, its ggml libraries (every CPU variant) and ggml's licence;
// - xglm-node itself (what `npm pack` gives: dist/, bin/, the demo model, the sources for a
//   build from source; no binaries), its package.json listing those platform packages as
//   optionalDependencies at the same version. The repository's package.json does not list
//   them: `npm ci` in a clone would fail on packages that are not published yet.
// Publish the platform packages first, then xglm-node:
//   for d in build/npm/platforms/*/; do npm publish "$d"; done && npm publish build/npm/xglm-node --ignore-scripts
// `npm run check-package` publishes them all to a local registry and installs from it.
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const SCOPE = '@xglm-node';

/** Every platform xglm-node can publish a prebuild for; a package is made for those with a prebuilds/ folder. */
const PLATFORMS = {
  'linux-x64': { os: 'linux', cpu: 'x64', libc: 'glibc', binaries: /^(xglm\.node|libggml[\w-]*\.so)$/ },
  'linux-arm64': { os: 'linux', cpu: 'arm64', libc: 'glibc', binaries: /^(xglm\.node|libggml[\w-]*\.so)$/ },
  'win32-x64': { os: 'win32', cpu: 'x64', libc: undefined, binaries: /^(xglm\.node|ggml[\w-]*\.dll)$/ },
};

const packageName = (platform) => `${SCOPE}/${platform}`;

/** The prebuild folders present in `prebuildsDir`, as { platform: dir }. */
function prebuiltPlatforms(prebuildsDir = path.join(root, 'prebuilds')) {
  const found = {};
  for (const platform of Object.keys(PLATFORMS)) {
    const dir = path.join(prebuildsDir, platform);
    if (fs.existsSync(path.join(dir, 'xglm.node'))) found[platform] = dir;
  }
  return found;
}

/** The package.json of a platform package. */
function platformManifest(platform, main) {
  const p = PLATFORMS[platform];
  if (!p) throw new Error(`unknown platform ${platform} (known: ${Object.keys(PLATFORMS).join(', ')})`);
  return {
    name: packageName(platform),
    version: main.version,
    description: `xglm-node's prebuilt native addon for ${platform}${p.libc ? ` (${p.libc})` : ''}: the addon and ggml's CPU variant libraries`,
    license: main.license,
    ...(main.repository ? { repository: main.repository } : {}),
    os: [p.os],
    cpu: [p.cpu],
    ...(p.libc ? { libc: [p.libc] } : {}),
    main: 'xglm.node',
    files: ['xglm.node', '*.so', '*.dll', 'LICENSE.ggml'],
    engines: main.engines,
    preferUnplugged: true,
  };
}

/**
 * Writes the package for `platform` from the prebuild folder `from` into outDir/platforms/<platform>;
 * returns { name, dir, files }. Refuses a prebuild without xglm.node or with unexpected files.
 */
function writePlatformPackage(platform, from, outDir, main) {
  const manifest = platformManifest(platform, main);
  const names = fs.readdirSync(from).sort();
  if (!names.includes('xglm.node')) throw new Error(`${from} holds no xglm.node`);
  const { binaries } = PLATFORMS[platform];
  const unexpected = names.filter((n) => !binaries.test(n) && n !== 'LICENSE.ggml');
  if (unexpected.length) throw new Error(`${from}: unexpected files ${unexpected.join(', ')} (a platform package holds the addon, its ggml libraries and LICENSE.ggml)`);
  const dir = path.join(outDir, 'platforms', platform);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const n of names) fs.copyFileSync(path.join(from, n), path.join(dir, n));
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const variants = names.filter((n) => /^(lib)?ggml-cpu-/.test(n)).map((n) => n.replace(/^(lib)?ggml-cpu-|\.(so|dll)$/g, ''));
  fs.writeFileSync(
    path.join(dir, 'README.md'),
    `# ${manifest.name}\n\n` +
      `The prebuilt native addon of [xglm-node](https://www.npmjs.com/package/xglm-node) ${main.version} for ${platform}` +
      `${manifest.libc ? ` (${manifest.libc[0]})` : ''}: \`xglm.node\` (Node-API 8) and ggml's libraries` +
      `${variants.length ? `, with the CPU variants ${variants.join(', ')} (the best one for the CPU is chosen at run time)` : ''}.\n\n` +
      'Do not install it yourself: `npm install xglm-node` adds it as an optional dependency on the platform it fits, ' +
      'and xglm-node loads it from there. Keep its files together (the addon finds the libraries beside itself); ' +
      'an Electron app must unpack it from the asar archive.\n\n' +
      'ggml is MIT-licensed (© the ggml authors): `LICENSE.ggml`.\n',
  );
  return { name: manifest.name, dir, files: names };
}

/**
 * The package.json of the published xglm-node, from the repository's: the platform packages
 * as optionalDependencies at the same version; no `prepack` (it builds dist/ in a clone and
 * has already run: the staged folder has no sources to build from).
 */
function mainManifest(main, platformNames) {
  const out = { ...main, scripts: { ...main.scripts } };
  delete out.scripts.prepack;
  out.optionalDependencies = { ...(main.optionalDependencies || {}) };
  for (const name of platformNames) out.optionalDependencies[name] = main.version;
  return out;
}

/** `npm pack`s xglm-node (running its prepack: dist/) and lays it out in outDir/xglm-node with mainManifest(). */
function writeMainPackage(outDir, platformNames) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-stage-'));
  try {
    const packed = JSON.parse(execFileSync('npm', ['pack', root, '--json', '--pack-destination', tmp], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }))[0];
    const files = packed.files.map((f) => f.path);
    const binaries = files.filter((f) => f.startsWith('prebuilds/') || f.startsWith('build/') || f.endsWith('.node'));
    if (binaries.length) throw new Error(`xglm-node's tarball holds binaries (they belong in the platform packages): ${binaries.slice(0, 5).join(', ')}`);
    const dir = path.join(outDir, 'xglm-node');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    execFileSync('tar', ['-xzf', path.join(tmp, packed.filename), '-C', dir, '--strip-components=1']);
    const manifest = mainManifest(JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')), platformNames);
    fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    return { name: manifest.name, dir, files, packedBytes: packed.size, unpackedBytes: packed.unpackedSize };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Writes every package into outDir: the platform packages for `platforms` ({ platform: prebuild dir },
 * default: the prebuilds/ folders present), then xglm-node listing them. Returns what was written.
 */
function writeAll(outDir, platforms = prebuiltPlatforms()) {
  const main = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  fs.mkdirSync(outDir, { recursive: true });
  const platformPackages = Object.entries(platforms).map(([platform, from]) => ({ platform, ...writePlatformPackage(platform, from, outDir, main) }));
  const mainPackage = writeMainPackage(outDir, platformPackages.map((p) => p.name));
  return { platformPackages, mainPackage };
}

module.exports = { PLATFORMS, SCOPE, packageName, prebuiltPlatforms, platformManifest, writePlatformPackage, mainManifest, writeMainPackage, writeAll };

if (require.main === module) {
  const i = process.argv.indexOf('--out');
  const outDir = path.resolve(i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : path.join(root, 'build', 'npm'));
  const platforms = prebuiltPlatforms();
  const missing = Object.keys(PLATFORMS).filter((p) => !(p in platforms));
  if (!Object.keys(platforms).length) {
    process.stderr.write("platform-packages: error: no prebuilds/<platform>/xglm.node\n  hint: run 'npm run build:prebuilds' (and 'npm run build:prebuilds:arm64') first\n");
    process.exit(1);
  }
  const { platformPackages, mainPackage } = writeAll(outDir, platforms);
  const shown = (dir) => (dir.startsWith(root + path.sep) ? path.relative(root, dir) : dir);
  for (const p of platformPackages) process.stderr.write(`platform-packages: ${shown(p.dir)}: ${p.name} (${p.files.length} files)\n`);
  process.stderr.write(`platform-packages: ${shown(mainPackage.dir)}: xglm-node, optionalDependencies ${platformPackages.map((p) => p.name).join(', ')}\n`);
  if (missing.length) process.stderr.write(`platform-packages: note: no prebuild for ${missing.join(', ')}: users there build from source\n`);
}

/**
 * One small main package plus one package per platform: the addon resolver's order (in temp
 * folders laid out as npm installs them), its error, and the packages
 * scripts/platform-packages.js makes. The real install from a registry is
 * `npm run check-package` (a publish rehearsal on a local verdaccio).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addonCandidates, platformPackageName } from '../src/native.js';

const root = path.join(__dirname, '..');
const packaging = require('../scripts/platform-packages.js') as {
  PLATFORMS: Record<string, { os: string; cpu: string; libc: string | undefined }>;
  platformManifest(platform: string, main: object): Record<string, unknown>;
  writePlatformPackage(platform: string, from: string, outDir: string, main: object): { name: string; dir: string; files: string[] };
  mainManifest(main: object, names: string[]): Record<string, any>;
};
const repoManifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

function tempDir(t: import('ava').ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-resolve-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function touch(file: string, text = ''): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

/** A consumer project as npm lays it out: node_modules/xglm-node beside node_modules/@xglm-node/<platform>. */
function installedLayout(t: import('ava').ExecutionContext, platforms: string[]) {
  const project = tempDir(t);
  const pkgRoot = path.join(project, 'node_modules', 'xglm-node');
  touch(path.join(pkgRoot, 'package.json'), '{"name":"xglm-node"}');
  const addons: Record<string, string> = {};
  for (const p of platforms) {
    touch(path.join(project, 'node_modules', '@xglm-node', p, 'package.json'), JSON.stringify({ name: `@xglm-node/${p}`, main: 'xglm.node' }));
    addons[p] = touch(path.join(project, 'node_modules', '@xglm-node', p, 'xglm.node'));
  }
  return { project, pkgRoot, addons };
}

const search = (rootDir: string, env: NodeJS.ProcessEnv = {}) => ({ root: rootDir, env, platform: 'linux', arch: 'x64', libc: 'glibc' });

test('the platform package is named after platform, arch and (musl only) libc', (t) => {
  t.is(platformPackageName('linux', 'x64', 'glibc'), '@xglm-node/linux-x64');
  t.is(platformPackageName('linux', 'arm64', 'glibc'), '@xglm-node/linux-arm64');
  t.is(platformPackageName('linux', 'x64', 'musl'), '@xglm-node/linux-x64-musl');
  t.is(platformPackageName('win32', 'x64', undefined), '@xglm-node/win32-x64');
});

test('resolver order: XGLM_ADDON_PATH alone, else local build, clone prebuild, platform package', (t) => {
  const { pkgRoot, addons } = installedLayout(t, ['linux-x64', 'linux-arm64']);
  // An installed package: only the platform package, and only the one for the platform asked.
  t.deepEqual(addonCandidates(search(pkgRoot)), [addons['linux-x64']]);
  t.deepEqual(addonCandidates({ ...search(pkgRoot), arch: 'arm64' }), [addons['linux-arm64']]);
  t.deepEqual(addonCandidates({ ...search(pkgRoot), arch: 'ia32' }), []);
  // A build from source (build/Release) and a clone's prebuild folder come first.
  const local = touch(path.join(pkgRoot, 'build', 'Release', 'xglm.node'));
  const prebuild = touch(path.join(pkgRoot, 'prebuilds', 'linux-x64', 'xglm.node'));
  t.deepEqual(addonCandidates(search(pkgRoot)), [local, prebuild, addons['linux-x64']]);
  // The explicit path wins and is the only one tried (relative paths are taken from the cwd).
  t.deepEqual(addonCandidates(search(pkgRoot, { XGLM_ADDON_PATH: '/opt/app/xglm.node' })), ['/opt/app/xglm.node']);
  t.deepEqual(addonCandidates(search(pkgRoot, { XGLM_ADDON_PATH: 'rel/xglm.node' })), [path.resolve('rel/xglm.node')]);
});

test('resolver: a musl host looks for the -musl package, never the glibc one', (t) => {
  const { pkgRoot } = installedLayout(t, ['linux-x64']);
  t.deepEqual(addonCandidates({ ...search(pkgRoot), libc: 'musl' }), []);
});

test('resolver: the platform package is found where npm hoists it, from a nested xglm-node too', (t) => {
  const { project, addons } = installedLayout(t, ['linux-x64']);
  // e.g. node_modules/some-app/node_modules/xglm-node with @xglm-node/linux-x64 hoisted to the top
  const nested = path.join(project, 'node_modules', 'some-app', 'node_modules', 'xglm-node');
  touch(path.join(nested, 'package.json'), '{"name":"xglm-node"}');
  t.deepEqual(addonCandidates(search(nested)), [addons['linux-x64']]);
});

test('with no addon anywhere, native() throws ERR_XGLM_NATIVE_LOAD naming the platform, libc, package and the source build', (t) => {
  // A copy of the TypeScript sources in a folder with no build/, no prebuilds/ and no platform package.
  const dir = tempDir(t);
  fs.cpSync(path.join(root, 'src'), path.join(dir, 'src'), { recursive: true });
  const script = `
    const { native } = require(${JSON.stringify(path.join(dir, 'src', 'native.ts'))});
    try { native(); console.log('loaded'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, hint: e.hint })); }`;
  const env = { ...process.env };
  delete env.XGLM_ADDON_PATH;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: root, env, encoding: 'utf8' });
  const err = JSON.parse(out.trim().split('\n').pop()!);
  t.is(err.code, 'ERR_XGLM_NATIVE_LOAD');
  t.true(err.message.includes(`${process.platform}-${process.arch}`), err.message);
  if (process.platform === 'linux') t.regex(err.message, /\((glibc|musl)\)/);
  t.true(err.message.includes(platformPackageName()), err.message);
  t.regex(err.hint, /npm run build:native/);
  t.regex(err.hint, /cmake/);
});

test('a platform package: os/cpu/libc set, the main version, only the addon, ggml libraries and licence', (t) => {
  const from = tempDir(t);
  for (const n of ['xglm.node', 'libggml.so', 'libggml-base.so', 'libggml-cpu-x64.so', 'libggml-cpu-haswell.so', 'LICENSE.ggml']) touch(path.join(from, n), n);
  const out = tempDir(t);
  const made = packaging.writePlatformPackage('linux-x64', from, out, repoManifest);
  const m = JSON.parse(fs.readFileSync(path.join(made.dir, 'package.json'), 'utf8'));
  t.is(m.name, '@xglm-node/linux-x64');
  t.is(m.version, repoManifest.version);
  t.deepEqual([m.os, m.cpu, m.libc], [['linux'], ['x64'], ['glibc']]);
  t.is(m.main, 'xglm.node');
  t.is(m.scripts, undefined);
  t.regex(fs.readFileSync(path.join(made.dir, 'README.md'), 'utf8'), /haswell, x64/);
  // What npm would pack: exactly the binaries, the licence, README and package.json.
  const packed = JSON.parse(execFileSync('npm', ['pack', made.dir, '--dry-run', '--json', '--ignore-scripts'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))[0];
  t.deepEqual(packed.files.map((f: { path: string }) => f.path).sort(), ['LICENSE.ggml', 'README.md', 'libggml-base.so', 'libggml-cpu-haswell.so', 'libggml-cpu-x64.so', 'libggml.so', 'package.json', 'xglm.node']);
  // A stray file in the prebuild folder is refused, not shipped.
  touch(path.join(from, 'notes.txt'));
  t.throws(() => packaging.writePlatformPackage('linux-x64', from, out, repoManifest), { message: /unexpected files notes\.txt/ });
});

test('every platform xglm-node publishes: linux-x64, linux-arm64 (glibc) and a win32-x64 slot', (t) => {
  t.deepEqual(Object.keys(packaging.PLATFORMS).sort(), ['linux-arm64', 'linux-x64', 'win32-x64']);
  for (const [platform, p] of Object.entries(packaging.PLATFORMS)) {
    t.is(`${p.os}-${p.cpu}`, platform);
    const m = packaging.platformManifest(platform, repoManifest);
    t.is(m.name, platformPackageName(p.os, p.cpu, p.libc), 'the resolver looks for the name the packaging script publishes');
  }
});

test('the published xglm-node: the platform packages as optionalDependencies at its version, no dependencies, no prepack', (t) => {
  const m = packaging.mainManifest(repoManifest, ['@xglm-node/linux-x64', '@xglm-node/linux-arm64']);
  t.deepEqual(m.optionalDependencies, { '@xglm-node/linux-x64': repoManifest.version, '@xglm-node/linux-arm64': repoManifest.version });
  t.is(m.scripts.prepack, undefined);
  t.is(m.gypfile, false);
  t.is(repoManifest.scripts.prepack, 'npm run build:ts', 'the repository keeps its own prepack');
});

test('the repository package.json: nothing but what runs is a dependency; no binaries in its files', (t) => {
  // Build tools are dev dependencies (scripts/build-native.js installs them on demand elsewhere).
  t.deepEqual(Object.keys(repoManifest.dependencies ?? {}), []);
  for (const tool of ['cmake-js', 'node-addon-api', 'node-api-headers']) t.truthy(repoManifest.devDependencies[tool], tool);
  t.false(repoManifest.files.some((f: string) => /prebuilds|build\//.test(f)));
  // Unpublished optional dependencies would break a clone's `npm ci`: they are added at packaging time.
  t.is(repoManifest.optionalDependencies, undefined);
});

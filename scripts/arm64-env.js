// The linux-arm64 tooling on an x64 Debian host, installed on first use (idempotent):
//  - host packages through apt-get: Debian's aarch64 cross toolchain, clang-19, qemu-user,
//    CMake and Ninja (needs root, as on the project's machines and CI);
//  - an arm64 Node.js from Debian's arm64 packages, unpacked into build/arm64-node/root with
//    a private apt state (build/arm64-node/apt), so the machine's own apt setup, its
//    architectures and its x64 /usr/bin/node are never touched.
// Used by scripts/prebuild-arm64.js and scripts/test-arm64.js.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const { root, log, fail, run, haveCommand, ensureHostTools: ensureTools } = require('./cross-env.js');

const TRIPLE = 'aarch64-linux-gnu';
// Debian's arm64 Node.js comes from this suite: trixie ships Node 20 (bookworm only 18,
// which is below the package's engines and ava's).
const DEBIAN_SUITE = process.env.XGLM_ARM64_DEBIAN_SUITE || 'trixie';
const nodeDir = path.join(root, 'build', 'arm64-node');
const sysroot = path.join(nodeDir, 'root');

// Host command → Debian package that provides it.
const HOST_TOOLS = [
  ['cmake', 'cmake'],
  ['ninja', 'ninja-build'],
  [`${TRIPLE}-g++`, `g++-${TRIPLE}`],
  [`${TRIPLE}-strip`, `binutils-${TRIPLE}`],
  ['clang-19', 'clang-19'],
  ['qemu-aarch64', 'qemu-user'],
  ['dpkg-deb', 'dpkg'],
];

/** Installs the missing host tools with apt-get (once per machine). */
function ensureHostTools(tag, needed = HOST_TOOLS.map(([cmd]) => cmd)) {
  ensureTools(tag, HOST_TOOLS, needed);
}

function aptOptions(dir) {
  return [
    '-o', `Dir::Etc::SourceList=${path.join(dir, 'sources.list')}`,
    '-o', 'Dir::Etc::SourceParts=/dev/null',
    '-o', `Dir::State=${path.join(dir, 'state')}`,
    '-o', `Dir::State::status=${path.join(dir, 'state', 'status')}`,
    '-o', `Dir::Cache=${path.join(dir, 'cache')}`,
    '-o', 'APT::Architecture=arm64',
    '-o', 'APT::Architectures::=arm64',
    '-o', 'Debug::NoLocking=1',
    '-q',
  ];
}

/**
 * Debian's arm64 Node.js unpacked into build/arm64-node/root (with its libraries: the closure
 * of `nodejs` resolved by apt against an empty system). Returns the paths to run it.
 */
function ensureArm64Node(tag) {
  const node = path.join(sysroot, 'usr', 'bin', 'node');
  const stamp = path.join(nodeDir, 'installed.json');
  if (fs.existsSync(node) && fs.existsSync(stamp)) return { sysroot, node, ...JSON.parse(fs.readFileSync(stamp, 'utf8')) };
  ensureHostTools(tag, ['dpkg-deb', 'qemu-aarch64']);
  const apt = path.join(nodeDir, 'apt');
  fs.rmSync(nodeDir, { recursive: true, force: true });
  for (const d of ['state/lists/partial', 'cache/archives/partial']) fs.mkdirSync(path.join(apt, d), { recursive: true });
  fs.writeFileSync(path.join(apt, 'state', 'status'), '');
  fs.writeFileSync(
    path.join(apt, 'sources.list'),
    `deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian ${DEBIAN_SUITE} main\n`,
  );
  const opts = aptOptions(apt);
  log(tag, `fetching Debian ${DEBIAN_SUITE}'s arm64 nodejs into ${path.relative(root, sysroot)}`);
  run(tag, 'apt-get', [...opts, 'update'], { hint: 'check the network access to the Debian mirror' });
  run(tag, 'apt-get', [...opts, 'install', '-y', '--download-only', '--no-install-recommends', 'nodejs'], {
    hint: 'apt could not resolve nodejs:arm64 for an empty system',
  });
  const archives = path.join(apt, 'cache', 'archives');
  const debs = fs.readdirSync(archives).filter((n) => n.endsWith('.deb'));
  fs.mkdirSync(sysroot, { recursive: true });
  for (const deb of debs) run(tag, 'dpkg-deb', ['-x', path.join(archives, deb), sysroot]);
  // Debian's arm64 paths: /lib is a symlink to usr/lib in merged-/usr packages; the dynamic
  // loader is looked up at /lib/ld-linux-aarch64.so.1 inside the prefix.
  const loader = path.join(sysroot, 'lib', 'ld-linux-aarch64.so.1');
  if (!fs.existsSync(loader)) {
    const real = path.join('usr', 'lib', 'ld-linux-aarch64.so.1');
    const multi = path.join('usr', 'lib', TRIPLE, 'ld-linux-aarch64.so.1');
    fs.mkdirSync(path.dirname(loader), { recursive: true });
    fs.symlinkSync(path.join('..', fs.existsSync(path.join(sysroot, real)) ? real : multi), loader);
  }
  const nodeDeb = debs.find((n) => n.startsWith('nodejs_')) || '';
  const info = { debianSuite: DEBIAN_SUITE, nodeVersion: nodeDeb.split('_')[1] || 'unknown', packages: debs };
  fs.writeFileSync(stamp, JSON.stringify(info, null, 2));
  fs.rmSync(archives, { recursive: true, force: true });
  return { sysroot, node, ...info };
}

module.exports = { root, TRIPLE, nodeDir, sysroot, log, fail, run, haveCommand, ensureHostTools, ensureArm64Node };

/**
 * The package as consumers load it: `require` and `import` of the built entry points
 * (dist/, made by `npm test`'s build step) give the same API, with types beside them.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.join(__dirname, '..');
const names = ['loadModel', 'loadTokenizer', 'Tokenizer', 'convert', 'quantize', 'pull', 'XglmError', 'backendInfo', 'describeModelFile'];

test('require and import expose the same named API, and ship .d.ts types', (t) => {
  const probe = `[${names.map((n) => `typeof x.${n}`).join(',')}]`;
  const cjs = execFileSync(process.execPath, ['-e', `const x = require('xglm-node'); console.log(JSON.stringify(${probe}))`], { cwd: root, encoding: 'utf8' });
  const esm = execFileSync(process.execPath, ['--input-type=module', '-e', `import * as x from 'xglm-node'; console.log(JSON.stringify(${probe}))`], { cwd: root, encoding: 'utf8' });
  t.deepEqual(JSON.parse(cjs), names.map(() => 'function'));
  t.deepEqual(JSON.parse(esm), JSON.parse(cjs));
  const dts = fs.readFileSync(path.join(root, 'dist', 'index.d.ts'), 'utf8');
  for (const n of names) t.regex(dts, new RegExp(`\\b${n}\\b`));
  t.true(fs.existsSync(path.join(root, 'dist', 'index.d.mts')));
});

test('package.json has no accidental pre/post hook scripts', (t) => {
  // npm runs a script named pre<X> / post<X> before / after `npm run <X>`: a script named
  // `prebuild` once made every `npm run build` build all CPU variants (~20 min). Only these are meant:
  const intended = new Set(['pretest']);
  const scripts: Record<string, string> = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).scripts;
  const hooks = Object.keys(scripts).filter((name) => {
    const m = /^(pre|post)(.+)$/.exec(name);
    return m !== null && m[2]! in scripts;
  });
  t.deepEqual(hooks.filter((h) => !intended.has(h)), [], 'rename these (e.g. build:<what>) or list them as intended');
  for (const h of intended) t.true(h in scripts, `${h} is listed as an intended hook but is not a script`);
  // What a clone's `npm ci` runs, and what an installed package must never run.
  t.is(scripts.prepare, 'node scripts/ensure-built.js');
  for (const s of ['preinstall', 'install', 'postinstall']) t.false(s in scripts, `an install-time script '${s}'`);
});

test('an ESM consumer and a CommonJS consumer share one module instance', (t) => {
  const out = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "import { createRequire } from 'node:module'; import { XglmError } from 'xglm-node'; const r = createRequire(process.cwd() + '/x.js'); console.log(r('xglm-node').XglmError === XglmError)"],
    { cwd: root, encoding: 'utf8' },
  );
  t.is(out.trim(), 'true');
});

test('nothing in the repository points at files a clone does not have (the design notes beside it)', (t) => {
  // The project's design notes live outside the repository; a user's clone has only what is here.
  const skip = new Set(['node_modules', 'deps', 'build', 'dist', 'prebuilds', 'fixtures', '.git']);
  const hits: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (!skip.has(e.name)) walk(p);
      } else if (/\.(ts|js|mjs|cjs|cpp|h|md|json|gyp|txt|cmake)$|^run$/.test(e.name) && e.name !== 'package-lock.json') {
        fs.readFileSync(p, 'utf8').split('\n').forEach((line, i) => {
          if (p !== __filename && /\.\.\/shared\b|\bDESIGN\.md\b/.test(line)) hits.push(`${path.relative(root, p)}:${i + 1}: ${line.trim()}`);
        });
      }
    }
  };
  walk(root);
  t.deepEqual(hits, []);
});

/** The .d.ts files a consumer's compiler reads: dist/index.d.ts and every declaration file it imports, transitively. */
function publicDeclarations(): Map<string, string> {
  const dist = path.join(root, 'dist');
  const seen = new Map<string, string>();
  const queue = [path.join(dist, 'index.d.ts')];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    const text = fs.readFileSync(file, 'utf8');
    seen.set(file, text);
    for (const m of text.matchAll(/(?:from\s+|import\()\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
      queue.push(path.resolve(path.dirname(file), m[1]!.replace(/\.js$/, '.d.ts')));
    }
  }
  return seen;
}

test('the published declarations hold the public API and none of the internals (stripInternal)', (t) => {
  const decls = publicDeclarations();
  // every name src/index.ts exports is declared by dist/index.d.ts
  const src = fs.readFileSync(path.join(root, 'src', 'index.ts'), 'utf8');
  const exported = [...src.matchAll(/^export (?:type )?\{([^}]*)\}/gm)].flatMap((m) => m[1]!.split(',').map((n) => n.trim().split(/\s+as\s+/).pop()!).filter(Boolean));
  exported.push(...[...src.matchAll(/^export (?:async )?function (\w+)/gm)].map((m) => m[1]!));
  t.true(exported.length > 40, `only ${exported.length} exports found in src/index.ts`);
  const index = decls.get(path.join(root, 'dist', 'index.d.ts'))!;
  for (const name of exported) t.regex(index, new RegExp(`\\b${name}\\b`), `dist/index.d.ts lacks ${name}`);
  // the public context's whole surface
  const context = decls.get(path.join(root, 'dist', 'context.d.ts'))!;
  for (const member of ['generate(', 'score(', 'scoreContinuations(', 'logprobs(', 'perplexity(', 'clear(', 'dispose(', 'cachedTokens(', 'stats:', 'contextSize:', 'threads()', 'disposed()']) {
    t.true(context.includes(member), `XglmContext lacks ${member}`);
  }
  // and nothing a consumer must not see
  const internals = [/@internal/, /\bContextCore\b/, /\bcoreOf\b/, /runtime\/core/, /\benqueue\b/, /\bevaluateItems\b/, /\breusePrefix\b/, /\bgenerateTokens\b/, /\bforget\(/, /\bengine\(\)/, /\bEngine(Context|Model)\b/, /\bSAMPLER_OFF\b/];
  const hits: string[] = [];
  for (const [file, text] of decls) {
    for (const re of internals) if (re.test(text)) hits.push(`${path.relative(root, file)}: ${re}`);
  }
  t.deepEqual(hits, []);
  t.true(decls.size > 10, `only ${decls.size} declaration files reached`);
});

// Loaded with --require into the Windows node.exe that scripts/test-win32.js runs under Wine:
// a small stand-in for ava's test API (the part the suites use) that runs one test file's
// tests in order and prints `✔`/`✘` lines and a summary line, plus module resolution for the
// transpiled tree test-win32.js writes (files keep their .ts names, imports say .js, as tsx
// resolves them). ava itself needs worker processes talking over IPC and tsx an esbuild
// binary; neither is needed to check the addon on Windows.
'use strict';

const Module = require('node:module');
const path = require('node:path');
const util = require('node:util');

// --- resolution: 'ava' is this file; './x.js' may be './x.ts'; 'tsx' is a no-op ---------------
const originalResolve = Module._resolveFilename;
Module._resolveFilename = function resolve(request, parent, ...rest) {
  if (request === 'ava') return __filename;
  if (request === 'tsx' || request === 'tsx/cjs') return __filename;
  try {
    return originalResolve.call(this, request, parent, ...rest);
  } catch (err) {
    if (/\.[cm]?js$/.test(request) && (request.startsWith('.') || path.isAbsolute(request))) {
      return originalResolve.call(this, request.replace(/\.[cm]?js$/, '.ts'), parent, ...rest);
    }
    throw err;
  }
};

// --- the test API ------------------------------------------------------------------------------
const tests = [];
const hooks = { before: [], after: [], afterAlways: [], beforeEach: [], afterEach: [] };
let scheduled = false;

function schedule() {
  if (scheduled) return;
  scheduled = true;
  setImmediate(runAll);
}

function declare(kind) {
  return (title, fn) => {
    if (typeof title === 'function') [title, fn] = ['(untitled)', title];
    tests.push({ title, fn, skip: kind === 'skip', failing: kind === 'failing' });
    schedule();
  };
}

const test = declare('test');
test.serial = declare('test');
test.skip = declare('skip');
test.failing = declare('failing');
test.only = declare('test');
test.serial.skip = test.skip;
test.todo = (title) => tests.push({ title: `${title} (todo)`, skip: true });
test.before = (fn) => { hooks.before.push(fn); schedule(); };
test.after = (fn) => { hooks.after.push(fn); schedule(); };
test.after.always = (fn) => { hooks.afterAlways.push(fn); schedule(); };
test.beforeEach = (fn) => hooks.beforeEach.push(fn);
test.afterEach = (fn) => hooks.afterEach.push(fn);
test.afterEach.always = test.afterEach;
test.serial.before = test.before;
test.serial.after = test.after;
test.meta = { file: process.argv[1] };

function describe(value) {
  return util.inspect(value, { depth: 4, breakLength: 120, maxArrayLength: 20, maxStringLength: 300 });
}

function matches(err, exp) {
  if (exp === undefined || exp === null) return null;
  if (!(err instanceof Error) && exp.any !== true) return `${describe(err)} is not an Error`;
  if (exp.instanceOf && !(err instanceof exp.instanceOf)) return `error is not an instance of ${exp.instanceOf.name}: ${describe(err)}`;
  if (exp.is !== undefined && err !== exp.is) return 'a different error was thrown';
  if (exp.name !== undefined && err.name !== exp.name) return `error name ${describe(err.name)}, expected ${describe(exp.name)}`;
  if (exp.code !== undefined && err.code !== exp.code) return `error code ${describe(err.code)}, expected ${describe(exp.code)}`;
  const m = exp.message;
  if (typeof m === 'string' && err.message !== m) return `error message ${describe(err.message)}, expected ${describe(m)}`;
  if (m instanceof RegExp && !m.test(err.message)) return `error message ${describe(err.message)} does not match ${m}`;
  if (typeof m === 'function' && !m(err.message)) return `error message ${describe(err.message)} fails the check`;
  return null;
}

function makeT(title, failures) {
  const fail = (what, message) => failures.push(message ? `${what} — ${message}` : what);
  const teardowns = [];
  const t = {
    title,
    context: {},
    teardowns,
    log: (...a) => process.stdout.write(`    ℹ ${a.map((x) => (typeof x === 'string' ? x : describe(x))).join(' ')}\n`),
    pass: () => {},
    fail: (message) => fail('t.fail()', message),
    plan: () => {},
    timeout: () => {},
    teardown: (fn) => teardowns.push(fn),
    is: (a, b, message) => Object.is(a, b) || fail(`t.is: ${describe(a)} !== ${describe(b)}`, message),
    not: (a, b, message) => !Object.is(a, b) || fail(`t.not: both ${describe(a)}`, message),
    true: (a, message) => a === true || fail(`t.true: ${describe(a)}`, message),
    false: (a, message) => a === false || fail(`t.false: ${describe(a)}`, message),
    truthy: (a, message) => !!a || fail(`t.truthy: ${describe(a)}`, message),
    falsy: (a, message) => !a || fail(`t.falsy: ${describe(a)}`, message),
    assert: (a, message) => !!a || fail(`t.assert: ${describe(a)}`, message),
    deepEqual: (a, b, message) => util.isDeepStrictEqual(a, b) || fail(`t.deepEqual: ${describe(a)} vs ${describe(b)}`, message),
    notDeepEqual: (a, b, message) => !util.isDeepStrictEqual(a, b) || fail(`t.notDeepEqual: both ${describe(a)}`, message),
    like: (a, b, message) => {
      // ava's like: only the selector's own keys of plain objects; arrays and the rest compare whole
      const plain = (v) => v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype;
      const pick = (x, shape) => (plain(shape) && plain(x)
        ? Object.fromEntries(Object.keys(shape).map((k) => [k, pick(x[k], shape[k])])) : x);
      return util.isDeepStrictEqual(pick(a, b), b) || fail(`t.like: ${describe(a)} vs ${describe(b)}`, message);
    },
    regex: (s, re, message) => re.test(s) || fail(`t.regex: ${describe(s)} does not match ${re}`, message),
    notRegex: (s, re, message) => !re.test(s) || fail(`t.notRegex: ${describe(s)} matches ${re}`, message),
    throws: (fn, exp, message) => {
      try {
        fn();
      } catch (err) {
        const why = matches(err, exp);
        if (why) fail(`t.throws: ${why}`, message);
        return why ? undefined : err;
      }
      fail('t.throws: nothing was thrown', message);
      return undefined;
    },
    notThrows: (fn, message) => {
      try {
        fn();
      } catch (err) {
        fail(`t.notThrows: ${describe(err)}`, message);
      }
    },
    throwsAsync: async (thrower, exp, message) => {
      try {
        await (typeof thrower === 'function' ? thrower() : thrower);
      } catch (err) {
        const why = matches(err, exp);
        if (why) fail(`t.throwsAsync: ${why}`, message);
        return why ? undefined : err;
      }
      fail('t.throwsAsync: the promise resolved', message);
      return undefined;
    },
    notThrowsAsync: async (thrower, message) => {
      try {
        await (typeof thrower === 'function' ? thrower() : thrower);
      } catch (err) {
        fail(`t.notThrowsAsync: ${describe(err)}`, message);
      }
    },
  };
  return t;
}

const TEST_TIMEOUT_MS = Number(process.env.XGLM_WIN32_TEST_TIMEOUT_MS || 10 * 60e3);

async function runOne(fn, t) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${TEST_TIMEOUT_MS / 1000} s`)), TEST_TIMEOUT_MS);
  });
  try {
    await Promise.race([Promise.resolve().then(() => fn(t)), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// As in ava, a rejection that has no handler when its turn ends is not fatal by itself: it is
// a failure only if still unhandled when the file's tests are done (a test may attach its
// handler after an await, as t.throwsAsync(queued) does).
const unhandled = new Map();
process.on('unhandledRejection', (reason, promise) => unhandled.set(promise, reason));
process.on('rejectionHandled', (promise) => unhandled.delete(promise));

async function runAll() {
  const counts = { passed: 0, failed: 0, skipped: 0 };
  const file = path.basename(process.argv[1] || 'test');
  const out = (line) => process.stdout.write(`${line}\n`);
  try {
    for (const h of hooks.before) await h(makeT('before', []));
  } catch (err) {
    out(`  ✘ [${file}] before hook: ${err && err.stack ? err.stack : describe(err)}`);
    counts.failed += tests.length;
    tests.length = 0;
  }
  for (const tc of tests) {
    if (tc.skip) {
      counts.skipped++;
      out(`  - [${file}] ${tc.title}`);
      continue;
    }
    const failures = [];
    const t = makeT(tc.title, failures);
    const t0 = Date.now();
    try {
      for (const h of hooks.beforeEach) await h(t);
      await runOne(tc.fn, t);
      for (const h of hooks.afterEach) await h(t);
    } catch (err) {
      failures.push(`threw: ${err && err.stack ? err.stack : describe(err)}`);
    }
    for (const fn of t.teardowns.reverse()) {
      try {
        await fn();
      } catch (err) {
        failures.push(`teardown threw: ${describe(err)}`);
      }
    }
    const ok = tc.failing ? failures.length > 0 : failures.length === 0;
    counts[ok ? 'passed' : 'failed']++;
    const ms = Date.now() - t0;
    out(`  ${ok ? '✔' : '✘'} [${file}] ${tc.title}${ms > 1000 ? ` (${(ms / 1000).toFixed(1)}s)` : ''}`);
    if (!ok) for (const f of failures) out(`      ${f.split('\n').join('\n      ')}`);
  }
  for (const h of [...hooks.after, ...hooks.afterAlways]) {
    try {
      await h(makeT('after', []));
    } catch (err) {
      out(`  ✘ [${file}] after hook: ${describe(err)}`);
      counts.failed++;
    }
  }
  await new Promise((r) => setImmediate(r));
  for (const reason of unhandled.values()) {
    out(`  ✘ [${file}] unhandled rejection: ${reason && reason.stack ? reason.stack : describe(reason)}`);
    counts.failed++;
  }
  out(`XGLM_WIN32_RESULT ${JSON.stringify(counts)}`);
  process.exitCode = counts.failed > 0 ? 1 : 0;
}

module.exports = test;
module.exports.default = test;
module.exports.__esModule = true;

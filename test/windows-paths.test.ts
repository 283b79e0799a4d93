/**
 * The TypeScript layer's Windows behaviour, checked on any platform (the functions take the
 * platform as a parameter): the cache folder under %LOCALAPPDATA%, names Windows cannot create,
 * long model paths, the error for a mapped (loaded) file that cannot be replaced, and CRLF
 * line ends in the CLI's JSONL modes. `npm run test:win32` runs the addon itself on Windows.
 */
import test from 'ava';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { main } from '../src/cli/main.js';
import { nativePath } from '../src/engine/model.js';
import { XglmError } from '../src/errors.js';
import { fileInUseError } from '../src/files.js';
import { assertRepoId, isSafeRepoFile, isWindowsSafeName, resolveCacheRoot } from '../src/hub/paths.js';
import { fixtureGguf } from './helpers/fixtures.js';

test('cache root on Windows: %LOCALAPPDATA%\\xglm-node\\Cache; XGLM_CACHE_DIR and an absolute XDG_CACHE_HOME still win', (t) => {
  t.is(resolveCacheRoot(undefined, { LOCALAPPDATA: 'C:\\Users\\Zoë\\AppData\\Local' }, 'win32'), 'C:\\Users\\Zoë\\AppData\\Local\\xglm-node\\Cache');
  t.is(resolveCacheRoot(undefined, {}, 'win32'), path.win32.join(os.homedir(), 'AppData', 'Local', 'xglm-node', 'Cache'));
  t.is(resolveCacheRoot(undefined, { LOCALAPPDATA: 'relative\\dir' }, 'win32'), path.win32.join(os.homedir(), 'AppData', 'Local', 'xglm-node', 'Cache'));
  t.is(resolveCacheRoot(undefined, { XGLM_CACHE_DIR: 'D:\\models', LOCALAPPDATA: 'C:\\L' }, 'win32'), 'D:\\models');
  t.is(resolveCacheRoot(undefined, { XDG_CACHE_HOME: 'E:\\cache', LOCALAPPDATA: 'C:\\L' }, 'win32'), 'E:\\cache\\xglm-node');
  t.is(resolveCacheRoot('F:/x/y', {}, 'win32'), 'F:\\x\\y');
  // elsewhere unchanged
  t.is(resolveCacheRoot(undefined, { XDG_CACHE_HOME: '/var/cache' }, 'linux'), '/var/cache/xglm-node');
  t.is(resolveCacheRoot(undefined, { LOCALAPPDATA: 'C:\\L' }, 'linux'), path.posix.join(os.homedir(), '.cache', 'xglm-node'));
});

test('names Windows cannot create are refused as hub file names and repo ids, on every platform', (t) => {
  for (const bad of ['CON', 'nul.json', 'aux', 'com1.bin', 'LPT9', 'a:b', 'what?', 'x*y', 'quote"d', 'dot.', 'space ', 'tab\tname']) {
    t.false(isWindowsSafeName(bad), bad);
    t.false(isSafeRepoFile(bad), bad);
    t.false(isSafeRepoFile(`dir/${bad}`), `dir/${bad}`);
  }
  for (const good of ['model.safetensors', 'config.json', 'console.txt', 'nullable', 'com10', 'sentencepiece.bpe.model']) {
    t.true(isWindowsSafeName(good), good);
    t.true(isSafeRepoFile(good), good);
  }
  t.throws(() => assertRepoId('someone/con'), { instanceOf: XglmError, message: /invalid HuggingFace repo id/ });
  t.notThrows(() => assertRepoId('facebook/xglm-564M'));
});

test('a model path of MAX_PATH characters or more reaches the addon in its \\\\?\\ form on Windows', (t) => {
  const short = 'C:\\models\\xglm.gguf';
  t.is(nativePath(short, 'win32'), short);
  const long = `C:\\${'deep folder\\'.repeat(24)}xglm.gguf`;
  t.true(long.length >= 260);
  t.is(nativePath(long, 'win32'), `\\\\?\\${long}`);
  t.is(nativePath(long.replace(/\\/g, '/'), 'win32'), `\\\\?\\${long}`);
  t.is(nativePath('\\\\server\\share\\' + 'x\\'.repeat(140) + 'm.gguf', 'win32').slice(0, 8), '\\\\?\\UNC\\');
  t.is(nativePath(long, 'linux'), long);
});

test('replacing a mapped model file on Windows fails with ERR_XGLM_FILE_IN_USE, which says why', (t) => {
  for (const code of ['EPERM', 'EBUSY', 'EACCES']) {
    const cause = Object.assign(new Error(`${code}: operation not permitted, rename`), { code });
    const err = fileInUseError(cause, 'C:\\m\\xglm.gguf', 'win32');
    t.true(err instanceof XglmError);
    t.is(err!.code, 'ERR_XGLM_FILE_IN_USE');
    t.regex(err!.message, /C:\\m\\xglm\.gguf.*memory-mapped/);
    t.regex(err!.hint!, /dispose every model/);
    t.is(err!.cause, cause);
    t.is(fileInUseError(cause, '/m/xglm.gguf', 'linux'), undefined);
  }
  t.is(fileInUseError(Object.assign(new Error('no'), { code: 'ENOENT' }), 'C:\\m', 'win32'), undefined);
});

function collect(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(Buffer.from(chunk));
      done();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

test('the CLI JSONL modes read CRLF line ends (stdin written on Windows) as LF ones', async (t) => {
  const model = await fixtureGguf('tiny-b');
  const run = async (input: string) => {
    const out = collect();
    const err = collect();
    const code = await main(['tokenize', '-m', model, '--jsonl'], { stdin: Readable.from([input]), stdout: out.stream, stderr: err.stream });
    return { code, stdout: out.text(), stderr: err.text() };
  };
  const lf = await run('"Hello world"\n"second line"\n');
  const crlf = await run('"Hello world"\r\n"second line"\r\n\r\n');
  t.is(crlf.code, 0, crlf.stderr);
  t.is(crlf.stdout, lf.stdout);
  t.is(crlf.stdout.split('\n').filter(Boolean).length, 2);
});

/**
 * The C++ tests of the engine and its custom ops (native/tests/engine-tests.cpp), one ava test
 * per case: KV cells, sampling, the kernel plan, each op against ggml's own nodes, and the
 * generation step on a fixture model. The binary is built with the addon and lives beside it:
 * build/Release, or the folder of XGLM_ADDON_PATH when set (npm run test:variants runs it per
 * CPU variant that way, XGLM_CPU_VARIANT choosing the variant as it does for the addon).
 *
 * Its `--list` says which cases cannot run here (an op the kernel plan of this CPU variant and
 * environment leaves off): those are declared with test.skip and the reason, so they are counted
 * as skipped, never passed.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fixtureGguf } from './helpers/fixtures.js';
import { skipWith, type Declare } from './helpers/skip.js';

const dir = process.env.XGLM_ADDON_PATH ? path.dirname(path.resolve(process.env.XGLM_ADDON_PATH)) : path.join(__dirname, '..', 'build', 'Release');
const binary = path.join(dir, process.platform === 'win32' ? 'xglm-engine-tests.exe' : 'xglm-engine-tests');

interface Listed {
  name: string;
  skip: string;
  gguf: boolean;
}
interface Result {
  name: string;
  status: 'pass' | 'fail' | 'skip';
  message: string;
}

function run(args: string[]) {
  const r = spawnSync(binary, args, { encoding: 'utf8', maxBuffer: 16 << 20 });
  if (r.error) throw r.error;
  return r;
}

function list(): Listed[] | string {
  if (!fs.existsSync(binary)) return `${binary} is missing: build it with 'npm run build:native' (it is built beside the addon)`;
  const r = run(['--list']);
  if (r.status !== 0) return `${binary} --list exited with ${r.status}: ${r.stdout}${r.stderr}`;
  return r.stdout.trim().split('\n').map((line) => JSON.parse(line) as Listed);
}

const cases = list();
if (typeof cases === 'string') {
  test('the C++ engine tests binary runs', (t) => {
    t.fail(cases);
  });
} else {
  for (const c of cases) {
    // the model case gets one below; any other reason is the kernel plan's or this CPU's
    const declare: Declare = c.skip && !c.gguf ? skipWith(c.skip) : test;
    declare(`C++ ${c.name}`, async (t) => {
      const args = [c.name];
      if (c.gguf) args.unshift('--gguf', await fixtureGguf('tiny-a', 'q4_0'));
      const r = run(args);
      const lines = r.stdout.trim().split('\n').filter(Boolean);
      const result = lines.map((l) => JSON.parse(l) as Result).find((x) => x.name === c.name);
      if (!result) return t.fail(`no result for ${c.name} (exit ${r.status}, signal ${r.signal}): ${r.stdout}${r.stderr}`);
      if (result.message) t.log(result.message);
      if (result.status === 'fail') return t.fail(result.message);
      // a skip the listing did not foresee (e.g. ggml did not repack a weight here): visible in the log
      if (result.status === 'skip') t.log(`skipped at run time: ${result.message}`);
      t.pass();
    });
  }
}

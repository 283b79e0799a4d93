import test from 'ava';
import { StopStringMatcher } from '../src/stop-strings.js';

function runChunks(stops: string[], chunks: string[]) {
  const m = new StopStringMatcher(stops);
  let out = '';
  let stop: string | undefined;
  for (const c of chunks) {
    const r = m.push(c);
    out += r.emit;
    if (r.stop) {
      stop = r.stop;
      break;
    }
  }
  if (!stop) out += m.flush();
  return { out, stop };
}

// Every way of cutting the text into chunks must give the same result as scanning the whole.
function allSplits(text: string): string[][] {
  const res: string[][] = [];
  const n = text.length;
  for (let mask = 0; mask < 1 << (n - 1); mask++) {
    const parts: string[] = [];
    let start = 0;
    for (let i = 1; i < n; i++) {
      if (mask & (1 << (i - 1))) {
        parts.push(text.slice(start, i));
        start = i;
      }
    }
    parts.push(text.slice(start));
    res.push(parts);
  }
  return res;
}

test('text before the earliest stop string, for every chunking', (t) => {
  const text = 'ab\nQ: xyz';
  for (const split of allSplits(text)) {
    t.deepEqual(runChunks(['\nQ:', 'yz'], split), { out: 'ab', stop: '\nQ:' }, JSON.stringify(split));
  }
});

test('a partial stop string is held back, then released when it does not complete', (t) => {
  const m = new StopStringMatcher(['END']);
  t.deepEqual(m.push('the E'), { emit: 'the ', stop: undefined });
  t.deepEqual(m.push('N'), { emit: '', stop: undefined });
  t.deepEqual(m.push('D?'), { emit: '', stop: 'END' });
  const m2 = new StopStringMatcher(['END']);
  t.is(m2.push('the EN').emit, 'the ');
  t.is(m2.push('d').emit, 'ENd');
  t.is(m2.push('E').emit, '');
  t.is(m2.flush(), 'E');
});

test('no stop strings: everything passes through at once', (t) => {
  for (const split of allSplits('héllo wörld')) t.deepEqual(runChunks([], split), { out: 'héllo wörld', stop: undefined });
});

/**
 * Load test of `xglm serve` on 127.0.0.1 (not part of `npm test`): N clients for D seconds
 * mixing streamed and plain completions, streams aborted after their first event, scoring,
 * and bad requests. Then the server must still answer correctly (the same greedy text and
 * scores as before the load), hold nothing (/health: no request running or queued, no
 * engine call unsettled), and its RSS must be flat. Prints requests/s, p50/p99 time to
 * first token and aggregate tokens/s, and exits 1 on any 5xx, leak or failed check.
 *
 *   npm run soak:serve -- [--clients 32] [--seconds 60] [-m model.gguf] [--parallel 4] [-t threads]
 *
 * On a CPU other work shares, give -t 1: compute threads that wait for each other at every
 * graph node lose whole time slices when a core is taken.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '60' },
    model: { type: 'string', short: 'm' },
    parallel: { type: 'string', default: '4' },
    queue: { type: 'string', default: '64' },
    threads: { type: 'string', short: 't' },
  },
});
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);
const BIN = path.join(__dirname, '..', 'bin', 'xglm.js');

const PROMPTS = ['The capital of France is', 'Once upon a time', 'Il était une fois', 'In 1492,', 'Der schnellste Weg nach', '東京は', 'A recipe for bread:'];
const pick = <T>(a: readonly T[]): T => a[Math.floor(Math.random() * a.length)]!;

interface Tally {
  byStatus: Map<number, number>;
  byKind: Map<string, number>;
  ttft: number[];
  tokens: number;
  networkErrors: number;
  wrong: string[];
}
const tally: Tally = { byStatus: new Map(), byKind: new Map(), ttft: [], tokens: 0, networkErrors: 0, wrong: [] };
const count = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1);

async function startServer(): Promise<{ url: string; stop: () => Promise<number | null>; stderr: () => string }> {
  const args = ['serve', '--port', '0', '--quiet', '--parallel', values.parallel!, '--queue', values.queue!, ...(values.model ? ['-m', values.model] : []), ...(values.threads ? ['-t', values.threads] : [])];
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (d) => {
      err += d;
      const m = /ready: .* (http:\/\/[^\s]+)\/v1/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.on('close', () => reject(new Error(`the server exited: ${err}`)));
  });
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    url,
    stderr: () => err,
    stop: () => {
      child.kill('SIGTERM');
      return closed;
    },
  };
}

async function post(url: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...(signal ? { signal } : {}) });
}

/** One streamed completion: time to first text, tokens; `abortAfterFirst` leaves after the first event. */
async function stream(url: string, abortAfterFirst: boolean): Promise<void> {
  const controller = new AbortController();
  const t0 = performance.now();
  const res = await post(`${url}/v1/completions`, { prompt: pick(PROMPTS), max_tokens: 8 + Math.floor(Math.random() * 56), temperature: Math.random(), stream: true, stream_options: { include_usage: true } }, controller.signal);
  count(tally.byStatus, res.status);
  if (res.status !== 200) {
    await res.text();
    return;
  }
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let first = true;
  let sawDone = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let k: number;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, k).replace(/^data: /, '');
        buf = buf.slice(k + 2);
        if (event === '[DONE]') {
          sawDone = true;
          continue;
        }
        const chunk = JSON.parse(event);
        if (chunk.error) tally.wrong.push(`stream error event: ${event}`);
        if (first && chunk.choices?.[0]) {
          first = false;
          tally.ttft.push(performance.now() - t0);
          if (abortAfterFirst) {
            controller.abort();
            tally.tokens += 1;
            return;
          }
        }
        if (chunk.usage) tally.tokens += chunk.usage.completion_tokens;
      }
    }
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err;
    return;
  }
  if (!sawDone) tally.wrong.push('a stream ended without data: [DONE]');
}

const BAD: Array<() => unknown> = [
  () => '{not json',
  () => ({ prompt: 42 }),
  () => ({ prompt: 'x', max_tokens: -3 }),
  () => ({ prompt: 'x', temperature: 9 }),
  () => ({ prompt: 'x', model: '/etc/passwd' }),
  () => ({ prompt: 'x'.repeat(2 << 20) }), // over the body limit: 413
  () => ({ prompt: 'word '.repeat(3000) }), // longer than the context
];

async function client(url: string, until: number): Promise<void> {
  while (performance.now() < until) {
    const r = Math.random();
    try {
      if (r < 0.4) {
        count(tally.byKind, 'stream');
        await stream(url, false);
      } else if (r < 0.55) {
        count(tally.byKind, 'stream-abort');
        await stream(url, true);
      } else if (r < 0.7) {
        count(tally.byKind, 'plain');
        const res = await post(`${url}/v1/completions`, { prompt: pick(PROMPTS), max_tokens: 4 + Math.floor(Math.random() * 28), n: 1 + Math.floor(Math.random() * 2) });
        count(tally.byStatus, res.status);
        const body = (await res.json()) as { usage?: { completion_tokens: number } };
        if (res.status === 200) tally.tokens += body.usage!.completion_tokens;
      } else if (r < 0.8) {
        count(tally.byKind, 'score');
        const res = await post(`${url}/v1/score`, { prefix: pick(PROMPTS), continuations: [' yes', ' no', ' maybe'] });
        count(tally.byStatus, res.status);
        await res.text();
      } else {
        count(tally.byKind, 'bad');
        const res = await post(`${url}/v1/completions`, pick(BAD)());
        count(tally.byStatus, res.status);
        const body = (await res.json().catch(() => null)) as { error?: { message: string } } | null;
        if (res.status !== 400 && res.status !== 413 && res.status !== 429) tally.wrong.push(`a bad request got ${res.status}`);
        if (!body?.error?.message) tally.wrong.push(`a bad request's answer has no error body (${res.status})`);
      }
    } catch (err) {
      tally.networkErrors++;
      if (tally.networkErrors <= 5) console.error(`client: ${(err as Error).message}`);
    }
  }
}

interface Health {
  status: string;
  requests: { running: number; queued: number; total: number };
  engine: { active: number; completions: number; aborted: number };
  rssBytes: number;
}
const health = async (url: string) => (await (await fetch(`${url}/health`)).json()) as Health;

async function probe(url: string): Promise<{ greedy: string; scores: number[] }> {
  const g = await post(`${url}/v1/completions`, { prompt: 'Probe: the same text before and after', max_tokens: 24, temperature: 0 });
  const s = await post(`${url}/v1/score`, { texts: ['I wanted to conserve energy. I swept the floor.', 'I wanted to conserve energy. I shut off the light.'] });
  const gb = (await g.json()) as { choices: Array<{ text: string }> };
  const sb = (await s.json()) as { data: Array<{ logprob: number }> };
  return { greedy: gb.choices[0]!.text, scores: sb.data.map((d) => d.logprob) };
}

const percentile = (a: number[], p: number) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};

async function main(): Promise<void> {
  const server = await startServer();
  const { url } = server;
  const before = await probe(url);
  const rssStart = (await health(url)).rssBytes;
  const rss: number[] = [];
  const sampler = setInterval(() => void health(url).then((h) => rss.push(h.rssBytes), () => undefined), 1000);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, () => client(url, t0 + SECONDS * 1000)));
  const elapsed = (performance.now() - t0) / 1000;
  clearInterval(sampler);

  // nothing left behind: no request running or queued, no engine call unsettled
  let h = await health(url);
  for (let i = 0; i < 100 && (h.requests.running || h.requests.queued || h.engine.active); i++) {
    await new Promise((r) => setTimeout(r, 100));
    h = await health(url);
  }
  const after = await probe(url);
  const code = await server.stop();

  const requests = [...tally.byStatus.values()].reduce((a, b) => a + b, 0);
  const fivexx = [...tally.byStatus.entries()].filter(([s]) => s >= 500).reduce((a, [, n]) => a + n, 0);
  // RSS flat: the second half of the run's samples against the first half's
  const half = Math.floor(rss.length / 2);
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / Math.max(1, a.length);
  const rssFirst = mean(rss.slice(0, half));
  const rssSecond = mean(rss.slice(half));
  const rssGrowth = (rssSecond - rssFirst) / rssFirst;
  const leaked = h.requests.running + h.requests.queued + h.engine.active;
  const checks: Array<[string, boolean]> = [
    ['zero 5xx', fivexx === 0],
    ['no leaked request or engine call (/health after the load)', leaked === 0],
    ['same greedy text as before the load', after.greedy === before.greedy],
    ['same scores as before the load', JSON.stringify(after.scores) === JSON.stringify(before.scores)],
    ['RSS flat (second half within 10% of the first)', Math.abs(rssGrowth) < 0.1],
    ['no wrong answers', tally.wrong.length === 0],
    ['no network errors', tally.networkErrors === 0],
    ['the server exits 0 on SIGTERM', code === 0],
  ];
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MB`;
  console.log(`xglm serve load test: ${CLIENTS} clients, ${elapsed.toFixed(1)} s, --parallel ${values.parallel}, ${values.threads ?? 'default'} threads, ${values.model ?? 'the demo model'}, ${os.cpus()[0]?.model.trim()} (${os.cpus().length} CPUs)`);
  console.log(`requests      ${requests} (${(requests / elapsed).toFixed(1)}/s); by kind ${JSON.stringify(Object.fromEntries(tally.byKind))}`);
  console.log(`statuses      ${JSON.stringify(Object.fromEntries([...tally.byStatus].sort((a, b) => a[0] - b[0])))}`);
  console.log(`first token   p50 ${percentile(tally.ttft, 50).toFixed(1)} ms, p99 ${percentile(tally.ttft, 99).toFixed(1)} ms (${tally.ttft.length} streams)`);
  console.log(`tokens        ${tally.tokens} generated, ${(tally.tokens / elapsed).toFixed(1)} tokens/s aggregate`);
  console.log(`RSS           start ${mb(rssStart)}, first half ${mb(rssFirst)}, second half ${mb(rssSecond)} (${(rssGrowth * 100).toFixed(1)}%)`);
  console.log(`RSS every 10 s ${rss.filter((_, i) => i % 10 === 9).map(mb).join(', ')}`);
  console.log(`after         ${JSON.stringify(h)}`);
  for (const w of tally.wrong.slice(0, 5)) console.log(`wrong: ${w}`);
  for (const [name, ok] of checks) console.log(`${ok ? 'ok  ' : 'FAIL'}  ${name}`);
  process.exitCode = checks.every(([, ok]) => ok) ? 0 : 1;
}

void main();

/** `xglm serve`: the HTTP server of src/serve, its startup lines, and the signals that stop it. */
import { Engine } from '../../serve/engine.js';
import { XglmServer } from '../../serve/server.js';
import type { ParsedArgs } from '../args.js';
import type { CliIo } from '../main.js';
import { resolveModelPath } from '../model-path.js';
import { contextOptions } from './run.js';

export async function runServe(args: ParsedArgs, io: CliIo): Promise<void> {
  const f = args.flags;
  const file = resolveModelPath(f.model, io);
  const host = String(f.host);
  const say = (line: string) => io.stderr.write(`xglm serve: ${line}\n`);
  const apiKey = typeof f['api-key'] === 'string' ? f['api-key'] : process.env.XGLM_API_KEY || undefined;
  const engine = Engine.open({ modelFile: file, ...contextOptions(args) });
  const server = new XglmServer({
    engine,
    parallel: Number(f.parallel),
    queue: Number(f.queue),
    ...(apiKey ? { apiKey } : {}),
    maxBodyBytes: Number(f['max-body']),
    ...(f.quiet ? {} : { log: (line: string) => io.stderr.write(`${line}\n`) }),
  });
  let address;
  try {
    address = await server.listen(Number(f.port), host);
  } catch (err) {
    await engine.then((e) => e.close()).catch(() => undefined);
    throw err;
  }
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
  say(`listening on ${url} (loading ${file})`);

  // The first SIGINT/SIGTERM drains (running requests may finish within --grace), a second aborts them.
  let signals = 0;
  let onStop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (onStop = resolve));
  const onSignal = (name: NodeJS.Signals) => {
    signals++;
    say(signals === 1 ? `${name}: stopping (running requests may finish)` : `${name}: aborting running requests`);
    if (signals > 1) void server.shutdown(0);
    onStop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const ready = await Promise.race([server.ready, stopped.then(() => undefined)]).catch(async (err: unknown) => {
      await server.shutdown(0);
      throw err;
    });
    if (ready) {
      say(`ready: model ${ready.modelId}, context ${ready.contextSize} tokens, ${Number(f.parallel)} parallel, ${url}/v1`);
      await stopped;
    }
    await server.shutdown(Number(f.grace) * 1000);
    say('stopped');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

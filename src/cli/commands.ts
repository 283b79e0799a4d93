/** The command table: each command's flags (specs.ts) and the function that runs it. */
import { XglmError } from '../errors.js';
import type { Command } from './main.js';
import { specs } from './specs.js';
import { runInfo } from './commands/info.js';
import { runConvert, runPull, runQuantize } from './commands/convert.js';

function pending(name: keyof typeof specs): Command {
  return {
    spec: specs[name],
    run: async () => {
      throw new XglmError('ERR_XGLM_UNSUPPORTED', `'xglm ${name}' is not available in this build yet`);
    },
  };
}

export const commands: Command[] = [
  pending('generate'),
  pending('tokenize'),
  pending('logprobs'),
  pending('score'),
  pending('perplexity'),
  { spec: specs.convert, run: runConvert },
  { spec: specs.quantize, run: runQuantize },
  { spec: specs.pull, run: runPull },
  { spec: specs.info, run: runInfo },
  pending('bench'),
];

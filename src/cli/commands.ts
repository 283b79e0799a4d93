/** The command table: each command's flags (specs.ts) and the function that runs it. */
import type { Command } from './main.js';
import { specs } from './specs.js';
import { runInfo } from './commands/info.js';
import { runConvert, runPull, runQuantize } from './commands/convert.js';
import { runServe } from './commands/serve.js';
import { runBench, runGenerate, runLogprobs, runPerplexity, runScore, runTokenize } from './commands/run.js';

export const commands: Command[] = [
  { spec: specs.generate, run: runGenerate },
  { spec: specs.tokenize, run: runTokenize },
  { spec: specs.logprobs, run: runLogprobs },
  { spec: specs.score, run: runScore },
  { spec: specs.perplexity, run: runPerplexity },
  { spec: specs.convert, run: runConvert },
  { spec: specs.quantize, run: runQuantize },
  { spec: specs.pull, run: runPull },
  { spec: specs.info, run: runInfo },
  { spec: specs.bench, run: runBench },
  { spec: specs.serve, run: runServe },
];

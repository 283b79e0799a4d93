/**
 * The `xglm` command line: dispatch, --help, and the error contract of README.md's “The CLI” —
 * exit 0 on success, 1 on a runtime error, 2 on a usage error; errors are one line on
 * stderr starting `xglm: error:`; never a stack trace for bad input.
 */
import { XglmError } from '../errors.js';
import { commandHelp, parseCommandArgs, UsageError, type CommandSpec, type ParsedArgs } from './args.js';
import { commands } from './commands.js';

export interface CliIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

export interface Command {
  spec: CommandSpec;
  run(args: ParsedArgs, io: CliIo): Promise<void>;
}

function mainHelp(): string {
  const width = Math.max(...commands.map((c) => c.spec.name.length)) + 2;
  return [
    'xglm — run Meta\'s XGLM multilingual language models on the CPU',
    '',
    'Usage: xglm <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`),
    '',
    "Run 'xglm <command> --help' for a command's options and an example.",
    'Without -m (info: without MODEL), the commands that run a model use the tiny embedded demo model.',
    '',
  ].join('\n');
}

function errorLine(message: string): string {
  return `xglm: error: ${message.replace(/\s*\n\s*/g, ' ')}\n`;
}

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    (name === undefined ? io.stderr : io.stdout).write(mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    io.stdout.write(`${require('../../package.json').version}\n`);
    return 0;
  }
  const command = commands.find((c) => c.spec.name === name);
  if (!command) {
    io.stderr.write(errorLine(`unknown command '${name}' (run 'xglm --help' for the list)`));
    return 2;
  }
  try {
    const args = parseCommandArgs(command.spec, rest);
    if (args.help) {
      io.stdout.write(commandHelp(command.spec));
      return 0;
    }
    await command.run(args, io);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(errorLine(`${err.message} (see 'xglm ${command.spec.name} --help')`));
      return 2;
    }
    if (err instanceof XglmError) {
      io.stderr.write(errorLine(err.message));
      return 1;
    }
    const e = err as NodeJS.ErrnoException;
    if (e && typeof e.code === 'string' && e.code.startsWith('E') && e.message) {
      // file-system errors: ENOENT, EACCES, EISDIR ...
      io.stderr.write(errorLine(e.message));
      return 1;
    }
    if (e && e.name === 'AbortError') {
      io.stderr.write(errorLine('aborted'));
      return 1;
    }
    io.stderr.write(errorLine(`internal error: ${e && e.message ? e.message : String(err)} (please report this)`));
    if (process.env.XGLM_DEBUG) io.stderr.write(`${(e && e.stack) || ''}\n`);
    return 1;
  }
}

/** Entry point of bin/xglm.js. */
export function run(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0); // `xglm ... | head` is fine
  });
  main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(errorLine(`internal error: ${(err as Error).message}`));
      process.exitCode = 1;
    },
  );
}

/**
 * Command-line flags: one declarative table per command, parsed with node:util's parseArgs,
 * then checked and converted here so every command receives typed values and every misuse
 * is a UsageError (exit code 2).
 */
import { parseArgs } from 'node:util';

export class UsageError extends Error {
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export type FlagType = 'string' | 'int' | 'number' | 'boolean';

export interface FlagSpec {
  type: FlagType;
  short?: string;
  /** Shown in --help. */
  description: string;
  /** Placeholder in --help (`-m FILE`). */
  valueName?: string;
  default?: string | number | boolean;
  /** Allowed values for a string flag. */
  choices?: readonly string[];
  min?: number;
  max?: number;
}

export interface CommandSpec {
  name: string;
  summary: string;
  /** `xglm generate [options] PROMPT` */
  usage: string;
  flags: Record<string, FlagSpec>;
  /** How many positional arguments: [min, max]. */
  positionals: [number, number];
  examples: string[];
  /** Extra paragraphs for --help. */
  notes?: string[];
}

export type FlagValues = Record<string, string | number | boolean | undefined>;

export interface ParsedArgs {
  flags: FlagValues;
  positionals: string[];
  help: boolean;
}

export function parseCommandArgs(spec: CommandSpec, argv: string[]): ParsedArgs {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [name, f] of Object.entries(spec.flags)) {
    options[name] = { type: f.type === 'boolean' ? 'boolean' : 'string', ...(f.short ? { short: f.short } : {}) };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(cleanParseError((err as Error).message), spec.name);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help) return { flags: {}, positionals: parsed.positionals, help: true };

  const flags: FlagValues = {};
  for (const [name, f] of Object.entries(spec.flags)) {
    const raw = values[name];
    flags[name] = raw === undefined ? f.default : convert(name, f, raw, spec.name);
  }
  const [min, max] = spec.positionals;
  if (parsed.positionals.length < min) {
    throw new UsageError(`missing argument: ${spec.usage.replace(/^xglm \S+ /, '')}`, spec.name);
  }
  if (parsed.positionals.length > max) {
    throw new UsageError(`unexpected argument '${parsed.positionals[max]}'`, spec.name);
  }
  return { flags, positionals: parsed.positionals, help: false };
}

function convert(name: string, f: FlagSpec, raw: string | boolean, command: string): string | number | boolean {
  if (f.type === 'boolean') return raw === true;
  const text = String(raw);
  if (f.type === 'string') {
    if (f.choices && !f.choices.includes(text)) {
      throw new UsageError(`--${name} must be one of ${f.choices.join(', ')} (got '${text}')`, command);
    }
    return text;
  }
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || (f.type === 'int' && !Number.isInteger(n))) {
    throw new UsageError(`--${name} needs ${f.type === 'int' ? 'a whole number' : 'a number'} (got '${text}')`, command);
  }
  if ((f.min !== undefined && n < f.min) || (f.max !== undefined && n > f.max)) {
    const range = f.max === undefined ? `at least ${f.min}` : f.min === undefined ? `at most ${f.max}` : `from ${f.min} to ${f.max}`;
    throw new UsageError(`--${name} must be ${range} (got ${text})`, command);
  }
  return n;
}

function cleanParseError(message: string): string {
  // parseArgs says e.g. "Unknown option '--foo'. To specify a positional argument starting with a '-', ..."
  const first = message.split('. ')[0]!.replace(/^Unknown option/, 'unknown option');
  return first.replace(/^Option '([^']+)' argument missing/, "option '$1' needs a value");
}

/** The text of `xglm <command> --help`. */
export function commandHelp(spec: CommandSpec): string {
  const lines = [`${spec.summary}`, '', `Usage: ${spec.usage}`, '', 'Options:'];
  const rows: [string, string][] = [];
  for (const [name, f] of Object.entries(spec.flags)) {
    const value = f.type === 'boolean' ? '' : ` ${f.valueName ?? (f.type === 'string' ? 'VALUE' : 'N')}`;
    const left = `${f.short ? `-${f.short}, ` : '    '}--${name}${value}`;
    let right = f.description;
    if (f.choices) right += ` (${f.choices.join(', ')})`;
    if (f.default !== undefined && f.default !== false) right += ` [default: ${f.default}]`;
    rows.push([left, right]);
  }
  rows.push(['-h, --help', 'show this help']);
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  for (const [l, r] of rows) lines.push(`  ${l.padEnd(width)}${r}`);
  for (const note of spec.notes ?? []) lines.push('', note);
  lines.push('', spec.examples.length > 1 ? 'Examples:' : 'Example:');
  for (const ex of spec.examples) lines.push(`  ${ex}`);
  return lines.join('\n') + '\n';
}

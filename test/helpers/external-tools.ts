/**
 * Tests that need an external program (SentencePiece's spm_* tools, …): they run where the
 * program is installed and are otherwise registered as skipped, with the reason and the way to
 * install it in the title, so a run without the tool says so instead of passing silently.
 */
import fs from 'node:fs';
import path from 'node:path';
import { runIf, type Declare } from './skip.js';

/**
 * The program's path: the first executable `name` on PATH, then in /usr/bin and /usr/local/bin.
 * XGLM_TEST_HIDE_TOOLS (comma-separated names) hides installed ones, to see the skips.
 */
export function findTool(name: string): string | undefined {
  if ((process.env.XGLM_TEST_HIDE_TOOLS ?? '').split(',').includes(name)) return undefined;
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), '/usr/bin', '/usr/local/bin'];
  for (const dir of dirs) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface ToolSet {
  /** Each tool's path; only read inside a test registered by `test` (the tools are there then). */
  readonly path: Readonly<Record<string, string>>;
  /** Missing tools, empty when all are installed. */
  readonly missing: readonly string[];
  /** Registers a test that runs when every tool is installed, else a visibly skipped one. */
  test: Declare;
}

/**
 * `tools(['spm_encode'], 'apt-get install sentencepiece').test(title, fn)` registers `title`, or
 * `title — skipped: spm_encode not installed (apt-get install sentencepiece)` as a skipped test.
 */
export function tools(names: readonly string[], install: string): ToolSet {
  const found: Record<string, string> = {};
  const missing: string[] = [];
  for (const name of names) {
    const p = findTool(name);
    if (p) found[name] = p;
    else missing.push(name);
  }
  return {
    path: found,
    missing,
    test: runIf(missing.length === 0, `${missing.join(', ')} not installed (${install})`),
  };
}

/** SentencePiece's command-line tools: Debian/Ubuntu package `sentencepiece`. */
export const SPM_INSTALL = 'apt-get install sentencepiece';

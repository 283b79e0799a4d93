/** Paths and loaders for the tokenizer fixtures (test/fixtures: tiny checkpoints with golden outputs). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const FIXTURE_NAMES = ['tiny-a', 'tiny-b'] as const;
export type FixtureName = (typeof FIXTURE_NAMES)[number];

export interface GoldenTokenizerCase {
  id: string;
  category: string;
  text: string;
  ids: number[];
  pieces: string[];
  decoded: string;
  decoded_spm: string | null;
  n_unk: number;
}

export interface GoldenTokenizer {
  sp_piece_count: number;
  vocab_size: number;
  special_ids: Record<string, number>;
  madeup_ids: Record<string, number>;
  cases: GoldenTokenizerCase[];
}

export function fixtureDir(name: FixtureName): string {
  return join(__dirname, '..', 'fixtures', name);
}

export function spmModelPath(name: FixtureName): string {
  return join(fixtureDir(name), 'sentencepiece.bpe.model');
}

export function readSpmModel(name: FixtureName): Uint8Array {
  return new Uint8Array(readFileSync(spmModelPath(name)));
}

export function readGoldenTokenizer(name: FixtureName): GoldenTokenizer {
  const golden = JSON.parse(readFileSync(join(fixtureDir(name), 'golden.json'), 'utf8')) as { tokenizer: GoldenTokenizer };
  return golden.tokenizer;
}

/**
 * What the fuzzer feeds and to whom. Each format has valid seeds (made by the project's own
 * converter from a small seeded checkpoint and from the tiny-a fixture), a mutator, and a
 * `run` that hands one mutated input to every consumer of that format: the TS readers, the
 * converter, the tokenizer loaders, or the native loader.
 *
 * A case passes when `run` returns (a valid result, which is then used: tensors read, text
 * tokenized, a token evaluated) or throws an XglmError. Anything else — another exception,
 * a crash, a hang, a runaway allocation — is a failure.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SAMPLER_OFF } from '../../src/sampler.js';
import { convert, writeRandomCheckpoint } from '../../src/convert/index.js';
import { openWeights } from '../../src/convert/convert.js';
import { unpickleStateDict } from '../../src/convert/pickle.js';
import { openEngineModel } from '../../src/engine/model.js';
import { XglmError } from '../../src/errors.js';
import { GgufReader } from '../../src/gguf/index.js';
import { describeModelFile } from '../../src/model-info.js';
import { loadModel, loadTokenizer } from '../../src/model.js';
import { Tokenizer, parseSentencePieceModel, xglmVocabularyFromSentencePiece } from '../../src/tokenizer/index.js';
import { tokenizerJsonFromSentencePiece } from '../helpers/spm-tokenizer-json.js';
import { fixtureDir } from '../helpers/fixtures.js';
import { decodeGguf, encodeGguf, mutateGgufModel, type RawGguf } from './gguf-codec.js';
import { type Rng, type Structured, mutateBlind, mutateStructured } from './mutate.js';
import {
  type ProtoField,
  jsonPaths,
  mutateJson,
  mutateJsonText,
  mutatePickle,
  mutateProto,
  readStoredZip,
  scanPickle,
  scanProto,
  writeStoredZip,
  type ZipFile,
} from './structure.js';

export const FORMATS = ['gguf', 'gguf-native', 'safetensors', 'pytorch-zip', 'pickle', 'spm', 'tokenizer-json'] as const;
export type FormatName = (typeof FORMATS)[number];

const FIXTURE_A = fixtureDir('tiny-a');
/** The seeded checkpoint every format's seeds come from: small enough for thousands of cases a second. */
const SMALL_SHAPE = { dModel: 32, nLayers: 1, nHeads: 2, ffnDim: 64, vocabSize: 300, maxPositions: 16, seed: 7 };

/**
 * Where the seed files live, shared by the tests and `npm run fuzz`. (v2: written only by the
 * atomic writer below, so a folder of this name is always complete.)
 */
export const SEEDS_DIR = path.join(os.tmpdir(), 'xglm-fuzz-seeds-v2');

/**
 * Writes the seed files once into `dir` (idempotent, and safe when several processes call it at
 * once: ava runs test files in parallel processes, and two of them share the seeds folder).
 * The files are built in a private folder beside `dir` and renamed into place in one step, so
 * `dir` either does not exist or is complete; when another process got there first, its folder
 * is used and ours is removed.
 */
export async function prepareSeeds(dir: string = SEEDS_DIR): Promise<void> {
  if (fs.existsSync(path.join(dir, 'READY'))) return;
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(parent, `${path.basename(dir)}.building-`));
  try {
    const ckpt = path.join(tmp, 'ckpt');
    await writeRandomCheckpoint(ckpt, { ...SMALL_SHAPE, formats: ['safetensors', 'pytorch'] });
    await convert(ckpt, path.join(tmp, 'small-f32.gguf'), { type: 'f32', threads: 1 });
    await convert(ckpt, path.join(tmp, 'small-q8_0.gguf'), { type: 'q8_0', threads: 1 });
    await convert(FIXTURE_A, path.join(tmp, 'tiny-a-q4_0.gguf'), { type: 'q4_0', threads: 1 });
    const spm = fs.readFileSync(path.join(ckpt, 'sentencepiece.bpe.model'));
    fs.writeFileSync(path.join(tmp, 'tokenizer.json'), JSON.stringify(tokenizerJsonFromSentencePiece(spm)));
    fs.writeFileSync(path.join(tmp, 'READY'), '');
    try {
      fs.renameSync(tmp, dir); // atomic; fails when another process's complete folder is there
    } catch (err) {
      if (!fs.existsSync(path.join(dir, 'READY'))) throw err;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export interface CaseInput {
  bytes: Uint8Array;
  /** Mutated case of a folder-shaped format: the file name of `bytes` within it. */
  fileName: string;
  /** A random number in [0, 1000) that picks between ways of consuming the case. */
  variant?: number;
}

/** Everything a run needs besides the mutated bytes. */
export interface RunContext {
  seedsDir: string;
  /** A scratch folder owned by this process. */
  workDir: string;
  /** Where the case's bytes already are, if anywhere. */
  currentFile?: string;
}

export interface Target {
  /** Valid inputs: a case mutates one of them (by index). */
  seedCount: number;
  mutate(rng: Rng, seedIndex: number): CaseInput;
  run(input: CaseInput, ctx: RunContext): Promise<string>;
}

const SAMPLE_TEXTS = ['Hello, world!', ' leading  spaces\tand\nlines ', 'Привет 你好 ＡＢＣ ﬁ ① é', '</s><unk> <madeupword3>', ''];

function useTokenizer(tok: Tokenizer): void {
  for (const text of SAMPLE_TEXTS) {
    const ids = tok.encode(text, { specialTokens: true });
    tok.decode(ids);
    const stream = tok.createStreamDecoder();
    for (const id of ids) stream.push(id);
    stream.flush();
  }
  tok.decode([0, 1, 2, 3, tok.vocabSize - 1]);
}

/** Runs every step; the first XglmError code is the outcome, anything else is thrown. */
function everyStep(steps: Array<() => unknown>): string {
  let outcome = 'ok';
  for (const step of steps) {
    try {
      step();
    } catch (err) {
      if (!(err instanceof XglmError)) throw err;
      if (outcome === 'ok') outcome = err.code;
    }
  }
  return outcome;
}

/** Writes the case into the work folder: the file, beside copies of the checkpoint's other files. */
function caseFolder(input: CaseInput, ctx: RunContext): string {
  const dir = path.join(ctx.workDir, 'case');
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    fs.mkdirSync(dir, { recursive: true });
    for (const f of ['config.json', 'sentencepiece.bpe.model']) fs.copyFileSync(path.join(ctx.seedsDir, 'ckpt', f), path.join(dir, f));
  }
  for (const f of ['model.safetensors', 'pytorch_model.bin']) fs.rmSync(path.join(dir, f), { force: true });
  fs.writeFileSync(path.join(dir, input.fileName), input.bytes);
  return dir;
}

/** Opens the weights, reads every tensor, then converts the folder (the converter's whole path). */
async function runCheckpoint(input: CaseInput, ctx: RunContext, weights: 'safetensors' | 'pytorch'): Promise<string> {
  const dir = caseFolder(input, ctx);
  const source = openWeights(dir, weights);
  try {
    for (const [name, t] of source.tensors) {
      const rows = t.shape.length <= 1 ? 1 : t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
      if (rows > 0) source.readRows(name, 0, rows);
    }
  } finally {
    source.close();
  }
  await convert(dir, path.join(ctx.workDir, 'out.gguf'), { type: 'f32', weights, threads: 1 });
  return 'ok';
}

/** The case as a file: the worker has already written it (current.bin) for crash triage. */
function caseFile(input: CaseInput, ctx: RunContext): string {
  if (ctx.currentFile) return ctx.currentFile;
  const file = path.join(ctx.workDir, input.fileName);
  fs.writeFileSync(file, input.bytes);
  return file;
}

const GGUF_SEEDS = ['small-f32.gguf', 'small-q8_0.gguf', 'tiny-a-q4_0.gguf'];

function ggufMutator(seedsDir: string): (rng: Rng, seedIndex: number) => CaseInput {
  const models: RawGguf[] = GGUF_SEEDS.map((f) => decodeGguf(fs.readFileSync(path.join(seedsDir, f))));
  const encoded = models.map((m) => encodeGguf(m));
  return (rng, seedIndex) => {
    const r = rng.int(10);
    let bytes: Uint8Array;
    if (r < 4) bytes = encodeGguf(mutateGgufModel(rng, models[seedIndex]!)).bytes;
    else if (r < 5) {
      // two semantic edits, then a byte-level one
      const e = encodeGguf(mutateGgufModel(rng, mutateGgufModel(rng, models[seedIndex]!)));
      bytes = mutateStructured(rng, e, e.headerEnd);
    } else bytes = mutateStructured(rng, encoded[seedIndex]!, encoded[seedIndex]!.headerEnd);
    return { bytes, fileName: 'case.gguf', variant: rng.int(1000) };
  };
}

function zipEntriesOf(seedsDir: string): ZipFile[] {
  return readStoredZip(fs.readFileSync(path.join(seedsDir, 'ckpt', 'pytorch_model.bin')));
}

export function makeTarget(format: FormatName, seedsDir: string): Target {
  switch (format) {
    case 'gguf':
      return {
        seedCount: GGUF_SEEDS.length,
        mutate: ggufMutator(seedsDir),
        async run(input, ctx) {
          const file = caseFile(input, ctx);
          // three consumers, each on its own: one refusing the file must not hide another's bug
          return everyStep([
            () => {
              const reader = GgufReader.open(file);
              try {
                for (const t of reader.tensors) reader.readTensorBytes(t, 0, Math.min(t.byteLength, 1 << 20));
              } finally {
                reader.close();
              }
            },
            () => describeModelFile(file),
            () => useTokenizer(loadTokenizer(file)),
          ]);
        },
      };
    case 'gguf-native':
      return {
        seedCount: GGUF_SEEDS.length,
        mutate: ggufMutator(seedsDir),
        async run(input, ctx) {
          const file = caseFile(input, ctx);
          // Mostly the native loader alone (the TS header check would stop most files before
          // it); sometimes the public loadModel, which runs both.
          const variant = input.variant ?? input.bytes.length;
          if (variant % 5 === 0) {
            const model = await loadModel(file, { useRepack: variant % 2 === 0 });
            const ctxt = await model.createContext({ contextSize: 8, threads: 1 });
            await ctxt.score(['Hello']);
            await model.dispose();
            return 'ok';
          }
          const model = await openEngineModel(file, { useRepack: variant % 3 !== 0 });
          try {
            const c = await model.createContext({ contextSize: 8, batchSize: 8, threads: 1 });
            try {
              const last = model.hparams.nVocab - 1;
              await c.evaluate({ tokens: [2, Math.min(5, last)], positions: [0, 1] });
              await c.sample(1, { ...SAMPLER_OFF, temperature: 0 });
            } finally {
              await c.dispose();
            }
          } finally {
            model.dispose();
          }
          return 'ok';
        },
      };
    case 'safetensors': {
      const bytes = fs.readFileSync(path.join(seedsDir, 'ckpt', 'model.safetensors'));
      const headerLength = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.toString('utf8', 8, 8 + headerLength));
      const paths = jsonPaths(header);
      const data = bytes.subarray(8 + headerLength);
      const boundaries = [0, 8, 8 + headerLength, bytes.length];
      for (const v of Object.values(header) as Array<{ data_offsets?: [number, number] }>) {
        if (v.data_offsets) boundaries.push(8 + headerLength + v.data_offsets[0], 8 + headerLength + v.data_offsets[1]);
      }
      const structured: Structured = { bytes, fields: [{ offset: 0, size: 8, kind: 'length' }], boundaries };
      const withHeader = (text: string, lengthDelta = 0): Uint8Array => {
        const h = Buffer.from(text, 'utf8');
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(Math.max(0, h.length + lengthDelta)));
        return Buffer.concat([len, h, data]);
      };
      return {
        seedCount: 1,
        mutate(rng) {
          const r = rng.int(10);
          let out: Uint8Array;
          if (r < 5) out = withHeader(JSON.stringify(mutateJson(rng, header, paths)));
          else if (r < 7) out = withHeader(mutateJsonText(rng, JSON.stringify(header)), rng.chance(0.8) ? 0 : rng.pick([-1, 1, 8]));
          else if (r < 9) out = mutateStructured(rng, structured, 8 + headerLength);
          else out = mutateBlind(rng, bytes.subarray(0, 8 + headerLength + 64));
          return { bytes: out, fileName: 'model.safetensors' };
        },
        run: (input, ctx) => runCheckpoint(input, ctx, 'safetensors'),
      };
    }
    case 'pytorch-zip': {
      const entries = zipEntriesOf(seedsDir);
      const fixtureEntries = readStoredZip(fs.readFileSync(path.join(FIXTURE_A, 'pytorch_model.bin')));
      const zipped = writeStoredZip(entries);
      return {
        seedCount: 2,
        mutate(rng, seedIndex) {
          let bytes: Uint8Array;
          if (seedIndex === 1 && rng.chance(0.5)) {
            // the real torch.save archive of the fixture, structure-blind
            bytes = mutateBlind(rng, writeStoredZip(fixtureEntries).bytes);
          } else if (rng.chance(0.3)) {
            // entries renamed, duplicated or dropped, written back as a well-formed zip
            const files = entries.map((e) => ({ ...e }));
            const f = rng.pick(files);
            const op = rng.int(4);
            if (op === 0) f.name = rng.pick(['../evil', '/etc/passwd', 'archive\\data.pkl', 'C:/x', 'archive/../data.pkl', '', 'archive/data.pkl']);
            else if (op === 1) files.push({ ...f });
            else if (op === 2) files.splice(files.indexOf(f), 1);
            else f.data = f.data.subarray(0, rng.int(f.data.length + 1));
            bytes = writeStoredZip(files).bytes;
          } else {
            bytes = mutateStructured(rng, zipped);
          }
          return { bytes, fileName: 'pytorch_model.bin' };
        },
        run: (input, ctx) => runCheckpoint(input, ctx, 'pytorch'),
      };
    }
    case 'pickle': {
      const entries = zipEntriesOf(seedsDir);
      const pklIndex = entries.findIndex((e) => e.name.endsWith('/data.pkl'));
      const fixturePkl = readStoredZip(fs.readFileSync(path.join(FIXTURE_A, 'pytorch_model.bin'))).find((e) => e.name.endsWith('/data.pkl'))!.data;
      const scanned = [scanPickle(entries[pklIndex]!.data), scanPickle(fixturePkl)];
      return {
        seedCount: 2,
        mutate(rng, seedIndex) {
          const s = scanned[seedIndex]!;
          const bytes = (rng.chance(0.4) ? mutatePickle(rng, s) : undefined) ?? mutateStructured(rng, s);
          return { bytes, fileName: 'data.pkl' };
        },
        async run(input, ctx) {
          unpickleStateDict(input.bytes);
          // and the same pickle inside an otherwise valid checkpoint (CRCs right), every 4th case
          if (input.bytes.length % 4 === 0) {
            const files = entries.map((e, i) => (i === pklIndex ? { ...e, data: input.bytes } : e));
            return runCheckpoint({ bytes: writeStoredZip(files).bytes, fileName: 'pytorch_model.bin' }, ctx, 'pytorch');
          }
          return 'ok';
        },
      };
    }
    case 'spm': {
      const small = fs.readFileSync(path.join(seedsDir, 'ckpt', 'sentencepiece.bpe.model'));
      const seeds = [small, fs.readFileSync(path.join(FIXTURE_A, 'sentencepiece.bpe.model'))];
      const fields: ProtoField[][] = seeds.map((s) => scanProto(s));
      return {
        seedCount: 2,
        mutate(rng, seedIndex) {
          // the 263 KB fixture model is slow to load: one case in eight
          const i = seedIndex === 1 && rng.chance(0.75) ? 0 : seedIndex;
          const bytes = rng.chance(0.8) ? mutateProto(rng, seeds[i]!, fields[i]!) : mutateBlind(rng, seeds[i]!);
          return { bytes, fileName: 'sentencepiece.bpe.model' };
        },
        async run(input) {
          return everyStep([
            () => xglmVocabularyFromSentencePiece(parseSentencePieceModel(input.bytes)),
            () => useTokenizer(Tokenizer.fromSentencePiece(input.bytes)),
          ]);
        },
      };
    }
    case 'tokenizer-json': {
      const text = fs.readFileSync(path.join(seedsDir, 'tokenizer.json'), 'utf8');
      const root = JSON.parse(text);
      const paths = jsonPaths(root);
      const charsmap = Buffer.from(root.normalizer.normalizers[0].precompiled_charsmap, 'base64');
      return {
        seedCount: 1,
        mutate(rng) {
          const r = rng.int(10);
          let out: string;
          if (r < 6) out = JSON.stringify(mutateJson(rng, root, paths));
          else if (r < 8) out = mutateJsonText(rng, text);
          else {
            // a damaged precompiled charsmap (a binary trie inside the JSON)
            const copy = structuredClone(root);
            const cm = rng.chance(0.3) ? charsmap.subarray(0, rng.int(charsmap.length)) : mutateBlind(rng, charsmap);
            copy.normalizer.normalizers[0].precompiled_charsmap = Buffer.from(cm).toString('base64');
            out = JSON.stringify(copy);
          }
          return { bytes: Buffer.from(out, 'utf8'), fileName: 'tokenizer.json' };
        },
        async run(input) {
          useTokenizer(Tokenizer.fromTokenizerJson(Buffer.from(input.bytes).toString('utf8')));
          return 'ok';
        },
      };
    }
  }
}

/** The outcome of a run as a short label; throws (rethrows) anything that is not an XglmError. */
export async function runCase(target: Target, input: CaseInput, ctx: RunContext): Promise<string> {
  try {
    return await target.run(input, ctx);
  } catch (err) {
    if (err instanceof XglmError) return err.code;
    throw err;
  }
}

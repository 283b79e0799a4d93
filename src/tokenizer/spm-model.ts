/**
 * SentencePiece `.model` files (a serialized `sentencepiece.ModelProto`) and their mapping to
 * XGLM's HuggingFace/fairseq vocabulary — the arrays that go into GGUF `tokenizer.ggml.*`.
 *
 * Only the fields a unigram tokenizer needs are decoded; every other field is skipped by wire
 * type, so newer .model files still parse. Field numbers follow sentencepiece_model.proto:
 *
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec,
 *                   5 denormalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (enum, default NORMAL)
 *   TrainerSpec     3 model_type, 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id
 *   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
 *                   5 escape_whitespaces
 */
import { XglmError } from '../errors.js';

/** SentencePiece's `SentencePiece.Type` enum (numeric values as in the .proto). */
export const SpmPieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;
export type SpmPieceType = (typeof SpmPieceType)[keyof typeof SpmPieceType];

/** SentencePiece's `TrainerSpec.ModelType` enum. */
export const SpmModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const;
export type SpmModelType = (typeof SpmModelType)[keyof typeof SpmModelType];

export interface SpmPiece {
  /** The piece text; whitespace appears as "▁" (U+2581). */
  piece: string;
  /** Unigram log-probability (0 for control/unknown pieces). */
  score: number;
  type: SpmPieceType;
}

export interface SpmTrainerSpec {
  modelType: SpmModelType;
  /** spm id of the unknown piece (proto default 0). */
  unkId: number;
  /** spm id of <s> (proto default 1; -1 = none). */
  bosId: number;
  /** spm id of </s> (proto default 2; -1 = none). */
  eosId: number;
  /** spm id of <pad> (proto default -1 = none). */
  padId: number;
  byteFallback: boolean;
}

export interface SpmNormalizerSpec {
  /** Rule name, e.g. "nmt_nfkc"; informational — the charsmap below is what normalizes. */
  name: string;
  /**
   * The compiled normalization rules: uint32 LE trie size in bytes, the darts-clone double-array
   * units, then NUL-terminated replacement strings. Empty = identity normalization.
   */
  precompiledCharsmap: Uint8Array;
  /** Prepend "▁" to the text (proto default true). */
  addDummyPrefix: boolean;
  /** Drop leading/trailing whitespace and collapse runs to one (proto default true). */
  removeExtraWhitespaces: boolean;
  /** Replace " " by "▁" (proto default true). */
  escapeWhitespaces: boolean;
}

/** A decoded SentencePiece model: pieces indexed by spm id. */
export interface SentencePieceModel {
  pieces: SpmPiece[];
  trainerSpec: SpmTrainerSpec;
  normalizerSpec: SpmNormalizerSpec;
}

// Wire types of the protobuf encoding.
const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

/** Sanity limit: the largest real SentencePiece vocabularies have ~1M pieces. */
const MAX_PIECES = 4_000_000;

function corrupt(message: string): XglmError {
  return new XglmError('ERR_XGLM_TOKENIZER', `invalid SentencePiece model: ${message}`, {
    hint: 'pass the sentencepiece.bpe.model file of the checkpoint (a serialized ModelProto)',
  });
}

/** A bounds-checked cursor over one protobuf message. */
class ProtoReader {
  pos: number;
  constructor(
    readonly bytes: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Reads a varint as a JS number; values above 2^53 lose precision (not used by our fields). */
  varint(): number {
    let result = 0;
    let multiplier = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw corrupt('truncated varint');
      const b = this.bytes[this.pos++]!;
      result += (b & 0x7f) * multiplier;
      if ((b & 0x80) === 0) return result;
      multiplier *= 128;
    }
    throw corrupt('varint longer than 10 bytes');
  }

  /**
   * An int32 field: negative values are sign-extended to 10-byte varints on the wire, so only
   * the low 32 bits (the first 5 bytes' payload) count; the sum in varint() would round them away.
   */
  int32(): number {
    let low = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw corrupt('truncated varint');
      const b = this.bytes[this.pos++]!;
      if (i < 5) low |= (b & 0x7f) << (7 * i);
      if ((b & 0x80) === 0) return low | 0;
    }
    throw corrupt('varint longer than 10 bytes');
  }

  /** Returns [start, end) of a length-delimited field's payload. */
  lengthDelimited(): [number, number] {
    const length = this.varint();
    if (length > this.end - this.pos) throw corrupt(`field length ${length} runs past the end of its message`);
    const start = this.pos;
    this.pos += length;
    return [start, start + length];
  }

  float32(): number {
    if (this.end - this.pos < 4) throw corrupt('truncated float');
    const view = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.pos, 4);
    this.pos += 4;
    return view.getFloat32(0, true);
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.lengthDelimited();
        return;
      case WIRE_FIXED32:
        this.advance(4);
        return;
      default:
        throw corrupt(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (this.end - this.pos < n) throw corrupt('truncated fixed-width field');
    this.pos += n;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeString(bytes: Uint8Array, [start, end]: [number, number]): string {
  try {
    return utf8.decode(bytes.subarray(start, end));
  } catch (cause) {
    throw new XglmError('ERR_XGLM_TOKENIZER', 'invalid SentencePiece model: a string field is not valid UTF-8', {
      cause,
    });
  }
}

function expectWire(field: string, actual: number, expected: number): void {
  if (actual !== expected) throw corrupt(`field ${field} has wire type ${actual}, expected ${expected}`);
}

/** Reads a `bool`/enum/int field that may also arrive packed (tolerated, last value wins). */
function readScalar(reader: ProtoReader, wireType: number, field: string, signed: boolean): number {
  if (wireType === WIRE_VARINT) return signed ? reader.int32() : reader.varint();
  if (wireType === WIRE_LEN) {
    const [start, end] = reader.lengthDelimited();
    const inner = new ProtoReader(reader.bytes, start, end);
    let value = 0;
    while (!inner.done) value = signed ? inner.int32() : inner.varint();
    return value;
  }
  throw corrupt(`field ${field} has wire type ${wireType}, expected a varint`);
}

function parsePiece(bytes: Uint8Array, start: number, end: number, index: number): SpmPiece {
  const r = new ProtoReader(bytes, start, end);
  let piece: string | undefined;
  let score = 0;
  let type: number = SpmPieceType.NORMAL;
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field === 1) {
      expectWire('SentencePiece.piece', wire, WIRE_LEN);
      piece = decodeString(bytes, r.lengthDelimited());
    } else if (field === 2) {
      expectWire('SentencePiece.score', wire, WIRE_FIXED32);
      score = r.float32();
    } else if (field === 3) {
      type = readScalar(r, wire, 'SentencePiece.type', false);
    } else {
      r.skip(wire);
    }
  }
  if (piece === undefined) throw corrupt(`piece ${index} has no text`);
  if (type < SpmPieceType.NORMAL || type > SpmPieceType.BYTE) throw corrupt(`piece ${index} has unknown type ${type}`);
  return { piece, score, type: type as SpmPieceType };
}

function parseTrainerSpec(bytes: Uint8Array, start: number, end: number): SpmTrainerSpec {
  const spec: SpmTrainerSpec = { modelType: SpmModelType.UNIGRAM, unkId: 0, bosId: 1, eosId: 2, padId: -1, byteFallback: false };
  const r = new ProtoReader(bytes, start, end);
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    switch (field) {
      case 3: {
        const t = readScalar(r, wire, 'TrainerSpec.model_type', false);
        if (t < SpmModelType.UNIGRAM || t > SpmModelType.CHAR) throw corrupt(`unknown model_type ${t}`);
        spec.modelType = t as SpmModelType;
        break;
      }
      case 35:
        spec.byteFallback = readScalar(r, wire, 'TrainerSpec.byte_fallback', false) !== 0;
        break;
      case 40:
        spec.unkId = readScalar(r, wire, 'TrainerSpec.unk_id', true);
        break;
      case 41:
        spec.bosId = readScalar(r, wire, 'TrainerSpec.bos_id', true);
        break;
      case 42:
        spec.eosId = readScalar(r, wire, 'TrainerSpec.eos_id', true);
        break;
      case 43:
        spec.padId = readScalar(r, wire, 'TrainerSpec.pad_id', true);
        break;
      default:
        r.skip(wire);
    }
  }
  return spec;
}

function parseNormalizerSpec(bytes: Uint8Array, start: number, end: number): SpmNormalizerSpec {
  const spec: SpmNormalizerSpec = {
    name: '',
    precompiledCharsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  const r = new ProtoReader(bytes, start, end);
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    switch (field) {
      case 1:
        expectWire('NormalizerSpec.name', wire, WIRE_LEN);
        spec.name = decodeString(bytes, r.lengthDelimited());
        break;
      case 2: {
        expectWire('NormalizerSpec.precompiled_charsmap', wire, WIRE_LEN);
        const [s, e] = r.lengthDelimited();
        spec.precompiledCharsmap = bytes.slice(s, e); // a copy: callers may keep it after the file buffer is gone
        break;
      }
      case 3:
        spec.addDummyPrefix = readScalar(r, wire, 'NormalizerSpec.add_dummy_prefix', false) !== 0;
        break;
      case 4:
        spec.removeExtraWhitespaces = readScalar(r, wire, 'NormalizerSpec.remove_extra_whitespaces', false) !== 0;
        break;
      case 5:
        spec.escapeWhitespaces = readScalar(r, wire, 'NormalizerSpec.escape_whitespaces', false) !== 0;
        break;
      default:
        r.skip(wire);
    }
  }
  return spec;
}

/**
 * Decodes a serialized SentencePiece ModelProto (the bytes of a `.model` file).
 * @throws XglmError `ERR_XGLM_TOKENIZER` when the bytes are not a well-formed model.
 */
export function parseSentencePieceModel(bytes: Uint8Array): SentencePieceModel {
  if (!(bytes instanceof Uint8Array)) {
    throw new XglmError('ERR_XGLM_INVALID_ARGUMENT', 'parseSentencePieceModel expects a Uint8Array');
  }
  const pieces: SpmPiece[] = [];
  let trainerSpec: SpmTrainerSpec | undefined;
  let normalizerSpec: SpmNormalizerSpec | undefined;
  const r = new ProtoReader(bytes, 0, bytes.length);
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field === 0) throw corrupt('field number 0');
    if (field === 1 || field === 2 || field === 3) {
      expectWire(`ModelProto.${field}`, wire, WIRE_LEN);
      const [s, e] = r.lengthDelimited();
      if (field === 1) {
        if (pieces.length >= MAX_PIECES) throw corrupt(`more than ${MAX_PIECES} pieces`);
        pieces.push(parsePiece(bytes, s, e, pieces.length));
      } else if (field === 2) {
        trainerSpec = parseTrainerSpec(bytes, s, e);
      } else {
        normalizerSpec = parseNormalizerSpec(bytes, s, e);
      }
    } else {
      r.skip(wire);
    }
  }
  if (pieces.length === 0) throw corrupt('no pieces');
  trainerSpec ??= parseTrainerSpec(bytes, 0, 0);
  normalizerSpec ??= parseNormalizerSpec(bytes, 0, 0);
  for (const [name, id] of [
    ['unk_id', trainerSpec.unkId],
    ['bos_id', trainerSpec.bosId],
    ['eos_id', trainerSpec.eosId],
    ['pad_id', trainerSpec.padId],
  ] as const) {
    if (id < -1 || id >= pieces.length) throw corrupt(`${name} ${id} is outside the ${pieces.length} pieces`);
  }
  if (pieces[trainerSpec.unkId]!.type !== SpmPieceType.UNKNOWN) {
    throw corrupt(`piece ${trainerSpec.unkId} (unk_id) is not of type UNKNOWN`);
  }
  return { pieces, trainerSpec, normalizerSpec };
}

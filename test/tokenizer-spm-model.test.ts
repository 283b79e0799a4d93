import test from 'ava';
import { execFileSync } from 'node:child_process';
import { XglmError } from '../src/errors.js';
import { parseSentencePieceModel, SpmPieceType } from '../src/tokenizer/spm-model.js';
import { GgufTokenType, xglmVocabularyFromSentencePiece } from '../src/tokenizer/xglm-vocab.js';
import { FIXTURE_NAMES, golden as goldenOf, readSpmModel, spmModelPath } from './helpers/fixtures.js';
import { SPM_INSTALL, tools } from './helpers/external-tools.js';

const spm = tools(['spm_export_vocab'], SPM_INSTALL);

for (const name of FIXTURE_NAMES) {
  test(`${name}: pieces, settings and XGLM vocabulary match golden.json`, (t) => {
    const golden = goldenOf(name).tokenizer;
    const model = parseSentencePieceModel(readSpmModel(name));
    t.is(model.pieces.length, golden.sp_piece_count);
    t.deepEqual(model.trainerSpec, { modelType: 1, unkId: 0, bosId: 1, eosId: 2, padId: -1, byteFallback: false });
    t.is(model.normalizerSpec.name, 'nmt_nfkc');
    t.true(model.normalizerSpec.addDummyPrefix);
    t.true(model.normalizerSpec.removeExtraWhitespaces);
    t.true(model.normalizerSpec.escapeWhitespaces);
    t.true(model.normalizerSpec.precompiledCharsmap.length > 4);

    const vocab = xglmVocabularyFromSentencePiece(model);
    t.is(vocab.tokens.length, golden.vocab_size);
    for (const [token, id] of Object.entries({ ...golden.special_ids, ...golden.madeup_ids })) {
      t.is(vocab.tokens[id], token);
      t.is(vocab.tokenTypes[id], id === 3 ? GgufTokenType.UNKNOWN : GgufTokenType.CONTROL);
      t.is(vocab.scores[id], 0);
    }
    // Every piece in the golden cases (other than unknown text) sits at its HF id.
    for (const c of golden.cases) {
      c.pieces.forEach((piece, i) => {
        const id = c.ids[i + 1]!;
        if (id !== 3) t.is(vocab.tokens[id], piece, `${c.id} piece ${i}`);
      });
    }
  });

  spm.test(`${name}: pieces and scores match spm_export_vocab`, (t) => {
    const out = execFileSync(spm.path.spm_export_vocab!, [`--model=${spmModelPath(name)}`], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const lines = out.split('\n').filter((l) => l.length > 0);
    const model = parseSentencePieceModel(readSpmModel(name));
    t.is(lines.length, model.pieces.length);
    let mismatches = 0;
    lines.forEach((line, i) => {
      const [piece, score] = line.split('\t');
      const ours = model.pieces[i]!;
      // spm_export_vocab prints scores with 6 significant digits.
      if (piece !== ours.piece || Math.abs(Number(score) - ours.score) > 1e-5 * Math.max(1, Math.abs(ours.score))) mismatches++;
    });
    t.is(mismatches, 0);
    t.is(model.pieces.filter((p) => p.type === SpmPieceType.NORMAL).length, model.pieces.length - 3);
  });
}

test('corrupt or truncated models throw ERR_XGLM_TOKENIZER, never anything else', (t) => {
  const bytes = readSpmModel('tiny-a');
  const cuts = [0, 1, 2, 3, 7, 100, 1001, bytes.length >> 1, bytes.length - 7, bytes.length - 1];
  for (const cut of cuts) {
    const error = t.throws(() => parseSentencePieceModel(bytes.subarray(0, cut)), { instanceOf: XglmError });
    t.is(error?.code, 'ERR_XGLM_TOKENIZER', `cut at ${cut}`);
  }
  const garbage = new Uint8Array(256).map((_, i) => (i * 131 + 7) & 0xff);
  t.is(t.throws(() => parseSentencePieceModel(garbage), { instanceOf: XglmError })?.code, 'ERR_XGLM_TOKENIZER');
  // A length prefix that points past the end of the buffer.
  t.is(t.throws(() => parseSentencePieceModel(Uint8Array.of(0x0a, 0xff, 0xff, 0xff, 0x0f, 0x00)), { instanceOf: XglmError })?.code, 'ERR_XGLM_TOKENIZER');
});

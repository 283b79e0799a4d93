/**
 * The tokenizer against the oracle: every tokenizer case of both fixtures' golden.json (ids from
 * HF XGLMTokenizer, pieces, decoded text), through all three loaders, plus streaming decode.
 */
import test from 'ava';
import { XglmError } from '../src/errors.js';
import { GgufTokenType, Tokenizer, xglmVocabularyFromSentencePiece, parseSentencePieceModel } from '../src/tokenizer/index.js';
import { FIXTURE_NAMES, golden as goldenOf, readSpmModel, type FixtureName, type GoldenTokenizerCase } from './helpers/fixtures.js';
import { tokenizerJsonFromSentencePiece } from './helpers/spm-tokenizer-json.js';

function ggufMetadataFor(name: FixtureName): Map<string, unknown> {
  const v = xglmVocabularyFromSentencePiece(parseSentencePieceModel(readSpmModel(name)));
  return new Map<string, unknown>([
    ['tokenizer.ggml.model', 't5'],
    ['tokenizer.ggml.pre', 'default'],
    // Arrays both bare and wrapped as the package's GGUF reader returns them ({ itemType, items }).
    ['tokenizer.ggml.tokens', { itemType: 8, items: v.tokens }],
    ['tokenizer.ggml.scores', { itemType: 6, items: v.scores }],
    ['tokenizer.ggml.token_type', v.tokenTypes],
    ['tokenizer.ggml.precompiled_charsmap', v.precompiledCharsmap],
    ['tokenizer.ggml.add_space_prefix', v.addSpacePrefix],
    ['tokenizer.ggml.remove_extra_whitespaces', v.removeExtraWhitespaces],
    ['tokenizer.ggml.add_bos_token', true],
    ['tokenizer.ggml.add_eos_token', false],
    ['tokenizer.ggml.bos_token_id', 2n],
    ['tokenizer.ggml.eos_token_id', 2],
    ['tokenizer.ggml.unknown_token_id', 3],
    ['tokenizer.ggml.padding_token_id', 1],
  ]);
}

const loaders: Record<string, (name: FixtureName) => Tokenizer> = {
  'sentencepiece.bpe.model': (name) => Tokenizer.fromSentencePiece(readSpmModel(name)),
  'tokenizer.json': (name) => Tokenizer.fromTokenizerJson(JSON.stringify(tokenizerJsonFromSentencePiece(readSpmModel(name)))),
  'tokenizer.json without added_tokens': (name) => {
    const json = tokenizerJsonFromSentencePiece(readSpmModel(name)) as { added_tokens?: unknown };
    delete json.added_tokens;
    return Tokenizer.fromTokenizerJson(json);
  },
  'GGUF metadata': (name) => {
    const meta = ggufMetadataFor(name);
    return Tokenizer.fromGgufMetadata((key) => meta.get(key));
  },
};

const isSpecialLiteral = (c: GoldenTokenizerCase) => c.category === 'special_literal';

for (const name of FIXTURE_NAMES) {
  const golden = goldenOf(name).tokenizer;

  for (const [loaderName, load] of Object.entries(loaders)) {
    test(`${name} via ${loaderName}: ids of all ${golden.cases.length} golden cases`, (t) => {
      const tokenizer = load(name);
      t.is(tokenizer.vocabSize, golden.vocab_size);
      const mismatched = golden.cases.filter((c) => {
        const ids = tokenizer.encode(c.text, { specialTokens: isSpecialLiteral(c) });
        return JSON.stringify(ids) !== JSON.stringify(c.ids);
      });
      t.deepEqual(mismatched.map((c) => c.id), []);
    });
  }

  test(`${name}: pieces, unknown counts and decoded text of every golden case`, (t) => {
    const tokenizer = loaders['sentencepiece.bpe.model']!(name);
    let idMismatches = 0;
    let pieceMismatches = 0;
    let decodeMismatches = 0;
    for (const c of golden.cases) {
      const { ids, pieces } = tokenizer.tokenize(c.text, { specialTokens: isSpecialLiteral(c) });
      if (JSON.stringify(ids) !== JSON.stringify(c.ids)) idMismatches++;
      if (JSON.stringify(pieces.slice(1)) !== JSON.stringify(c.pieces)) pieceMismatches++;
      t.is(ids.filter((id) => id === 3).length, c.n_unk, c.id);
      if (tokenizer.decode(c.ids) !== c.decoded) decodeMismatches++;
    }
    t.is(idMismatches, 0);
    t.is(pieceMismatches, 0);
    t.is(decodeMismatches, 0);
    t.true(golden.cases.some((c) => c.n_unk > 0), 'fixtures exercise unknown runs');
  });

  test(`${name}: special-token literals are plain text unless specialTokens is on`, (t) => {
    const tokenizer = loaders['sentencepiece.bpe.model']!(name);
    const specialIds = new Set([...Object.values(golden.special_ids), ...Object.values(golden.madeup_ids)]);
    for (const c of golden.cases.filter(isSpecialLiteral)) {
      const plain = tokenizer.encode(c.text);
      t.is(plain[0], 2);
      t.false(plain.slice(1).some((id) => specialIds.has(id)), `${c.id}: ${JSON.stringify(plain)}`);
      t.deepEqual(tokenizer.encode(c.text, { specialTokens: true }), c.ids);
    }
  });

  test(`${name}: streaming decode equals one-shot decode at every split point`, (t) => {
    const tokenizer = loaders['sentencepiece.bpe.model']!(name);
    let checks = 0;
    for (const skipSpecialTokens of [true, false]) {
      for (const c of golden.cases) {
        const stream = tokenizer.createStreamDecoder({ skipSpecialTokens });
        let emitted = '';
        c.ids.forEach((id, k) => {
          emitted += stream.push(id);
          // Everything decode() would show for the prefix has been emitted, nothing more.
          if (emitted !== tokenizer.decode(c.ids.slice(0, k + 1), { skipSpecialTokens })) {
            t.fail(`${c.id} after ${k + 1} ids: ${JSON.stringify(emitted)}`);
          }
          checks++;
        });
        emitted += stream.flush();
        t.is(emitted, tokenizer.decode(c.ids, { skipSpecialTokens }), c.id);
        if (skipSpecialTokens) t.is(emitted, c.decoded, c.id);
      }
    }
    t.true(checks > 1000);
  });
}

test('decode keeps special-token text when skipSpecialTokens is false', (t) => {
  const tokenizer = loaders['sentencepiece.bpe.model']!('tiny-a');
  const golden = goldenOf('tiny-a').tokenizer;
  const c = golden.cases.find((x) => x.text === 'Hello </s> world')!;
  t.is(tokenizer.decode(c.ids), 'Hello world');
  t.is(tokenizer.decode(c.ids, { skipSpecialTokens: false }), '</s> Hello</s> world');
  t.is(tokenizer.idToToken(2001), '<madeupword0>');
  t.is(tokenizer.tokenToId('<madeupword6>'), 2007);
  t.is(tokenizer.tokenType(3), GgufTokenType.UNKNOWN);
});

test('stream decoder never splits a UTF-8 character of byte-fallback pieces', (t) => {
  // A synthetic byte-fallback vocabulary: "你" (E4 BD A0) and "😀" (F0 9F 98 80) only as bytes.
  const bytes = [0xe4, 0xbd, 0xa0, 0xf0, 0x9f, 0x98, 0x80];
  const tokens = ['<s>', '<pad>', '</s>', '<unk>', '\u2581', 'a', ...bytes.map((b) => `<0x${b.toString(16).toUpperCase()}>`)];
  const tokenTypes = tokens.map((_, i) => (i < 3 ? 3 : i === 3 ? 2 : i < 6 ? 1 : 6));
  const tokenizer = new Tokenizer({
    tokens,
    scores: tokens.map(() => -1),
    tokenTypes,
    precompiledCharsmap: new Uint8Array(0),
    addSpacePrefix: true,
    removeExtraWhitespaces: true,
  });
  const ids = [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 4, 9, 10, 5];
  const stream = tokenizer.createStreamDecoder();
  const chunks = ids.map((id) => stream.push(id));
  chunks.push(stream.flush());
  // ▁ a | 你 in 3 bytes | 😀 in 4 bytes | ▁ | 2 bytes of an unfinished character | a
  t.deepEqual(chunks, ['', '', 'a', '', '', '你', '', '', '', '😀', '', '', '', ' \ufffda', '']);
  t.is(chunks.join(''), tokenizer.decode(ids));
  t.is(tokenizer.decode(ids), 'a你😀 \ufffda');
  for (const chunk of chunks) t.false(/[\ud800-\udbff]$/.test(chunk), 'no chunk ends inside a surrogate pair');
});

test('bad input gives typed errors', (t) => {
  const tokenizer = loaders['sentencepiece.bpe.model']!('tiny-a');
  t.is(t.throws(() => tokenizer.decode([0, 99999]), { instanceOf: XglmError })?.code, 'ERR_XGLM_INVALID_ARGUMENT');
  t.is(t.throws(() => tokenizer.decode([1.5]), { instanceOf: XglmError })?.code, 'ERR_XGLM_INVALID_ARGUMENT');
  t.is(t.throws(() => tokenizer.encode(42 as unknown as string), { instanceOf: XglmError })?.code, 'ERR_XGLM_INVALID_ARGUMENT');
  t.is(t.throws(() => Tokenizer.fromTokenizerJson('{not json'), { instanceOf: XglmError })?.code, 'ERR_XGLM_TOKENIZER');
  t.is(t.throws(() => Tokenizer.fromTokenizerJson({ model: { type: 'BPE', vocab: {} } }), { instanceOf: XglmError })?.code, 'ERR_XGLM_TOKENIZER');
  t.is(t.throws(() => Tokenizer.fromGgufMetadata(() => undefined), { instanceOf: XglmError })?.code, 'ERR_XGLM_TOKENIZER');
  const meta = ggufMetadataFor('tiny-a');
  meta.set('tokenizer.ggml.precompiled_charsmap', Uint8Array.of(0xff, 0xff, 0, 0, 1, 2));
  t.is(t.throws(() => Tokenizer.fromGgufMetadata((k) => meta.get(k)), { instanceOf: XglmError })?.code, 'ERR_XGLM_TOKENIZER');
});

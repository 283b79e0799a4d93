/**
 * Builds a HuggingFace tokenizer.json for an XGLM SentencePiece model in the shape transformers'
 * XGLMConverter writes (fixtures ship no tokenizer.json): Unigram model with the fairseq vocabulary,
 * Precompiled + whitespace normalizers, Metaspace pre-tokenizer, "</s> $A" template.
 */
import { parseSentencePieceModel } from '../../src/tokenizer/spm-model.js';

export function tokenizerJsonFromSentencePiece(bytes: Uint8Array): object {
  const model = parseSentencePieceModel(bytes);
  const madeup = Array.from({ length: 7 }, (_, i) => `<madeupword${i}>`);
  const vocab: Array<[string, number]> = [
    ['<s>', 0],
    ['<pad>', 0],
    ['</s>', 0],
    ['<unk>', 0],
    ...model.pieces.slice(3).map((p): [string, number] => [p.piece, p.score]),
    ...madeup.map((m): [string, number] => [m, 0]),
  ];
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      special(0, '<s>'),
      special(1, '<pad>'),
      special(2, '</s>'),
      special(3, '<unk>'),
      ...madeup.map((m, i) => special(model.pieces.length + 1 + i, m)),
    ],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Precompiled', precompiled_charsmap: Buffer.from(model.normalizerSpec.precompiledCharsmap).toString('base64') },
        { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' },
      ],
    },
    pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', add_prefix_space: true, prepend_scheme: 'always' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '</s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } },
    },
    decoder: { type: 'Metaspace', replacement: '\u2581', add_prefix_space: true, prepend_scheme: 'always' },
    model: { type: 'Unigram', unk_id: 3, vocab, byte_fallback: false },
  };
}

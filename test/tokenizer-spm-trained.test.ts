/**
 * The generic SentencePiece paths XGLM's own model does not exercise — user-defined pieces
 * (copied verbatim by the normalizer, scored length × max_score − 0.1), control pieces, and the
 * normalizer flags (identity rules without a charsmap, nfkc_cf, no dummy prefix, kept extra
 * whitespace) — checked against spm_encode on small models spm_train builds from fixture text.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '../src/tokenizer/index.js';
import { spmIdToXglmId } from '../src/tokenizer/xglm-vocab.js';
import { golden } from './helpers/fixtures.js';
import { randomText, seededRandom } from './helpers/spm-random-text.js';
import { SPM_INSTALL, tools } from './helpers/external-tools.js';

const spm = tools(['spm_train', 'spm_encode'], SPM_INSTALL);
const USER_DEFINED = ['<mask>', '@@', '☃☃', 'ab', '▁x'];

const variants: Array<{ name: string; flags: string[] }> = [
  { name: 'nmt_nfkc + user-defined and control symbols', flags: [] },
  { name: 'identity rules, no dummy prefix, extra whitespace kept', flags: ['--normalization_rule_name=identity', '--add_dummy_prefix=false', '--remove_extra_whitespaces=false'] },
  { name: 'nfkc_cf, extra whitespace kept', flags: ['--normalization_rule_name=nfkc_cf', '--remove_extra_whitespaces=false'] },
];

for (const [index, variant] of variants.entries()) {
  spm.test(`spm_train model (${variant.name}): 2,000 random strings encode as spm_encode`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'xglm-spm-train-'));
    try {
      const corpus = join(dir, 'corpus.txt');
      const texts = golden('tiny-b').tokenizer.cases.map((c) => c.text.replace(/[\n\r]/g, ' '));
      writeFileSync(corpus, texts.join('\n') + '\n');
      execFileSync(spm.path.spm_train!, [
        `--input=${corpus}`,
        `--model_prefix=${join(dir, 'm')}`,
        '--vocab_size=600',
        '--model_type=unigram',
        `--user_defined_symbols=${USER_DEFINED.join(',')}`,
        '--control_symbols=<ctl>,<mask2>',
        '--character_coverage=0.98',
        '--num_threads=1',
        ...variant.flags,
      ], { stdio: 'ignore' });
      const modelPath = join(dir, 'm.model');
      const tokenizer = Tokenizer.fromSentencePiece(new Uint8Array(readFileSync(modelPath)));

      const rand = seededRandom(0x7a11 + index);
      const inputs = Array.from({ length: 2000 }, (_, i) => {
        let s = randomText(rand);
        // Weave in user-defined and control symbols (and pieces of them) every other string.
        if (i % 2 === 0) {
          const extras = [...USER_DEFINED, '<ctl>', '<mask2>', '<mas', '☃', ' @@ ', 'aab', 'x'];
          for (let k = 0; k < 3; k++) {
            const at = Math.floor(rand() * (s.length + 1));
            s = s.slice(0, at) + extras[Math.floor(rand() * extras.length)] + s.slice(at);
          }
        }
        return s;
      });
      const input = join(dir, 'input.txt');
      writeFileSync(input, inputs.join('\n') + '\n');
      const rows = execFileSync(spm.path.spm_encode!, [`--model=${modelPath}`, '--output_format=id', `--input=${input}`], { encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n');
      rows.pop();
      t.is(rows.length, inputs.length);
      const mismatches = inputs.filter((text, i) => {
        const expected = [2, ...(rows[i]!.length ? rows[i]!.split(' ').map(Number) : []).map(spmIdToXglmId)];
        return JSON.stringify(tokenizer.encode(text)) !== JSON.stringify(expected);
      });
      for (const m of mismatches.slice(0, 3)) t.log(JSON.stringify(m), tokenizer.tokenize(m).pieces);
      t.is(mismatches.length, 0);
      // The user-defined symbols were really used (as whole tokens).
      t.true(inputs.some((text) => tokenizer.tokenize(text).pieces.includes('@@')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

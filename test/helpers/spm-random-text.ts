/**
 * Seeded random Unicode strings for comparing the tokenizer with SentencePiece itself: every
 * plane, combining marks, whitespace runs of many kinds, control characters, compatibility
 * characters that NFKC rewrites, unpaired surrogates, and the literal "▁" and special-token text.
 */

/** Mulberry32: small, fast, deterministic. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Range = readonly [number, number];

// Script blocks of XGLM's languages and friends (inclusive code point ranges).
const SCRIPT_RANGES: Range[] = [
  [0x41, 0x5a], [0x61, 0x7a], [0x30, 0x39], [0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e],
  [0xc0, 0x17f], // Latin-1 letters, Latin Extended-A
  [0x180, 0x24f], [0x1e00, 0x1eff], // Latin Extended-B, Vietnamese
  [0x370, 0x3ff], [0x400, 0x4ff], [0x530, 0x58f], [0x5d0, 0x5ea], [0x600, 0x6ff], [0x900, 0x97f],
  [0x980, 0x9ff], [0xb80, 0xbff], [0xc00, 0xc7f], [0xe00, 0xe7f], [0x10a0, 0x10ff], [0x1100, 0x11ff],
  [0x3040, 0x30ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0x1200, 0x137f], [0x0e80, 0x0eff],
];
const COMBINING: Range[] = [[0x300, 0x36f], [0x483, 0x489], [0x591, 0x5bd], [0x64b, 0x65f], [0x93c, 0x94d], [0xe31, 0xe3a], [0x1ab0, 0x1aff], [0x20d0, 0x20ff], [0xfe20, 0xfe2f], [0x3099, 0x309a]];
// Characters NFKC (nmt_nfkc) rewrites: full/halfwidth forms, ligatures, circled/superscript
// numbers, Roman numerals, CJK compatibility, math alphanumerics (astral), enclosed alphanumerics.
const COMPATIBILITY: Range[] = [[0xff01, 0xffee], [0xfb00, 0xfb4f], [0x2460, 0x24ff], [0x2070, 0x209f], [0x2150, 0x218b], [0x3300, 0x33ff], [0xf900, 0xfaff], [0x1d400, 0x1d7ff], [0x1f100, 0x1f1ff], [0xfe30, 0xfe6f], [0x2100, 0x214f], [0x1100, 0x11ff]];
const ASTRAL: Range[] = [[0x1f300, 0x1faff], [0x20000, 0x2a6df], [0x10000, 0x1007f], [0x1d100, 0x1d1ff], [0xe0000, 0xe007f], [0xf0000, 0xf00ff], [0x10fff0, 0x10ffff], [0x10000, 0x10ffff]];
const WHITESPACE = [0x20, 0x20, 0x20, 0x09, 0x0b, 0x0c, 0xa0, 0x1680, 0x2000, 0x2002, 0x2003, 0x2009, 0x200a, 0x200b, 0x200c, 0x200d, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff, 0x85, 0x180e];
const CONTROL: Range[] = [[0x00, 0x08], [0x0e, 0x1f], [0x7f, 0x9f], [0xfff9, 0xfffb], [0x200e, 0x200f], [0x202a, 0x202e], [0x2060, 0x2064]];
const LITERALS = ['\u2581', '</s>', '<s>', '<unk>', '<pad>', '<madeupword3>', ' \u2581 ', '\ufffd', '...', "n't", '\u00e9', 'e\u0301'];

export interface RandomTextOptions {
  /** Allow "\n" and "\r" (a line-oriented oracle cannot take them). @default false */
  lineBreaks?: boolean;
  /** Allow unpaired UTF-16 surrogates. @default true */
  loneSurrogates?: boolean;
}

export function randomText(rand: () => number, options: RandomTextOptions = {}): string {
  const lineBreaks = options.lineBreaks ?? false;
  const loneSurrogates = options.loneSurrogates ?? true;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const inRange = ([lo, hi]: Range): number => lo + Math.floor(rand() * (hi - lo + 1));
  const length = rand() < 0.05 ? 0 : 1 + Math.floor(rand() ** 2 * 40);
  let s = '';
  for (let i = 0; i < length; i++) {
    const r = rand();
    let cp: number;
    if (r < 0.3) cp = inRange(pick(SCRIPT_RANGES));
    else if (r < 0.42) {
      // A run of whitespace (1–5 characters).
      const n = 1 + Math.floor(rand() * 5);
      for (let k = 0; k < n; k++) s += String.fromCodePoint(pick(WHITESPACE));
      continue;
    } else if (r < 0.52) cp = inRange(pick(COMBINING));
    else if (r < 0.62) cp = inRange(pick(COMPATIBILITY));
    else if (r < 0.7) cp = inRange(pick(ASTRAL));
    else if (r < 0.76) cp = inRange(pick(CONTROL));
    else if (r < 0.82) cp = Math.floor(rand() * 0x10000); // any BMP code unit, surrogates included
    else if (r < 0.86) {
      s += pick(LITERALS);
      continue;
    } else if (r < 0.88) cp = loneSurrogates ? inRange([0xd800, 0xdfff]) : 0x41;
    else cp = 0x61 + Math.floor(rand() * 26);
    if (cp >= 0xd800 && cp <= 0xdfff) {
      if (!loneSurrogates) continue;
      s += String.fromCharCode(cp);
      continue;
    }
    if (!lineBreaks && (cp === 0x0a || cp === 0x0d)) cp = 0x20;
    s += String.fromCodePoint(cp);
  }
  return s;
}

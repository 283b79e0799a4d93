// Per-token decode time of the fixture models, for scripts/test-arm64.js (run with
// `node --import=tsx`, under qemu with the arm64 prebuild, or on the host for comparison).
// Greedy decoding through the KV cache from the first golden prompt; prints one JSON line
// per model/type: { model, type, variant, promptTokens, tokens, msPerToken, promptMs }.
//
//   node --import=tsx scripts/arm64-token-time.js [nTokens]
//   node --import=tsx scripts/arm64-token-time.js --gguf <file> [nTokens]
'use strict';

const { performance } = require('node:perf_hooks');
const { openEngineModel: loadModel } = require('../src/engine/model');
const { SAMPLER_OFF } = require('../src/sampler');
const { native } = require('../src/native');
const { fixtureGguf, golden } = require('../test/helpers/fixtures');

const N_TOKENS = Number(process.argv[2] || 16);
const CASES = [
  ['tiny-b', 'f32'],
  ['tiny-b', 'q4_0'],
];

async function measure(name, type) {
  const model = await loadModel(await fixtureGguf(name, type));
  const ctx = await model.createContext({ kvType: type === 'f32' ? 'f32' : 'f16', threads: 1 });
  try {
    const prompt = golden(name).prompts[0].ids;
    const positions = prompt.map((_, i) => i);
    let t0 = performance.now();
    await ctx.evaluate({ tokens: prompt, positions });
    let id = await ctx.sample(prompt.length - 1, { ...SAMPLER_OFF, temperature: 0 });
    const promptMs = performance.now() - t0;
    t0 = performance.now();
    for (let k = 0; k < N_TOKENS; k++) {
      await ctx.evaluate({ tokens: [id], positions: [prompt.length + k] });
      id = await ctx.sample(0, { ...SAMPLER_OFF, temperature: 0 });
    }
    const msPerToken = (performance.now() - t0) / N_TOKENS;
    return { model: name, type, arch: process.arch, variant: native().backendInfo().variant, promptTokens: prompt.length, tokens: N_TOKENS, msPerToken: Number(msPerToken.toFixed(2)), promptMs: Number(promptMs.toFixed(1)) };
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

// A GGUF of one's own (e.g. bench/engine-564m.ts's random 564M-shaped file): a short prompt
// and a few tokens, all threads.
async function measureFile(file, nTokens) {
  let t0 = performance.now();
  const model = await loadModel(file);
  const loadMs = performance.now() - t0;
  const ctx = await model.createContext({ contextSize: 64 });
  try {
    const prompt = Array.from({ length: 8 }, (_, i) => 4 + i * 997);
    t0 = performance.now();
    await ctx.evaluate({ tokens: prompt, positions: prompt.map((_, i) => i) });
    let id = await ctx.sample(prompt.length - 1, { ...SAMPLER_OFF, temperature: 0 });
    const promptMs = performance.now() - t0;
    t0 = performance.now();
    for (let k = 0; k < nTokens; k++) {
      await ctx.evaluate({ tokens: [id], positions: [prompt.length + k] });
      id = await ctx.sample(0, { ...SAMPLER_OFF, temperature: 0 });
    }
    const msPerToken = (performance.now() - t0) / nTokens;
    return { model: require('node:path').basename(file), type: 'file', arch: process.arch, variant: native().backendInfo().variant, threads: ctx.info.threads, loadMs: Math.round(loadMs), promptTokens: prompt.length, tokens: nTokens, msPerToken: Number(msPerToken.toFixed(1)), promptMs: Number(promptMs.toFixed(1)) };
  } finally {
    await ctx.dispose();
    model.dispose();
  }
}

(async () => {
  const fileAt = process.argv.indexOf('--gguf');
  if (fileAt >= 0) {
    console.log(JSON.stringify(await measureFile(process.argv[fileAt + 1], Number(process.argv[fileAt + 2] || 4))));
    return;
  }
  for (const [name, type] of CASES) console.log(JSON.stringify(await measure(name, type)));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

/**
 * The sampler's options, declared once. `GenerateOptions` extends `SamplerOptions`;
 * `SAMPLER_DEFAULTS` holds the only defaults, which `resolveSampler` applies before anything
 * reaches the engine layer. The engine layer takes every knob resolved (it has no defaults of
 * its own) and the native sampler receives every field, so the addon's own fallbacks never
 * decide anything.
 */

export interface SamplerOptions {
  /** 0 = greedy (argmax). @default 0.8 */
  temperature?: number;
  /** Keep the K most likely tokens; 0 = off. @default 40 */
  topK?: number;
  /** Nucleus sampling; 1 = off. @default 0.95 */
  topP?: number;
  /** Drop tokens below minP × the top probability; 0 = off. @default 0.05 */
  minP?: number;
  /** Locally typical sampling; 1 = off. @default 1 */
  typicalP?: number;
  /** Divide positive logits (multiply negative ones) of recent tokens; 1 = off. @default 1 */
  repeatPenalty?: number;
  /** Subtracted once from the logit of every recent token. @default 0 */
  presencePenalty?: number;
  /** Subtracted from a recent token's logit per occurrence. @default 0 */
  frequencyPenalty?: number;
  /** How many recent tokens (prompt included) the penalties look at. @default 64 */
  penaltyWindow?: number;
  /** Added to the logits; -Infinity bans a token. */
  logitBias?: ReadonlyMap<number, number> | Record<number, number>;
}

/** Every sampler knob with a value (the logit bias stays optional: none is no bias). */
export type SamplerSettings = Required<Omit<SamplerOptions, 'logitBias'>> & Pick<SamplerOptions, 'logitBias'>;

/** The defaults of SamplerOptions (the `@default`s above; docs/api.md lists the same). */
export const SAMPLER_DEFAULTS: Readonly<Required<Omit<SamplerOptions, 'logitBias'>>> = Object.freeze({
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  typicalP: 1,
  repeatPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  penaltyWindow: 64,
});

/**
 * The value that turns each stage off: plain softmax sampling at temperature 1, no filters,
 * no penalties. Not a default (nothing fills omitted options from it): for engine-level
 * callers (tests, tools) that drive one stage at a time.
 * @internal
 */
export const SAMPLER_OFF: Readonly<Required<Omit<SamplerOptions, 'logitBias'>>> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  typicalP: 1,
  repeatPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  penaltyWindow: 0,
});

/** `options` with every omitted knob set to its default (values are validated by the engine layer). */
export function resolveSampler(options: SamplerOptions): SamplerSettings {
  const s: SamplerSettings = { ...SAMPLER_DEFAULTS };
  for (const key of Object.keys(SAMPLER_DEFAULTS) as Array<keyof typeof SAMPLER_DEFAULTS>) {
    const v = options[key];
    if (v !== undefined && v !== null) s[key] = v;
  }
  if (options.logitBias) s.logitBias = options.logitBias;
  return s;
}

export * from './types.js';
export { GGUF_LIMITS, GGUF_DEFAULT_ALIGNMENT, GgufReader, readGgufHeader, type GgufHeader, type GgufTensorInfo } from './reader.js';
export { GgufWriter, encodeGgufHeader, alignmentOf, kv, type GgufTensorSpec, type GgufLayout } from './writer.js';

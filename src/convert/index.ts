export { convert, openWeights, readVocabulary, type ConvertOptions, type ConvertResult, type TypeFallback, type ProgressEvent } from './convert.js';
export { OUTPUT_TYPES, parseOutputType, chooseTensorType, type OutputTypeName } from './output-types.js';
export { readXglmConfig, validateXglmConfig, type XglmHParams } from './config.js';
export { XGLM_TENSOR_MAP, IGNORED_TENSORS, planXglmTensors } from './xglm-layout.js';
export { sinusoidRows, positionEmbeddingRows } from './sinusoid.js';
export { quantize, type QuantizeOptions, type QuantizeResult } from './quantize.js';
export { writeRandomCheckpoint, resizeSentencePieceModel, XGLM_564M_SHAPE, type XglmShape, type RandomCheckpointOptions } from './random-checkpoint.js';

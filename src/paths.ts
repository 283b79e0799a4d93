/** Where the package's own files are, wherever it is installed. */
import path from 'node:path';

/** The package root (this file lives in src/ or dist/). */
export const packageRoot = path.resolve(__dirname, '..');

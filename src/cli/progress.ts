/**
 * A one-line progress bar on stderr, drawn only on a TTY (never on a pipe or with --json),
 * redrawn at most ~10 times a second.
 */
export interface ProgressBar {
  update(done: number, total: number, detail?: string): void;
  done(message?: string): void;
}

export interface ProgressOptions {
  /** Unit of `done`/`total`: 'bytes' prints MB and a rate. */
  unit?: 'bytes' | 'items';
  stream?: NodeJS.WriteStream;
  enabled?: boolean;
}

const NOOP: ProgressBar = { update() {}, done() {} };

function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
  return `${n} B`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--';
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${s.toFixed(0)}s`;
}

export function progressBar(label: string, options: ProgressOptions = {}): ProgressBar {
  const stream = options.stream ?? process.stderr;
  const enabled = options.enabled ?? Boolean(stream.isTTY);
  if (!enabled) return NOOP;
  const unit = options.unit ?? 'items';
  const start = Date.now();
  let lastDraw = 0;
  let lastLen = 0;

  const draw = (done: number, total: number, detail: string | undefined, force: boolean) => {
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const width = Math.max(10, Math.min(30, (stream.columns ?? 80) - 60));
    const filled = Math.round(frac * width);
    const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? (frac >= 1 ? '=' : '>') : '') + ' '.repeat(width - filled);
    const elapsed = (now - start) / 1000;
    const counts = unit === 'bytes' ? `${formatBytes(done)}/${formatBytes(total)}` : `${done}/${total}`;
    const rate = unit === 'bytes' && elapsed > 0 ? ` ${formatBytes(done / elapsed)}/s` : '';
    const eta = frac > 0 && frac < 1 ? ` ETA ${formatSeconds((elapsed / frac) * (1 - frac))}` : '';
    let line = `${label} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${counts}${rate}${eta}${detail ? ` ${detail}` : ''}`;
    const cols = stream.columns ?? 120;
    if (line.length > cols - 1) line = line.slice(0, cols - 1);
    stream.write(`\r${line}${' '.repeat(Math.max(0, lastLen - line.length))}`);
    lastLen = line.length;
  };

  return {
    update: (done, total, detail) => draw(done, total, detail, false),
    done: (message) => {
      stream.write(`\r${' '.repeat(lastLen)}\r`);
      if (message) stream.write(`${label}: ${message} (${formatSeconds((Date.now() - start) / 1000)})\n`);
    },
  };
}

/**
 * A minimal, read-only zip reader for `torch.save` archives (pytorch_model.bin): the central
 * directory (zip64 too), stored entries read in place by offset, deflated ones inflated with
 * node:zlib up to a size limit. Nothing is ever extracted to disk; still, an archive with an
 * entry name that could escape a folder ('../', absolute, drive letters, backslashes) is refused
 * as a whole, because no legitimate checkpoint contains one.
 *
 *   local header   PK\3\4 ... u16 name length @26, u16 extra length @28, name, extra, data
 *   central entry  PK\1\2 ... u16 method @10, u32 crc @16, u32 csize @20, u32 usize @24,
 *                  u16 name @28, u16 extra @30, u16 comment @32, u32 local offset @42, name, extra, comment
 *   end record     PK\5\6 ... u16 entries @10, u32 dir size @12, u32 dir offset @16, u16 comment @20
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { XglmError } from '../errors.js';

/** Limits for hostile archives. */
export const ZIP_LIMITS = {
  maxEntries: 1 << 20,
  maxCentralDirectoryBytes: 256 * 1024 * 1024,
  /** Largest deflated entry inflated into memory (torch stores tensor data uncompressed). */
  maxInflatedBytes: 512 * 1024 * 1024,
} as const;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_END = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_END = 0x06064b50;
const METHOD_STORED = 0;
const METHOD_DEFLATE = 8;

export interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  localHeaderOffset: number;
}

function invalid(file: string, message: string): XglmError {
  return new XglmError('ERR_XGLM_CONVERT', `${file}: not a readable zip archive: ${message}`, {
    hint: 'the checkpoint file is damaged or incomplete; download it again',
  });
}

/** True for names that could point outside the folder they would be extracted to. */
export function isUnsafeEntryName(name: string): boolean {
  if (name.length === 0 || name.includes('\0') || name.includes('\\')) return true;
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return true;
  return name.split('/').some((part) => part === '..');
}

export class ZipReader {
  readonly entries: ZipEntry[];
  private readonly byName: Map<string, ZipEntry>;
  private fd: number | undefined;
  readonly fileSize: number;

  private constructor(
    readonly file: string,
    fd: number,
  ) {
    this.fd = fd;
    this.fileSize = fs.fstatSync(fd).size;
    this.entries = this.readCentralDirectory();
    this.byName = new Map();
    for (const e of this.entries) {
      if (isUnsafeEntryName(e.name)) {
        throw new XglmError('ERR_XGLM_UNSAFE_ARCHIVE', `${file}: refusing archive with unsafe entry name ${JSON.stringify(e.name)}`, {
          hint: 'a PyTorch checkpoint never contains such names; the file may be malicious',
        });
      }
      if (this.byName.has(e.name)) {
        throw new XglmError('ERR_XGLM_UNSAFE_ARCHIVE', `${file}: refusing archive with two entries named ${JSON.stringify(e.name)}`);
      }
      this.byName.set(e.name, e);
    }
  }

  /** @throws XglmError ERR_XGLM_CONVERT (damaged) or ERR_XGLM_UNSAFE_ARCHIVE. */
  static open(file: string): ZipReader {
    const fd = fs.openSync(file, 'r');
    try {
      return new ZipReader(file, fd);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** The open file descriptor, for reading stored entries in place. */
  get descriptor(): number {
    if (this.fd === undefined) throw new XglmError('ERR_XGLM_DISPOSED', `${this.file} is closed`);
    return this.fd;
  }

  entry(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** Reads `length` bytes at `position`, all of them. */
  readAt(position: number, length: number, into?: Buffer): Buffer {
    if (this.fd === undefined) throw new XglmError('ERR_XGLM_DISPOSED', `${this.file} is closed`);
    if (position < 0 || length < 0 || position + length > this.fileSize) {
      throw invalid(this.file, `read of ${length} bytes at ${position} is outside the file`);
    }
    const out = into ?? Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const got = fs.readSync(this.fd, out, done, length - done, position + done);
      if (got === 0) throw invalid(this.file, 'unexpected end of file');
      done += got;
    }
    return out;
  }

  private readCentralDirectory(): ZipEntry[] {
    const tailLength = Math.min(this.fileSize, 22 + 0xffff);
    const tail = this.readAt(this.fileSize - tailLength, tailLength);
    let end = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === SIG_END && i + 22 + tail.readUInt16LE(i + 20) === tail.length) {
        end = i;
        break;
      }
    }
    if (end < 0) throw invalid(this.file, 'no end-of-central-directory record');
    let count = tail.readUInt16LE(end + 10);
    let dirSize = tail.readUInt32LE(end + 12);
    let dirOffset = tail.readUInt32LE(end + 16);
    if (count === 0xffff || dirSize === 0xffffffff || dirOffset === 0xffffffff) {
      const locatorAt = this.fileSize - tailLength + end - 20;
      if (locatorAt < 0) throw invalid(this.file, 'zip64 locator missing');
      const locator = this.readAt(locatorAt, 20);
      if (locator.readUInt32LE(0) !== SIG_ZIP64_LOCATOR) throw invalid(this.file, 'zip64 locator missing');
      const z64 = this.readAt(this.safe(locator.readBigUInt64LE(8)), 56);
      if (z64.readUInt32LE(0) !== SIG_ZIP64_END) throw invalid(this.file, 'zip64 end record missing');
      count = this.safe(z64.readBigUInt64LE(32));
      dirSize = this.safe(z64.readBigUInt64LE(40));
      dirOffset = this.safe(z64.readBigUInt64LE(48));
    }
    if (count > ZIP_LIMITS.maxEntries || dirSize > ZIP_LIMITS.maxCentralDirectoryBytes || count * 46 > dirSize) {
      throw invalid(this.file, `central directory of ${count} entries in ${dirSize} bytes is implausible`);
    }
    const dir = this.readAt(dirOffset, dirSize);
    const entries: ZipEntry[] = [];
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > dir.length || dir.readUInt32LE(p) !== SIG_CENTRAL) throw invalid(this.file, `central directory entry ${i} is damaged`);
      const flags = dir.readUInt16LE(p + 8);
      const method = dir.readUInt16LE(p + 10);
      const crc32 = dir.readUInt32LE(p + 16);
      let compressedSize = dir.readUInt32LE(p + 20);
      let uncompressedSize = dir.readUInt32LE(p + 24);
      const nameLength = dir.readUInt16LE(p + 28);
      const extraLength = dir.readUInt16LE(p + 30);
      const commentLength = dir.readUInt16LE(p + 32);
      let localHeaderOffset = dir.readUInt32LE(p + 42);
      const nameEnd = p + 46 + nameLength;
      if (nameEnd + extraLength + commentLength > dir.length) throw invalid(this.file, `central directory entry ${i} runs past the directory`);
      const name = dir.toString('utf8', p + 46, nameEnd);
      // zip64 extra field (id 1): the 64-bit values of whichever 32-bit fields are saturated, in this order.
      for (let x = nameEnd; x + 4 <= nameEnd + extraLength; ) {
        const id = dir.readUInt16LE(x);
        const size = dir.readUInt16LE(x + 2);
        if (id === 1) {
          let q = x + 4;
          const next = (): number => {
            if (q + 8 > x + 4 + size) throw invalid(this.file, `zip64 field of ${name} is too short`);
            const v = this.safe(dir.readBigUInt64LE(q));
            q += 8;
            return v;
          };
          if (uncompressedSize === 0xffffffff) uncompressedSize = next();
          if (compressedSize === 0xffffffff) compressedSize = next();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
        }
        x += 4 + size;
      }
      if (flags & 1) throw new XglmError('ERR_XGLM_UNSUPPORTED', `${this.file}: entry ${name} is encrypted`);
      entries.push({ name, method, compressedSize, uncompressedSize, crc32, localHeaderOffset });
      p = nameEnd + extraLength + commentLength;
    }
    return entries;
  }

  private safe(v: bigint): number {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(this.file, 'a zip64 size or offset is too large');
    return Number(v);
  }

  /** File offset of an entry's (possibly compressed) data. */
  dataOffset(entry: ZipEntry): number {
    const local = this.readAt(entry.localHeaderOffset, 30);
    if (local.readUInt32LE(0) !== SIG_LOCAL) throw invalid(this.file, `local header of ${entry.name} is missing`);
    const start = entry.localHeaderOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (start + entry.compressedSize > this.fileSize) throw invalid(this.file, `data of ${entry.name} runs past the end of the file`);
    return start;
  }

  /** True when the entry can be read in place (not compressed). */
  isStored(entry: ZipEntry): boolean {
    return entry.method === METHOD_STORED && entry.compressedSize === entry.uncompressedSize;
  }

  /** The whole (inflated) content of an entry, checked against its CRC-32. */
  readEntry(entry: ZipEntry, maxBytes: number = ZIP_LIMITS.maxInflatedBytes): Buffer {
    if (entry.uncompressedSize > maxBytes) {
      throw new XglmError('ERR_XGLM_UNSUPPORTED', `${this.file}: entry ${entry.name} is ${entry.uncompressedSize} bytes, more than ${maxBytes} allowed here`);
    }
    const start = this.dataOffset(entry);
    let data: Buffer;
    if (entry.method === METHOD_STORED) {
      if (entry.compressedSize !== entry.uncompressedSize) throw invalid(this.file, `stored entry ${entry.name} has two sizes`);
      data = this.readAt(start, entry.compressedSize);
    } else if (entry.method === METHOD_DEFLATE) {
      if (entry.compressedSize > maxBytes) throw invalid(this.file, `entry ${entry.name} is too large`);
      try {
        data = zlib.inflateRawSync(this.readAt(start, entry.compressedSize), { maxOutputLength: Math.max(1, entry.uncompressedSize) });
      } catch (cause) {
        throw invalid(this.file, `entry ${entry.name} does not inflate: ${(cause as Error).message}`);
      }
      if (data.length !== entry.uncompressedSize) throw invalid(this.file, `entry ${entry.name} inflates to the wrong size`);
    } else {
      throw new XglmError('ERR_XGLM_UNSUPPORTED', `${this.file}: entry ${entry.name} uses zip method ${entry.method}`, {
        hint: 'only stored and deflated entries are supported; re-save the checkpoint with torch.save',
      });
    }
    if (zlib.crc32(data) !== entry.crc32) throw invalid(this.file, `entry ${entry.name} fails its CRC-32 check`);
    return data;
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

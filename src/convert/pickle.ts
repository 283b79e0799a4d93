/**
 * A restricted unpickler for PyTorch state dicts (the `data.pkl` inside pytorch_model.bin).
 *
 * Python's pickle is a small stack machine whose GLOBAL/REDUCE opcodes import and call arbitrary
 * functions. This interpreter executes nothing: it knows exactly the few names a state dict uses,
 * as data, and refuses every other global, every other call and every opcode that constructs
 * objects (INST, OBJ, NEWOBJ, EXT*) with ERR_XGLM_UNSAFE_PICKLE, before looking further.
 *
 * A state dict pickles as
 *   OrderedDict() ; then SETITEMS of  name -> _rebuild_tensor_v2(storage, offset, size, stride,
 *                                              requires_grad, OrderedDict() [, metadata])
 * where `storage` is a persistent id ('storage', torch.<Type>Storage, key, location, numel) that
 * names the archive entry `<prefix>/data/<key>` holding the raw little-endian elements.
 */
import { XglmError } from '../errors.js';

/** Element types of torch storages; only the float ones can be converted. */
export type TorchDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const TORCH_DTYPE_BYTES: Readonly<Record<TorchDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** The only globals a state dict may name, and what each one is to us. */
const ALLOWED_GLOBALS: ReadonlyMap<string, GlobalRef['role']> = new Map([
  ['collections.OrderedDict', 'ordered_dict'],
  ['torch._utils._rebuild_tensor_v2', 'rebuild_tensor'],
  ['torch._utils._rebuild_parameter', 'rebuild_parameter'],
  ['torch.DoubleStorage', 'storage_type'],
  ['torch.FloatStorage', 'storage_type'],
  ['torch.HalfStorage', 'storage_type'],
  ['torch.BFloat16Storage', 'storage_type'],
  ['torch.LongStorage', 'storage_type'],
  ['torch.IntStorage', 'storage_type'],
  ['torch.ShortStorage', 'storage_type'],
  ['torch.CharStorage', 'storage_type'],
  ['torch.ByteStorage', 'storage_type'],
  ['torch.BoolStorage', 'storage_type'],
]);

const STORAGE_DTYPE: Readonly<Record<string, TorchDtype>> = {
  DoubleStorage: 'F64',
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

export const PICKLE_LIMITS = {
  /** Values on the stack (a state dict of a 7.5B model needs a few thousand). */
  maxStack: 1 << 20,
  /** Items in one list or dict. */
  maxContainerItems: 1 << 20,
  maxMemo: 1 << 20,
  /** Longest string or bytes object. */
  maxStringBytes: 1 << 20,
  /** Most dimensions of a tensor. */
  maxDims: 8,
} as const;

export interface GlobalRef {
  kind: 'global';
  qualifiedName: string;
  role: 'ordered_dict' | 'rebuild_tensor' | 'rebuild_parameter' | 'storage_type';
}

export interface StorageRef {
  kind: 'storage';
  dtype: TorchDtype;
  /** Archive entry `<prefix>/data/<key>`. */
  key: string;
  location: string;
  /** Elements in the storage. */
  numel: number;
}

export interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  /** In elements. */
  storageOffset: number;
  shape: number[];
  /** In elements, one per dimension. */
  stride: number[];
}

export interface PyTuple {
  kind: 'tuple';
  items: PyValue[];
}
export interface PyList {
  kind: 'list';
  items: PyValue[];
}
export interface PyDict {
  kind: 'dict';
  ordered: boolean;
  entries: Map<string | number, PyValue>;
}

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyTuple | PyList | PyDict | GlobalRef | StorageRef | TensorRef;

const MARK: unique symbol = Symbol('mark');
type StackItem = PyValue | typeof MARK;

function unsafe(message: string): XglmError {
  return new XglmError('ERR_XGLM_UNSAFE_PICKLE', `refusing pickle: ${message}`, {
    hint: 'this file is not a plain PyTorch state dict; convert from model.safetensors, or re-save the weights with torch.save(model.state_dict())',
  });
}

function damaged(message: string): XglmError {
  return new XglmError('ERR_XGLM_CONVERT', `damaged pickle: ${message}`, { hint: 'download the checkpoint again' });
}

function describe(v: StackItem): string {
  if (v === MARK) return 'a mark';
  if (v === null) return 'None';
  if (typeof v !== 'object') return typeof v;
  if (v instanceof Uint8Array) return 'bytes';
  if (v.kind === 'global') return v.qualifiedName;
  return v.kind;
}

// Opcodes we accept, by byte. Everything else is refused.
const OP = {
  PROTO: 0x80,
  FRAME: 0x95,
  STOP: 0x2e, // .
  MARK: 0x28, // (
  POP: 0x30, // 0
  POP_MARK: 0x31, // 1
  DUP: 0x32, // 2
  NONE: 0x4e, // N
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  BININT: 0x4a, // J
  BININT1: 0x4b, // K
  BININT2: 0x4d, // M
  LONG1: 0x8a,
  BINFLOAT: 0x47, // G
  BINUNICODE: 0x58, // X
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINSTRING: 0x54, // T
  SHORT_BINSTRING: 0x55, // U
  BINBYTES: 0x42, // B
  SHORT_BINBYTES: 0x43, // C
  EMPTY_TUPLE: 0x29, // )
  TUPLE: 0x74, // t
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  EMPTY_LIST: 0x5d, // ]
  LIST: 0x6c, // l
  APPEND: 0x61, // a
  APPENDS: 0x65, // e
  EMPTY_DICT: 0x7d, // }
  DICT: 0x64, // d
  SETITEM: 0x73, // s
  SETITEMS: 0x75, // u
  BINPUT: 0x71, // q
  LONG_BINPUT: 0x72, // r
  MEMOIZE: 0x94,
  BINGET: 0x68, // h
  LONG_BINGET: 0x6a, // j
  GLOBAL: 0x63, // c
  STACK_GLOBAL: 0x93,
  BINPERSID: 0x51, // Q
  REDUCE: 0x52, // R
  BUILD: 0x62, // b
} as const;

/** Opcodes that exist in pickle but are refused, named for the error message. */
const REFUSED_OPCODES: ReadonlyMap<number, string> = new Map([
  [0x69, 'INST'],
  [0x6f, 'OBJ'],
  [0x81, 'NEWOBJ'],
  [0x92, 'NEWOBJ_EX'],
  [0x82, 'EXT1'],
  [0x83, 'EXT2'],
  [0x84, 'EXT4'],
  [0x50, 'PERSID'],
  [0x70, 'PUT'],
  [0x67, 'GET'],
  [0x49, 'INT'],
  [0x4c, 'LONG'],
  [0x8b, 'LONG4'],
  [0x46, 'FLOAT'],
  [0x53, 'STRING'],
  [0x56, 'UNICODE'],
  [0x8e, 'BINBYTES8'],
  [0x96, 'BYTEARRAY8'],
  [0x97, 'NEXT_BUFFER'],
  [0x98, 'READONLY_BUFFER'],
  [0x8f, 'EMPTY_SET'],
  [0x90, 'ADDITEMS'],
  [0x91, 'FROZENSET'],
]);

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: true });

function asInt(v: PyValue, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  throw unsafe(`${what} must be an integer, got ${describe(v)}`);
}

function asIntTuple(v: PyValue, what: string): number[] {
  if (v === null || typeof v !== 'object' || !('kind' in v) || v.kind !== 'tuple') throw unsafe(`${what} must be a tuple, got ${describe(v)}`);
  if (v.items.length > PICKLE_LIMITS.maxDims) throw unsafe(`${what} has ${v.items.length} dimensions`);
  return v.items.map((x, i) => asInt(x, `${what}[${i}]`));
}

function isDict(v: PyValue): v is PyDict {
  return v !== null && typeof v === 'object' && 'kind' in v && v.kind === 'dict';
}

function isEmptyDict(v: PyValue): boolean {
  return isDict(v) && v.entries.size === 0;
}

/** Calls one of the allowed callables with data-only arguments; anything else is refused. */
function reduce(callable: StackItem, args: StackItem): PyValue {
  if (callable === MARK || args === MARK) throw damaged('REDUCE on a mark');
  if (callable === null || typeof callable !== 'object' || !('kind' in callable) || callable.kind !== 'global') {
    throw unsafe(`REDUCE calls ${describe(callable)}, only allowed globals may be called`);
  }
  if (args === null || typeof args !== 'object' || !('kind' in args) || args.kind !== 'tuple') {
    throw unsafe(`REDUCE arguments must be a tuple, got ${describe(args)}`);
  }
  const a = args.items;
  switch (callable.role) {
    case 'ordered_dict':
      if (a.length !== 0) throw unsafe('OrderedDict(...) with arguments');
      return { kind: 'dict', ordered: true, entries: new Map() };
    case 'rebuild_tensor': {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.length !== 6 && a.length !== 7) throw unsafe(`_rebuild_tensor_v2 with ${a.length} arguments`);
      const storage = a[0]!;
      if (storage === null || typeof storage !== 'object' || !('kind' in storage) || storage.kind !== 'storage') {
        throw unsafe(`_rebuild_tensor_v2 of ${describe(storage)}, not a storage`);
      }
      const storageOffset = asInt(a[1]!, 'storage_offset');
      const shape = asIntTuple(a[2]!, 'size');
      const stride = asIntTuple(a[3]!, 'stride');
      if (typeof a[4] !== 'boolean') throw unsafe('requires_grad must be a bool');
      if (!isEmptyDict(a[5]!)) throw unsafe('tensor with backward hooks');
      if (a.length === 7 && a[6] !== null && !isDict(a[6]!)) throw unsafe('tensor metadata must be a dict');
      if (shape.length !== stride.length) throw unsafe('size and stride differ in length');
      if (storageOffset < 0 || shape.some((d) => d < 0) || stride.some((s) => s < 0)) throw unsafe('negative size, stride or offset');
      return { kind: 'tensor', storage, storageOffset, shape, stride };
    }
    case 'rebuild_parameter': {
      // (data, requires_grad, backward_hooks)
      if (a.length !== 3) throw unsafe(`_rebuild_parameter with ${a.length} arguments`);
      const data = a[0]!;
      if (data === null || typeof data !== 'object' || !('kind' in data) || data.kind !== 'tensor') throw unsafe('_rebuild_parameter of a non-tensor');
      if (typeof a[1] !== 'boolean' || !isEmptyDict(a[2]!)) throw unsafe('_rebuild_parameter with unexpected arguments');
      return data;
    }
    default:
      throw unsafe(`REDUCE calls ${callable.qualifiedName}, which is not callable here`);
  }
}

/** PyTorch's persistent id for a storage: ('storage', torch.<Type>Storage, key, location, numel). */
function persistentLoad(pid: StackItem, storages: Map<string, StorageRef>): StorageRef {
  if (pid === null || pid === MARK || typeof pid !== 'object' || !('kind' in pid) || pid.kind !== 'tuple') {
    throw unsafe(`persistent id ${describe(pid)} is not a storage tuple`);
  }
  const [tag, type, key, location, numel] = pid.items;
  if (pid.items.length !== 5 || tag !== 'storage') throw unsafe('persistent id is not a storage reference');
  if (type === null || typeof type !== 'object' || !('kind' in type) || type.kind !== 'global' || type.role !== 'storage_type') {
    throw unsafe(`storage type ${describe(type ?? null)} is not a torch storage class`);
  }
  if (typeof key !== 'string' || !/^[0-9A-Za-z_]{1,64}$/.test(key)) throw unsafe('storage key must be a short alphanumeric name');
  if (typeof location !== 'string') throw unsafe('storage location must be a string');
  const n = asInt(numel ?? null, 'storage size');
  const dtype = STORAGE_DTYPE[type.qualifiedName.slice('torch.'.length)]!;
  const known = storages.get(key);
  if (known) {
    if (known.dtype !== dtype || known.numel !== n) throw unsafe(`storage ${key} is described twice differently`);
    return known;
  }
  const ref: StorageRef = { kind: 'storage', dtype, key, location, numel: n };
  storages.set(key, ref);
  return ref;
}

function resolveGlobal(module: string, name: string): GlobalRef {
  const qualifiedName = `${module}.${name}`;
  const role = ALLOWED_GLOBALS.get(qualifiedName);
  if (!role) throw unsafe(`global ${qualifiedName} is not allowed (only OrderedDict, torch._utils._rebuild_tensor_v2 and torch storage classes are)`);
  return { kind: 'global', qualifiedName, role };
}

/**
 * Interprets a pickle and returns its top value, using only the allowed globals.
 * @throws XglmError ERR_XGLM_UNSAFE_PICKLE for anything outside a state dict's vocabulary,
 *   ERR_XGLM_CONVERT for a truncated or inconsistent stream.
 */
export function unpickle(data: Uint8Array): PyValue {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, PyValue>();
  const storages = new Map<string, StorageRef>();
  let pos = 0;

  const need = (n: number): number => {
    if (pos + n > data.length) throw damaged('truncated');
    const at = pos;
    pos += n;
    return at;
  };
  const push = (v: StackItem): void => {
    if (stack.length >= PICKLE_LIMITS.maxStack) throw unsafe(`more than ${PICKLE_LIMITS.maxStack} values on the stack`);
    stack.push(v);
  };
  const pop = (): StackItem => {
    if (stack.length === 0) throw damaged('stack underflow');
    return stack.pop()!;
  };
  const popValue = (): PyValue => {
    const v = pop();
    if (v === MARK) throw damaged('unexpected mark');
    return v;
  };
  const top = (): StackItem => {
    if (stack.length === 0) throw damaged('stack underflow');
    return stack[stack.length - 1]!;
  };
  const popToMark = (): PyValue[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) throw damaged('no mark');
    const items = stack.splice(at + 1) as PyValue[];
    stack.pop();
    return items;
  };
  const text = (length: number, decoder: typeof utf8): string => {
    if (length > PICKLE_LIMITS.maxStringBytes) throw unsafe(`string of ${length} bytes`);
    const at = need(length);
    try {
      return decoder.decode(data.subarray(at, at + length));
    } catch {
      throw damaged('string is not valid UTF-8');
    }
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 256) throw damaged('unterminated GLOBAL name');
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const memoPut = (index: number): void => {
    if (memo.size >= PICKLE_LIMITS.maxMemo && !memo.has(index)) throw unsafe('memo too large');
    const v = top();
    if (v === MARK) throw damaged('memoizing a mark');
    memo.set(index, v);
  };
  const memoGet = (index: number): void => {
    if (!memo.has(index)) throw damaged(`memo ${index} is empty`);
    push(memo.get(index)!);
  };
  const setItems = (dict: StackItem, items: PyValue[]): void => {
    if (!isDict(dict as PyValue)) throw unsafe(`SETITEM on ${describe(dict)}`);
    if (items.length % 2 !== 0) throw damaged('odd number of dict items');
    if ((dict as PyDict).entries.size + items.length / 2 > PICKLE_LIMITS.maxContainerItems) throw unsafe('dict too large');
    for (let i = 0; i < items.length; i += 2) {
      const key = items[i]!;
      if (typeof key !== 'string' && typeof key !== 'number') throw unsafe(`dict key of type ${describe(key)}`);
      (dict as PyDict).entries.set(key, items[i + 1]!);
    }
  };
  const appendItems = (list: StackItem, items: PyValue[]): void => {
    if (list === null || list === MARK || typeof list !== 'object' || !('kind' in list) || list.kind !== 'list') {
      throw unsafe(`APPEND on ${describe(list)}`);
    }
    if (list.items.length + items.length > PICKLE_LIMITS.maxContainerItems) throw unsafe('list too large');
    for (const item of items) list.items.push(item);
  };

  for (;;) {
    const op = data[need(1)]!;
    switch (op) {
      case OP.PROTO: {
        const version = data[need(1)]!;
        if (version > 5) throw damaged(`pickle protocol ${version}`);
        break;
      }
      case OP.FRAME:
        need(8); // frame length: a hint for buffered readers; we have the whole stream
        break;
      case OP.STOP: {
        const result = popValue();
        if (stack.length !== 0) throw damaged('values left on the stack at STOP');
        return result;
      }
      case OP.MARK:
        push(MARK);
        break;
      case OP.POP:
        pop();
        break;
      case OP.POP_MARK:
        popToMark();
        break;
      case OP.DUP:
        push(top());
        break;
      case OP.NONE:
        push(null);
        break;
      case OP.NEWTRUE:
        push(true);
        break;
      case OP.NEWFALSE:
        push(false);
        break;
      case OP.BININT:
        push(view.getInt32(need(4), true));
        break;
      case OP.BININT1:
        push(data[need(1)]!);
        break;
      case OP.BININT2:
        push(view.getUint16(need(2), true));
        break;
      case OP.LONG1: {
        const n = data[need(1)]!;
        if (n > 8) throw unsafe(`integer of ${n} bytes`);
        const at = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[at + i]!);
        if (n > 0 && data[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case OP.BINFLOAT:
        push(view.getFloat64(need(8), false));
        break;
      case OP.BINUNICODE:
        push(text(view.getUint32(need(4), true), utf8));
        break;
      case OP.SHORT_BINUNICODE:
        push(text(data[need(1)]!, utf8));
        break;
      case OP.BINUNICODE8: {
        const n = view.getBigUint64(need(8), true);
        if (n > BigInt(PICKLE_LIMITS.maxStringBytes)) throw unsafe(`string of ${n} bytes`);
        push(text(Number(n), utf8));
        break;
      }
      case OP.BINSTRING:
        push(text(view.getUint32(need(4), true), latin1));
        break;
      case OP.SHORT_BINSTRING:
        push(text(data[need(1)]!, latin1));
        break;
      case OP.BINBYTES:
      case OP.SHORT_BINBYTES: {
        const n = op === OP.BINBYTES ? view.getUint32(need(4), true) : data[need(1)]!;
        if (n > PICKLE_LIMITS.maxStringBytes) throw unsafe(`bytes of ${n} bytes`);
        const at = need(n);
        push(data.slice(at, at + n));
        break;
      }
      case OP.EMPTY_TUPLE:
        push({ kind: 'tuple', items: [] });
        break;
      case OP.TUPLE:
        push({ kind: 'tuple', items: popToMark() });
        break;
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const n = op - OP.TUPLE1 + 1;
        const items: PyValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(popValue());
        push({ kind: 'tuple', items });
        break;
      }
      case OP.EMPTY_LIST:
        push({ kind: 'list', items: [] });
        break;
      case OP.LIST:
        push({ kind: 'list', items: popToMark() });
        break;
      case OP.APPEND: {
        const v = popValue();
        appendItems(top(), [v]);
        break;
      }
      case OP.APPENDS: {
        const items = popToMark();
        appendItems(top(), items);
        break;
      }
      case OP.EMPTY_DICT:
        push({ kind: 'dict', ordered: false, entries: new Map() });
        break;
      case OP.DICT: {
        const items = popToMark();
        const dict: PyDict = { kind: 'dict', ordered: false, entries: new Map() };
        setItems(dict, items);
        push(dict);
        break;
      }
      case OP.SETITEM: {
        const value = popValue();
        const key = popValue();
        setItems(top(), [key, value]);
        break;
      }
      case OP.SETITEMS: {
        const items = popToMark();
        setItems(top(), items);
        break;
      }
      case OP.BINPUT:
        memoPut(data[need(1)]!);
        break;
      case OP.LONG_BINPUT:
        memoPut(view.getUint32(need(4), true));
        break;
      case OP.MEMOIZE:
        memoPut(memo.size);
        break;
      case OP.BINGET:
        memoGet(data[need(1)]!);
        break;
      case OP.LONG_BINGET:
        memoGet(view.getUint32(need(4), true));
        break;
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        push(resolveGlobal(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = popValue();
        const module = popValue();
        if (typeof module !== 'string' || typeof name !== 'string') throw unsafe('STACK_GLOBAL with non-string names');
        push(resolveGlobal(module, name));
        break;
      }
      case OP.BINPERSID:
        push(persistentLoad(pop(), storages));
        break;
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        push(reduce(callable, args));
        break;
      }
      case OP.BUILD: {
        // OrderedDict state (e.g. {'_metadata': ...}) is set with BUILD; it carries no tensors.
        const state = popValue();
        const target = top();
        if (target === MARK || !isDict(target) || (state !== null && !isDict(state))) {
          throw unsafe(`BUILD on ${describe(target)}`);
        }
        break;
      }
      default: {
        const name = REFUSED_OPCODES.get(op);
        throw name ? unsafe(`opcode ${name} is not allowed`) : damaged(`unknown opcode 0x${op.toString(16)} at byte ${pos - 1}`);
      }
    }
  }
}

/**
 * Unpickles a state dict: an (Ordered)dict of parameter name -> tensor.
 * @throws XglmError ERR_XGLM_UNSAFE_PICKLE / ERR_XGLM_CONVERT.
 */
export function unpickleStateDict(data: Uint8Array): Map<string, TensorRef> {
  const root = unpickle(data);
  if (!isDict(root)) throw unsafe(`top-level value is ${describe(root)}, not a state dict`);
  const out = new Map<string, TensorRef>();
  for (const [name, value] of root.entries) {
    if (typeof name !== 'string') throw unsafe('state dict key is not a string');
    if (value === null || typeof value !== 'object' || !('kind' in value) || value.kind !== 'tensor') {
      throw new XglmError('ERR_XGLM_CONVERT', `state dict entry ${name} is ${describe(value)}, not a tensor`, {
        hint: 'pass a checkpoint saved with torch.save(model.state_dict())',
      });
    }
    out.set(name, value);
  }
  return out;
}

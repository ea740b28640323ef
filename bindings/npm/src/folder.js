// A model given as the files of its directory, not packed: a Hugging Face reward model's
// folder (config.json, tokenizer files, safetensors weights, sharded or not) or a dmoerm bundle
// directory, from a page's folder (a FileList from <input type="file" webkitdirectory>, or Files
// dropped on it), from a base URL that serves those files, or (Node) from a directory path.
// The rules and errors are the native loader's, in Rust (`bundle::Folder`); this file only
// lists and reads the files, in two steps so that nothing large is read before the folder is
// known to load: first the text files and the safetensors headers (wasm `folderPlan` checks
// them and names the weight files the model reads), then those weight files whole, each read
// once into parts of at most 1 GiB that wasm reads one tensor at a time.

import { download } from './download.js';
import { bytesAt, length, partBytes } from './parts.js';
import { platform } from './platform.js';

// the files read whole in the first step (configs, tokenizers, templates, indexes)
const TEXT = /\.(json|jinja|txt)$/;
const SAFETENSORS = /\.safetensors$/;
// safetensors' own limit on a header
const MAX_HEADER = 100_000_000;

/**
 * The folder `source` names, or null: `{name, entries: [{path, size, slice(start, end), read()}]}`,
 * where `slice` resolves to those bytes and `read` to the whole file in parts.
 */
export async function folderOf(source, options) {
  if (isFiles(source)) return filesFolder([...source]);
  const text = typeof source === 'string' || source instanceof URL ? String(source) : null;
  if (text === null || !text.endsWith('/')) return null;
  if (platform.directory && !/^https?:/.test(text)) return platform.directory(text);
  return urlFolder(new URL(text, globalThis.location?.href), options);
}

function isFiles(source) {
  if (typeof FileList !== 'undefined' && source instanceof FileList) return true;
  return Array.isArray(source) && source.length > 0 && source.every((f) => typeof Blob !== 'undefined' && f instanceof Blob && typeof f.name === 'string');
}

// Files a page was given: their paths in the folder are `webkitRelativePath` without the
// folder's own name (what <input webkitdirectory> gives), or their names.
function filesFolder(files) {
  const paths = files.map((f) => f.webkitRelativePath || f.name);
  const top = paths[0].includes('/') ? paths[0].split('/')[0] : 'folder';
  const inside = (p) => (p.startsWith(`${top}/`) ? p.slice(top.length + 1) : p);
  return {
    name: top,
    entries: files.map((file, i) => ({
      path: inside(paths[i]),
      size: file.size,
      slice: async (start, end) => new Uint8Array(await file.slice(start, end).arrayBuffer()),
      read: async () => {
        const parts = [];
        for (let at = 0; at < file.size || at === 0; at += partBytes) {
          parts.push(new Uint8Array(await file.slice(at, Math.min(file.size, at + partBytes)).arrayBuffer()));
        }
        return parts;
      },
    })),
  };
}

// A Hugging Face model's files at a base URL. No server lists a folder: the files
// transformers writes are asked for by name, and the shards by what the index names. A file
// the server does not have (404) is not in the folder.
async function urlFolder(base, { onProgress, cache, version }) {
  const names = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'model.safetensors.index.json'];
  const got = new Map();
  const fetchFile = async (path) => {
    try {
      got.set(path, await download(new URL(path, base), { onProgress, cache, version }));
    } catch (e) {
      if (!/HTTP 404/.test(e.message)) throw e;
    }
  };
  for (const path of names) await fetchFile(path);
  const index = got.get('model.safetensors.index.json');
  let weights = ['model.safetensors'];
  if (index) {
    const text = new TextDecoder().decode(bytesAt(index, 0, length(index)));
    // a bad index is the Rust side's to report; its shards are whatever it names
    try {
      weights = [...new Set(Object.values(JSON.parse(text).weight_map ?? {}))].filter((p) => typeof p === 'string' && !p.includes('..'));
    } catch {
      weights = [];
    }
  }
  for (const path of weights) await fetchFile(path);
  return {
    name: base.href,
    entries: [...got].map(([path, parts]) => ({
      path,
      size: length(parts),
      slice: async (start, end) => bytesAt(parts, start, end),
      read: async () => parts,
    })),
  };
}

/**
 * Reads `folder` for `target`: `target.plan(paths, sizes, files, name, quantize)` resolves to the
 * paths of the safetensors files to read whole (and throws what is wrong with the folder), then
 * `target.loadFiles(paths, sizes, files, name, quantize)` loads them; `files[i]` are the parts
 * held of `paths[i]`; `quantize` ('int8', 'q4' or undefined) as `RewardModel.load` takes it.
 */
export async function loadFolder(folder, target, onProgress, quantize) {
  const paths = folder.entries.map((e) => e.path);
  const sizes = folder.entries.map((e) => e.size);
  const files = [];
  for (const e of folder.entries) {
    if (TEXT.test(e.path)) files.push(await e.read());
    else if (SAFETENSORS.test(e.path) && e.size >= 8) files.push([await header(e)]);
    else files.push([]); // listed (a .bin is named in the error), never read
  }
  const needed = new Set(await target.plan(paths, sizes, files, folder.name, quantize));
  const total = folder.entries.filter((e) => needed.has(e.path)).reduce((sum, e) => sum + e.size, 0);
  let loaded = 0;
  for (const [i, e] of folder.entries.entries()) {
    if (!needed.has(e.path)) continue;
    try {
      files[i] = await e.read();
    } catch (err) {
      throw new Error(`dmoerm: reading ${e.path} of ${folder.name} failed: ${err.message}`);
    }
    loaded += e.size;
    onProgress?.({ status: 'download', loaded, total, fraction: total ? loaded / total : 1, cached: false });
  }
  onProgress?.({ status: 'load', bytes: loaded });
  return target.loadFiles(paths, sizes, files, folder.name, quantize);
}

// A safetensors file's first bytes: its header's length (8 bytes), then the header.
async function header(entry) {
  const first = await entry.slice(0, 8);
  const n = Number(new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true));
  return entry.slice(0, 8 + Math.min(n, MAX_HEADER, entry.size - 8));
}

// dmoerm for Node: the `node` entry of package.json. The API is the browser's (src/core.js);
// here bundles are also read from file paths, and CPU models compute on worker threads
// (src/node-worker.js).
import { availableParallelism } from 'node:os';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { emptyParts } from './parts.js';
import { NodeWorker } from './node-worker.js';
import { locations, platform } from './platform.js';

Object.assign(platform, {
  name: 'node',
  spawn(kind, configured) {
    return new NodeWorker(configured ?? new URL(`./${kind}-worker.js`, import.meta.url));
  },
  defaultThreads: () => availableParallelism(),
  // Node's fetch takes no file: URL: the bytes
  localWasm: async () => readFile(new URL(locations.wasmUrl ?? '../wasm/dmoerm_wasm_bg.wasm', import.meta.url)),
  readParts,
  directory,
});

// A directory's files (src/folder.js), read from disk when the folder's model needs them.
async function directory(path) {
  const entries = [];
  for (const file of await readdir(path, { recursive: true })) {
    const full = join(path, file);
    const info = await stat(full);
    if (!info.isFile()) continue;
    entries.push({
      path: relative(path, full).split(sep).join('/'),
      size: info.size,
      slice: async (start, end) => {
        const handle = await open(full);
        try {
          const bytes = new Uint8Array(end - start);
          await handle.read(bytes, 0, bytes.length, start);
          return bytes;
        } finally {
          await handle.close();
        }
      },
      read: () => readParts(full),
    });
  }
  return { name: resolve(path), entries };
}

// A file in parts (`readFile` stops at 2 GiB).
async function readParts(path) {
  const file = await open(path);
  try {
    const parts = emptyParts((await file.stat()).size);
    for (const p of parts) {
      for (let got = 0; got < p.length; ) {
        const { bytesRead } = await file.read(p, got, p.length - got, null);
        if (bytesRead === 0) throw new Error(`dmoerm: ${path} ended early`);
        got += bytesRead;
      }
    }
    return parts;
  } finally {
    await file.close();
  }
}

export * from './core.js';

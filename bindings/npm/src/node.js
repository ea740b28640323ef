// dmoerm for Node: the `node` entry of package.json. The API is the browser's (src/core.js);
// here bundles are also read from file paths, and CPU models compute on worker threads
// (src/node-worker.js).
import { availableParallelism } from 'node:os';
import { open, readFile } from 'node:fs/promises';
import { emptyParts } from './parts.js';
import { NodeWorker } from './node-worker.js';
import { locations, platform } from './platform.js';

Object.assign(platform, {
  name: 'node',
  spawn(kind) {
    const configured = kind === 'threads' ? locations.threadedWorkerUrl : locations.workerUrl;
    const script = kind === 'threads' ? './threads-worker.js' : './webgpu-worker.js';
    return new NodeWorker(configured ?? new URL(script, import.meta.url));
  },
  defaultThreads: () => availableParallelism(),
  // Node's fetch takes no file: URL: the bytes
  localWasm: async () => readFile(new URL(locations.wasmUrl ?? '../wasm/dmoerm_wasm_bg.wasm', import.meta.url)),
  readParts,
});

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

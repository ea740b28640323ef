// dmoerm for browsers (pages and Web Workers, bundled or not): the `browser` and `default`
// entry of package.json. Node's is src/node.js; the API is the same (src/core.js).
import { locations, platform } from './platform.js';
import { crossOriginWorker, importingWorker } from './spawn.js';

// For the cross-origin fallback only (spawn.js): names a bundler does not follow.
const SCRIPTS = { webgpu: './webgpu-worker.js', threads: './threads-worker.js', 'threads-relaxed': './threads-relaxed-worker.js' };

Object.assign(platform, {
  name: 'browser',
  spawn(kind, configured) {
    if (configured) {
      const url = new URL(configured, globalThis.location?.href);
      return url.origin === globalThis.location?.origin ? new Worker(url, { type: 'module' }) : importingWorker(url);
    }
    try {
      // literals, so that bundlers find the scripts (and build them as Workers)
      switch (kind) {
        case 'threads':
          return new Worker(new URL('./threads-worker.js', import.meta.url), { type: 'module' });
        case 'threads-relaxed':
          return new Worker(new URL('./threads-relaxed-worker.js', import.meta.url), { type: 'module' });
        default:
          return new Worker(new URL('./webgpu-worker.js', import.meta.url), { type: 'module' });
      }
    } catch (e) {
      return crossOriginWorker(e, SCRIPTS[kind], import.meta.url);
    }
  },
  defaultThreads: () => Math.max(1, globalThis.navigator?.hardwareConcurrency || 1),
  // undefined: the glue's own `.wasm` beside it (a bundler emits it)
  localWasm: () => locations.wasmUrl,
});

export * from './core.js';

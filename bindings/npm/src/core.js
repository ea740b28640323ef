// The package's API, shared by its two entries (src/index.js for browsers, src/node.js for
// Node), which fill in `platform` first. The model code is the Rust crate `dmoerm`, compiled to
// wasm (bindings/wasm); this file only loads it, downloads and caches bundles, and reports
// progress. Results are the Rust types as they serialise (the same JSON as the CLI's), typed by
// the declarations tsify generates.
//
// Every file of the package is reached by a literal that bundlers follow (`import('...')`,
// `new URL('...', import.meta.url)`, `new Worker(new URL('...', import.meta.url))`), so an app
// built with Vite or webpack carries the wasm builds and Workers it needs.

import { locations, platform } from './platform.js';
import { download } from './download.js';
import { folderOf, loadFolder } from './folder.js';
import { length, partBytes } from './parts.js';
export { _setPartBytesForTests } from './parts.js';
export { clearCache } from './download.js';
import { deadModelError, panicOf, runModel, trapError } from './wasm-calls.js';
import { canStartWorkers, cpuThreads, prepareWebgpu, WorkerModel, workersMemoryBytes } from './workers.js';

// This thread's wasm instance (the single-thread build). A trap (a Rust panic, or an
// allocation that failed) leaves an instance unusable: the next call then starts a fresh one
// from the module already compiled (the glue's `__wbg_reset_state`), and the models loaded
// into the dead one throw.
let instance = null;
let generation = 0;
let compiled = false;

function loadWasm() {
  if (!instance) {
    const gen = ++generation;
    instance = (async () => {
      const glue = await import('../wasm/dmoerm_wasm.js');
      if (compiled) glue.__wbg_reset_state();
      const exports = await glue.default({ module_or_path: await platform.localWasm() });
      compiled = true;
      return { glue, gen, memory: exports.memory };
    })();
    instance.catch(() => {
      instance = null;
    });
  }
  return instance;
}

// Runs `fn`; a wasm trap becomes an Error with the panic message, and retires the instance.
async function guard(what, wasm, fn) {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof WebAssembly.RuntimeError)) {
      throw e instanceof Error ? e : new Error(`dmoerm: ${what} failed: ${String(e)}`);
    }
    const panic = panicOf(wasm.glue, e);
    if (generation === wasm.gen) instance = null;
    throw trapError(what, panic);
  }
}

/**
 * Where the package's files are served from, for apps that host them elsewhere than beside
 * its modules (a CDN, a folder the app copies them to): `wasmUrl` and `threadedWasmUrl` (the
 * single-thread and threaded builds' `dmoerm_wasm_bg.wasm`), `workerUrl` and
 * `threadedWorkerUrl` (`src/webgpu-worker.js` and `src/threads-worker.js` as served; a script
 * on another origin is started through a module that imports it). Call it before the first
 * load; each option left out keeps the package's own file. Naming the threaded build's files
 * runs that build, not its relaxed-SIMD twin (src/workers.js).
 */
export function configure(options = {}) {
  for (const [key, value] of Object.entries(options)) {
    if (!(key in locations)) throw new TypeError(`dmoerm: configure takes ${Object.keys(locations).join(', ')}, not ${key}`);
    if (value !== undefined && typeof value !== 'string' && !(value instanceof URL)) {
      throw new TypeError(`dmoerm: configure: ${key} must be a URL or a string`);
    }
    locations[key] = value === undefined ? undefined : String(value);
  }
}

/** Whether this page or worker can use WebGPU (navigator.gpu gives an adapter). */
export async function webgpuAvailable() {
  const wasm = await loadWasm();
  return wasm.glue.webgpuAdapter();
}

/**
 * The size in bytes of the wasm memory the models loaded so far take: this thread's instance's
 * and those of the package's Workers (in a browser, models live there). It only grows: this is
 * the peak of everything loaded and computed so far (at most 4 GiB an instance).
 */
export async function wasmMemoryBytes() {
  const inWorkers = await workersMemoryBytes();
  if (inWorkers > 0 && !instance) return inWorkers;
  const wasm = await loadWasm();
  return wasm.memory.buffer.byteLength + inWorkers;
}

/** @internal Panics inside wasm (tests of the recovery from a trap). */
export async function _panicForTests() {
  const wasm = await loadWasm();
  return guard('the test panic', wasm, () => wasm.glue.panicForTests());
}

/**
 * @internal Makes the next score, scoreBatch or rank in the wasm instance that holds `rm` panic
 * (on a thread of its pool when `onPool`, in the threaded build).
 */
export async function _panicInNextScoreForTests(rm, { onPool = false } = {}) {
  await RewardModel._panicNext(rm, onPool);
}

// A result as the Rust `Score` serialises, plus `taskProbs`: the name 0.1 of this package used
// for `task_probs`, kept as a getter that JSON.stringify does not repeat.
function withAlias(s) {
  Object.defineProperty(s, 'taskProbs', { get: () => s.task_probs, enumerable: false });
  return s;
}

// A model in this thread's wasm instance (the single-thread build: WebGPU, and the CPU where
// threads are not to be had): the methods RewardModel calls.
class LocalModel {
  #model;
  #wasm;

  constructor(model, wasm) {
    this.#model = model;
    this.#wasm = wasm;
    this.threads = 1;
  }

  get device() {
    return this.#live().device;
  }

  get info() {
    return this.#live().info();
  }

  /** Where a model loads into this thread's instance `wasm`, on `device`. */
  static on(wasm, device) {
    const loaded = (model) => new LocalModel(model, wasm);
    return {
      load: async (parts, name) => loaded(await guard('loading the model', wasm, () => wasm.glue.Model.fromParts(parts, device, name))),
      plan: (paths, sizes, files, name, quantize) =>
        guard('reading the folder', wasm, () => wasm.glue.folderPlan(paths, sizes, files, device, name, quantize)),
      loadFiles: async (paths, sizes, files, name, quantize) =>
        loaded(await guard('loading the model', wasm, () => wasm.glue.Model.fromFiles(paths, sizes, files, device, name, quantize))),
    };
  }

  // A trap on the CPU throws inside the call and `guard` turns it into a rejection; on WebGPU
  // a trap inside the call's promise task cannot be caught here: that is why, in a browser,
  // WebGPU models live in a Worker of the package (src/workers.js), whose panics reach the page.

  score(input) {
    return this.#run('scoring', 'score', [input]);
  }

  scoreBatch(inputs) {
    return this.#run('scoring', 'scoreBatch', [inputs]);
  }

  rank(prompt, candidates) {
    return this.#run('ranking', 'rank', [prompt, candidates]);
  }

  #run(what, op, args) {
    const m = this.#live();
    return guard(what, this.#wasm, () => runModel(m, op, args));
  }

  panicNext(onPool) {
    this.#wasm.glue.panicInNextScoreForTests(onPool);
  }

  dispose() {
    try {
      this.#model.free();
    } catch {
      // its instance trapped: nothing left to free
    }
  }

  #live() {
    if (this.#wasm.gen !== generation || !instance) throw deadModelError();
    return this.#model;
  }
}

/** A DMoERM reward model. */
export class RewardModel {
  #engine;

  constructor(engine) {
    this.#engine = engine;
  }

  /**
   * Loads a model: a packed bundle (`dmoerm pack`) from a URL (a file path in Node) or from its
   * bytes; or a model's folder, not packed (a Hugging Face reward model's files, or a dmoerm
   * bundle directory): a `FileList` or array of `File`s (from `<input type="file"
   * webkitdirectory>` or dropped on a page), a URL ending in `/` where the Hugging Face files
   * are served, or in Node a directory path ending in `/`. The bytes stay in JavaScript
   * memory; wasm reads them one tensor at a time.
   * options: device 'auto' | 'webgpu' | 'cpu'; threads (the CPU's, default all cores: used on a
   * cross-origin-isolated page and in Node, where the model runs in a Worker of this package on
   * the threaded build; on a plain page the CPU computes on one thread); onProgress(event)
   * with `event.status` 'download' ({loaded, total, fraction, cached}, as bytes arrive), 'load'
   * ({bytes}: the bundle is being read onto the device) and 'ready' ({device}); cache (default
   * true: the Cache API keeps downloads, keyed by URL and `version`); quantize ('int8' | 'q4',
   * a folder only: its backbone's large float matrices quantised as they load, as `dmoerm pack
   * --dtype int8|q4` stores them; a packed bundle is quantised when it is packed).
   */
  static async load(source, { device = 'auto', threads, onProgress, cache = true, version, quantize } = {}) {
    if (quantize !== undefined && quantize !== 'int8' && quantize !== 'q4') {
      throw new TypeError(`dmoerm: quantize must be 'int8' or 'q4', not ${JSON.stringify(quantize)}`);
    }
    const pool = await cpuThreads(threads);
    // In a browser the models live in Workers of the package: WebGPU ones on the single-thread
    // build, CPU ones on the threaded build where the page is cross-origin isolated; in Node
    // CPU ones on the threaded build in a worker thread. On one thread (no isolation, or
    // `threads: 1`) they live in this thread's instance.
    const own = canStartWorkers();
    let chosen = device;
    if (device === 'auto' && !globalThis.navigator?.gpu) chosen = 'cpu';
    else if (device !== 'cpu') {
      // 'webgpu' or 'auto' (or a wrong name, which this reports), as the Rust side decides
      const wasm = own ? null : await loadWasm();
      chosen = own ? await prepareWebgpu(device) : await guard('opening the device', wasm, () => wasm.glue.prepareDevice(device));
    }
    const where =
      chosen === 'webgpu' && own
        ? WorkerModel.on('webgpu')
        : chosen === 'cpu' && pool > 1
          ? WorkerModel.on('threads', pool)
          : LocalModel.on(await loadWasm(), chosen);
    let engine;
    const folder = await folderOf(source, { onProgress, cache, version });
    if (folder) {
      engine = await loadFolder(folder, where, onProgress, quantize);
    } else if (quantize) {
      throw new TypeError(
        'dmoerm: quantize applies to a folder; a packed bundle is quantised when it is packed (dmoerm pack --dtype int8|q4)',
      );
    } else {
      let parts;
      let name = 'model';
      let owned = false;
      if (source instanceof Uint8Array || source instanceof ArrayBuffer) {
        const bytes = source instanceof ArrayBuffer ? new Uint8Array(source) : source;
        parts = [];
        for (let at = 0; at < bytes.length || at === 0; at += partBytes) parts.push(bytes.subarray(at, at + partBytes));
      } else if (typeof source === 'string' || source instanceof URL) {
        name = String(source);
        parts = await download(source, { onProgress, cache, version });
        owned = true;
      } else {
        throw new TypeError(
          'dmoerm: RewardModel.load takes a URL, a path (Node) or the bytes of a packed bundle, or a folder (a FileList, Files, or a URL ending in /)',
        );
      }
      onProgress?.({ status: 'load', bytes: length(parts) });
      engine = await where.load(parts, name, owned);
    }
    onProgress?.({ status: 'ready', device: engine.device });
    return new RewardModel(engine);
  }

  /** 'webgpu' or 'cpu'. */
  get device() {
    return this.#live().device;
  }

  /** How many threads the model computes on: 1, or the pool's size on the threaded CPU path. */
  get threads() {
    return this.#live().threads;
  }

  /** `{name, tasks: {task: [capability, ...]}}`. */
  get info() {
    const raw = this.#live().info;
    return { name: raw.name, tasks: Object.fromEntries(raw.tasks.map(([task, caps]) => [task, [...caps]])) };
  }

  /** Scores `{prompt, response}` or `{messages: [{role, content}], response}`. */
  async score(input) {
    return withAlias(await this.#live().score(input));
  }

  /** Scores many inputs in batches. */
  async scoreBatch(inputs) {
    return (await this.#live().scoreBatch(inputs)).map(withAlias);
  }

  /** Best-of-n: candidates best first, `{index, response, ...score}`; the router runs once. */
  async rank(prompt, candidates) {
    return (await this.#live().rank(prompt, candidates)).map(withAlias);
  }

  /** Frees the model's memory; the object cannot be used afterwards. */
  dispose() {
    this.#engine?.dispose();
    this.#engine = null;
  }

  /** @internal See `_panicInNextScoreForTests`. */
  static async _panicNext(rm, onPool) {
    return rm.#live().panicNext(onPool);
  }

  #live() {
    if (!this.#engine) throw new Error('dmoerm: this RewardModel was disposed');
    return this.#engine;
  }
}

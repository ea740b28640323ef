// What differs between the package's two entries, the browser's (src/index.js) and Node's
// (src/node.js): the entry that was imported fills this in before anything runs. Keeping
// Node's half in its own entry keeps `node:` imports out of every browser bundle.

export const platform = {
  /** 'browser' or 'node'. */
  name: null,
  /**
   * Starts the package's Worker of `kind` ('webgpu', 'threads' or 'threads-relaxed';
   * src/workers.js), on the script `configure` named, else the package's own.
   */
  spawn: null,
  /** How many threads the CPU computes on when `threads` is not given (its checks aside). */
  defaultThreads: null,
  /** The single-thread build's wasm, as this thread's instance is initialised with it. */
  localWasm: null,
  /** Node: a file path's bytes, in parts (src/download.js). */
  readParts: null,
  /** Node: a directory's files, as src/folder.js reads a folder. */
  directory: null,
};

/**
 * Where the package's files are, when they are not beside its modules (`configure`): the
 * single-thread and threaded builds' `.wasm` files and the two Workers' scripts.
 */
export const locations = {
  wasmUrl: undefined,
  threadedWasmUrl: undefined,
  workerUrl: undefined,
  threadedWorkerUrl: undefined,
};

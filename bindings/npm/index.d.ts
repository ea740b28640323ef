// The result and input types are the Rust crate's own (`dmoerm::Score`, `Ranked`, `Message`,
// `ConversationInput`): tsify writes their declarations into the wasm build, so they cannot
// drift from what the code returns. This file declares only the JavaScript wrapper.
import type { ConversationInput, Message, Ranked as RankedCore, Role, Score as ScoreCore } from './wasm/dmoerm_wasm.js';

export type { ConversationInput, Message, Role };

/** What to score: `{prompt, response}` or `{messages, response}` (exactly one of the two). */
export type ScoreInput = ConversationInput;

/** 0.1's name for `task_probs`, kept as an alias. */
interface TaskProbsAlias {
  /** @deprecated use `task_probs` (the name in every other binding and in the CLI's JSON). */
  readonly taskProbs: Record<string, number>;
}

/** The score of one response (the same fields as the CLI's JSON). */
export type Score = ScoreCore & TaskProbsAlias;
/** A candidate of `rank`: its index and text, and its score. */
export type Ranked = RankedCore & TaskProbsAlias;

/** What `onProgress` receives while a model loads. */
export type ProgressEvent =
  | {
      status: 'download';
      loaded: number;
      /** Bytes expected (0 when the server does not say). */
      total: number;
      fraction: number;
      /** Whether the bytes came from the Cache API. */
      cached: boolean;
    }
  /** The bundle's bytes are being read onto the device. */
  | { status: 'load'; bytes: number }
  /** The model can score. */
  | { status: 'ready'; device: 'webgpu' | 'cpu' };

/** @deprecated the download events of `ProgressEvent`. */
export type Progress = Extract<ProgressEvent, { status: 'download' }>;

export interface LoadOptions {
  /** 'auto' (default): WebGPU when navigator.gpu gives an adapter, else the wasm CPU backend. */
  device?: 'auto' | 'webgpu' | 'cpu';
  /**
   * Threads for the CPU (default: all cores). Used on a cross-origin-isolated page (COOP/COEP
   * headers) and in Node: the model then runs in a Worker of this package (a worker thread in
   * Node), on the threaded wasm build. On a plain page the CPU computes on one thread. The
   * first threaded load sets the size of the pool, which later models share.
   */
  threads?: number;
  onProgress?: (event: ProgressEvent) => void;
  /** Keep the download in the Cache API (default true). */
  cache?: boolean;
  /** Part of the cache key: a new version downloads again. */
  version?: string;
  /**
   * A folder only: its backbone's large float matrices (projections, embeddings) quantised as
   * they load, as `dmoerm pack --dtype int8|q4` stores them, so that a Hugging Face reward
   * model of bf16 or f32 weights runs on the int8 kernels in a quarter (int8) or an eighth
   * (q4) of the memory. A packed bundle is quantised when it is packed.
   */
  quantize?: 'int8' | 'q4';
}

export declare class RewardModel {
  /**
   * A packed bundle (`dmoerm pack`) from a URL, a file path (Node) or its bytes; or a model's
   * folder, not packed (a Hugging Face reward model's files, or a dmoerm bundle directory): a
   * `FileList` or `File[]` (`<input type="file" webkitdirectory>`, or dropped), a URL ending
   * in `/` that serves the Hugging Face files, or a directory path ending in `/` (Node).
   */
  static load(source: string | URL | Uint8Array | ArrayBuffer | FileList | File[], options?: LoadOptions): Promise<RewardModel>;
  /** The device in use. */
  readonly device: 'webgpu' | 'cpu';
  /** Threads the model computes on: 1, or the pool's size on the threaded CPU path. */
  readonly threads: number;
  readonly info: { name: string | null; tasks: Record<string, string[]> };
  score(input: ScoreInput): Promise<Score>;
  scoreBatch(inputs: ScoreInput[]): Promise<Score[]>;
  /** Best-of-n, best first; the router runs once. */
  rank(prompt: string | Message[], candidates: string[]): Promise<Ranked[]>;
  /** Frees the model's memory. */
  dispose(): void;
}

/**
 * Where the package's files are served from, when not beside its modules (a CDN, or a folder
 * an app copies them to). Each is a URL; one left out keeps the package's own file. In Node,
 * `wasmUrl` and `threadedWasmUrl` are file URLs or paths.
 */
export interface Locations {
  /** The single-thread build's `.wasm` (the package's `wasm/dmoerm_wasm_bg.wasm`). */
  wasmUrl?: string | URL;
  /**
   * The threaded build's `.wasm` (`wasm-threads/dmoerm_wasm_bg.wasm`). Naming it (or
   * `threadedWorkerUrl`) runs that build where the package would take its relaxed-SIMD twin.
   */
  threadedWasmUrl?: string | URL;
  /** The WebGPU Worker's script (`src/webgpu-worker.js`, or what a bundler built of it). */
  workerUrl?: string | URL;
  /** The threads Worker's script (`src/threads-worker.js`, or what a bundler built of it). */
  threadedWorkerUrl?: string | URL;
}

/** Sets where the package's files are (see `Locations`); call it before the first load. */
export declare function configure(options: Locations): void;

/** Whether WebGPU is usable here. */
export declare function webgpuAvailable(): Promise<boolean>;
/**
 * Size in bytes of the wasm memory the loaded models take (this thread's instance's and those
 * of the package's Workers, where models live in a browser). It only grows: the peak of
 * everything loaded and computed so far (at most 4 GiB an instance).
 */
export declare function wasmMemoryBytes(): Promise<number>;
/** Deletes the cached model downloads; resolves to whether there was a cache. */
export declare function clearCache(): Promise<boolean>;

/** A message of a multi-turn history. */
export interface Message {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** What to score: one prompt, or a history, and the response. */
export type ScoreInput = { prompt: string; response: string } | { messages: Message[]; response: string };

export interface Score {
  /** The reward (the routed task's aggregator output). */
  reward: number;
  /** The task the router chose. */
  task: string;
  /** Router probability of every task. */
  taskProbs: Record<string, number>;
  /** Score of each capability expert of the chosen task. */
  capabilities: Record<string, number>;
  /** Whether the input was cut to the model's maximum length. */
  truncated: boolean;
}

export interface Ranked extends Score {
  /** Position of the candidate in the input. */
  index: number;
  response: string;
}

export interface Progress {
  loaded: number;
  /** Bytes expected (0 when the server does not say). */
  total: number;
  fraction: number;
  /** Whether the bytes came from the Cache API. */
  cached: boolean;
}

export interface LoadOptions {
  /** 'auto' (default): WebGPU when navigator.gpu gives an adapter, else the wasm CPU backend. */
  device?: 'auto' | 'webgpu' | 'cpu';
  onProgress?: (p: Progress) => void;
  /** Keep the download in the Cache API (default true). */
  cache?: boolean;
  /** Part of the cache key: a new version downloads again. */
  version?: string;
}

export declare class RewardModel {
  /** A packed bundle (`dmoerm pack`) from a URL, a file path (Node) or its bytes. */
  static load(source: string | URL | Uint8Array | ArrayBuffer, options?: LoadOptions): Promise<RewardModel>;
  /** The device in use. */
  readonly device: 'webgpu' | 'cpu';
  readonly info: { name: string | null; tasks: Record<string, string[]> };
  score(input: ScoreInput): Promise<Score>;
  scoreBatch(inputs: ScoreInput[]): Promise<Score[]>;
  /** Best-of-n, best first; the router runs once. */
  rank(prompt: string | Message[], candidates: string[]): Promise<Ranked[]>;
  /** Frees the model's memory. */
  dispose(): void;
}

/** Whether WebGPU is usable here. */
export declare function webgpuAvailable(): Promise<boolean>;
/** Deletes the cached model downloads; resolves to whether there was a cache. */
export declare function clearCache(): Promise<boolean>;

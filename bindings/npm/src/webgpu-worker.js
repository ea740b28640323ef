// The package's Worker for WebGPU models, on the single-thread build (src/worker-serve.js).
import * as glue from '../wasm/dmoerm_wasm.js';
import { serve } from './worker-serve.js';

serve(glue, {
  instantiate: (wasmUrl) => glue.default(wasmUrl ? { module_or_path: wasmUrl } : undefined),
});

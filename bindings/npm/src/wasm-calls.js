// What this thread's instance (src/core.js) and the package's Workers (src/worker-serve.js,
// src/workers.js) share about calling into wasm: how a model's call runs, and how a trap is
// reported.

/**
 * Runs `op` ('score', 'scoreBatch' or 'rank') of a wasm `Model`: on the CPU inside the wasm
 * call (`*Now`), so that a trap throws in the caller; on WebGPU as the promise that waits for
 * the GPU.
 */
export function runModel(model, op, args) {
  return model.device === 'cpu' ? model[`${op}Now`](...args) : model[op](...args);
}

/** The message of the Rust panic behind trap `e` in `glue`'s instance, else the trap's own. */
export function panicOf(glue, e) {
  try {
    return glue?.lastPanic() ?? e.message;
  } catch {
    return e.message; // the instance is too broken to say
  }
}

/** The Error a call that trapped rejects with. */
export function trapError(what, detail) {
  return new Error(`dmoerm: ${what} failed inside wasm (${detail}); models loaded before must be loaded again`);
}

/** The Error a model of a trapped instance throws. */
export function deadModelError() {
  return new Error('dmoerm: this RewardModel lived in a wasm instance that trapped; load it again');
}

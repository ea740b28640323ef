//! The threaded build's rayon pool, on Workers the package starts itself.
//!
//! The pool's threads are Web Workers (worker threads in Node) that share this instance's
//! memory. The package reaches their script by a literal a bundler follows
//! (`new Worker(new URL('./pool-worker.js', import.meta.url))` in `src/threads-worker.js`);
//! wasm-bindgen-rayon, which did this before, starts them either through a `../../..`
//! directory import (bundlers only) or on a blob of a script fetched at run time (no bundler),
//! so no one build of the package could run both with and without a bundler.
//!
//! The handshake, in the Worker that holds the models:
//! 1. it starts `threads` pool Workers and posts each [`wasm_module`] (`sharedModule`) and [`wasm_memory`] (`sharedMemory`);
//! 2. each instantiates the module on that memory, says it is ready, and calls
//!    [`run_pool_thread`], which waits for a thread of the pool and runs it (for good);
//! 3. once all are ready, it calls [`build_thread_pool`], which hands rayon's threads out.

use std::sync::{Condvar, Mutex, MutexGuard};

use rayon::ThreadBuilder;
use wasm_bindgen::prelude::*;

/// rayon's threads on their way from [`build_thread_pool`] to the Workers that run them. (A
/// lock and a condition variable, as rayon's own latches: a `std::sync::mpsc` receiver waiting
/// on a pool Worker was never woken by a send from the models' Worker.)
static HANDOFF: Mutex<Vec<ThreadBuilder>> = Mutex::new(Vec::new());
static ARRIVED: Condvar = Condvar::new();

fn handoff() -> Result<MutexGuard<'static, Vec<ThreadBuilder>>, std::io::Error> {
    HANDOFF.lock().map_err(|_| poisoned())
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("the thread pool's hand-off is poisoned")
}

/// This instance's compiled module, for the pool's Workers to instantiate.
#[wasm_bindgen(js_name = sharedModule)]
pub fn wasm_module() -> JsValue {
    wasm_bindgen::module()
}

/// This instance's (shared) memory, for the pool's Workers to instantiate the module on.
#[wasm_bindgen(js_name = sharedMemory)]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// On a pool Worker: waits for one of the pool's threads and runs it, for good.
#[wasm_bindgen(js_name = runPoolThread)]
pub fn run_pool_thread() -> Result<(), JsError> {
    let mut waiting = ARRIVED.wait_while(handoff()?, |threads| threads.is_empty()).map_err(|_| poisoned())?;
    let thread = waiting.pop().ok_or_else(poisoned)?;
    drop(waiting);
    thread.run();
    Ok(())
}

/// Makes rayon's global pool of `threads` threads, run by the pool Workers that are waiting
/// in [`run_pool_thread`]. Once per instance.
#[wasm_bindgen(js_name = buildThreadPool)]
pub fn build_thread_pool(threads: usize) -> Result<(), JsError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .spawn_handler(|thread| {
            handoff()?.push(thread);
            ARRIVED.notify_one();
            Ok(())
        })
        .build_global()
        .map_err(|e| JsError::new(&format!("starting the thread pool: {e}")))
}

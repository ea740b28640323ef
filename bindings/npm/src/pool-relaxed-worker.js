// A thread of the rayon pool of the threaded build's relaxed-SIMD twin (src/pool-thread.js).
import * as glue from '../wasm-threads-relaxed/dmoerm_wasm.js';
import { runPoolThread } from './pool-thread.js';

runPoolThread(glue);

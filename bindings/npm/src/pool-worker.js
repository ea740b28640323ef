// A thread of the rayon pool of the threaded build (src/pool-thread.js).
import * as glue from '../wasm-threads/dmoerm_wasm.js';
import { runPoolThread } from './pool-thread.js';

runPoolThread(glue);

// A bundle's bytes in JavaScript memory, in parts of at most PART_BYTES, each its own
// ArrayBuffer: a browser moves at most 2 GiB to a Worker in one (and a part the package
// downloaded is moved, not copied). wasm reads across them (bindings/wasm `JsParts`).

const PART_BYTES = 2 ** 30;
export let partBytes = PART_BYTES;

/** @internal Holds the bundles loaded next in parts of `n` bytes (tests of the parts); none: 1 GiB. */
export function _setPartBytesForTests(n = PART_BYTES) {
  partBytes = n;
}

/** Empty parts for `size` bytes (each its own buffer). */
export function emptyParts(size) {
  const parts = [];
  for (let at = 0; at < size; at += partBytes) parts.push(new Uint8Array(Math.min(partBytes, size - at)));
  return parts;
}

/** Writes `bytes` at `at` into `parts` (every part but the last holds partBytes). */
export function put(parts, bytes, at) {
  for (let done = 0; done < bytes.length; ) {
    const [i, offset] = [Math.floor((at + done) / partBytes), (at + done) % partBytes];
    const n = Math.min(bytes.length - done, parts[i].length - offset);
    parts[i].set(bytes.subarray(done, done + n), offset);
    done += n;
  }
}

/** The first `n` bytes of `parts` (views). */
export function firstBytes(parts, n) {
  const out = [];
  for (let at = 0; at < n; at += partBytes) out.push(parts[at / partBytes].subarray(0, Math.min(partBytes, n - at)));
  return out;
}

/** How many bytes `parts` hold. */
export function length(parts) {
  return parts.reduce((sum, p) => sum + p.length, 0);
}


/** Bytes `start` to `end` of `parts` (of any sizes): a view when they lie in one part, else a copy. */
export function bytesAt(parts, start, end) {
  let out = null;
  let at = 0; // where `p` starts
  for (const p of parts) {
    const [from, to] = [Math.max(start, at), Math.min(end, at + p.length)];
    if (from < to) {
      if (from === start && to === end) return p.subarray(from - at, to - at);
      out ??= new Uint8Array(end - start);
      out.set(p.subarray(from - at, to - at), from - start);
    }
    at += p.length;
  }
  return out ?? new Uint8Array(0);
}

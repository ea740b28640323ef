// Downloads: a URL's bytes into parts (src/parts.js) as they arrive, with progress, kept in
// the Cache API; in Node a file path is read from disk.

import { platform } from './platform.js';
import { emptyParts, firstBytes, length, put } from './parts.js';

const CACHE_NAME = 'dmoerm-models';

function cacheKey(url, version) {
  const u = new URL(url, globalThis.location?.href);
  if (version) u.searchParams.set('dmoerm-version', version);
  return u.href;
}

/** Removes every model this package cached with the Cache API. Resolves to whether it did. */
export async function clearCache() {
  if (!globalThis.caches) return false;
  return caches.delete(CACHE_NAME);
}

/** The bytes at `url` (a file path in Node), in parts. */
export async function download(url, { onProgress, cache = true, version } = {}) {
  if (platform.readParts && !/^https?:/.test(String(url))) {
    const parts = await platform.readParts(url instanceof URL ? url : String(url));
    const size = length(parts);
    onProgress?.({ status: 'download', loaded: size, total: size, fraction: 1, cached: false });
    return parts;
  }
  const key = cacheKey(url, version);
  const store = cache && globalThis.caches ? await caches.open(CACHE_NAME) : null;
  let response = store ? await store.match(key) : undefined;
  const cached = !!response;
  if (!response) {
    try {
      response = await fetch(url);
    } catch (e) {
      throw new Error(`dmoerm: could not download the model from ${url}: ${e.message}`);
    }
    if (!response.ok) {
      throw new Error(`dmoerm: could not download the model from ${url}: HTTP ${response.status} ${response.statusText}`);
    }
  }
  const total = Number(response.headers.get('content-length')) || 0;
  // With a length, the bytes go straight into their parts (a large model is not held twice);
  // without one, or when more arrives (a compressed transfer), they are joined at the end.
  let parts = total ? emptyParts(total) : null;
  const chunks = [];
  let loaded = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (parts && loaded + value.length <= total) {
      put(parts, value, loaded);
    } else {
      if (parts) chunks.push(...firstBytes(parts, loaded));
      parts = null;
      chunks.push(value);
    }
    loaded += value.length;
    onProgress?.({ status: 'download', loaded, total, fraction: total ? Math.min(loaded / total, 1) : 0, cached });
  }
  if (!parts) {
    parts = emptyParts(loaded);
    let at = 0;
    for (const c of chunks) {
      put(parts, c, at);
      at += c.length;
    }
  } else if (loaded < total) {
    parts = firstBytes(parts, loaded);
  }
  onProgress?.({ status: 'download', loaded, total: loaded, fraction: 1, cached });
  if (store && !cached) {
    await store.put(key, new Response(new Blob(parts), { headers: { 'content-length': String(loaded) } }));
  }
  return parts;
}

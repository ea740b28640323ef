// Starting the package's Workers where its scripts are on another origin than the page (an
// import map or a `configure` URL that points at a CDN): a browser starts a Worker only on a
// same-origin script, but a same-origin module may import one from anywhere (with CORS).

/**
 * The Worker for a script that `new Worker` refused with `error`: the script at `path`
 * (relative to `base`), imported by a module of the page's origin. Rethrows any other error.
 */
export function crossOriginWorker(error, path, base) {
  if (error?.name !== 'SecurityError') throw error;
  return importingWorker(new URL(path, base));
}

/** A module Worker that imports `url` (the Worker's messages wait until it has run). */
export function importingWorker(url) {
  const source = `import ${JSON.stringify(String(url))};`;
  return new Worker(URL.createObjectURL(new Blob([source], { type: 'text/javascript' })), { type: 'module' });
}

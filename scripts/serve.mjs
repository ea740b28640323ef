// A static file server for the demo and the browser tests: serves the repository root with
// the COOP/COEP headers that cross-origin isolation (wasm threads, SharedArrayBuffer) needs.
//
//   node scripts/serve.mjs [--port 8080]      then open http://localhost:8080/web-demo/
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Starts the server; `mounts` maps URL prefixes to extra directories (the tests serve packed
 * fixtures from a temporary one); `isolated: false` leaves out COOP/COEP (a plain page, where
 * the package computes on one thread); `cors: true` lets pages of any origin load the files
 * (a CDN, as the consumer tests play one). Resolves to `{url, close}`.
 */
export function serve({ port = 0, root = repoRoot, mounts = {}, isolated = true, cors = false } = {}) {
  const server = createServer((req, res) => {
    const headers = {
      ...(isolated && {
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
        'Cross-Origin-Resource-Policy': cors ? 'cross-origin' : 'same-origin',
      }),
      ...(cors && { 'Access-Control-Allow-Origin': '*' }),
      'Cache-Control': 'no-cache',
    };
    let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let base = root;
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (path.startsWith(prefix)) {
        base = dir;
        path = path.slice(prefix.length - 1);
      }
    }
    if (path.endsWith('/')) path += 'index.html';
    const file = normalize(join(base, path));
    if (!file.startsWith(resolve(base) + sep)) {
      res.writeHead(403, headers).end('forbidden');
      return;
    }
    let size;
    try {
      const st = statSync(file);
      if (!st.isFile()) throw new Error('not a file');
      size = st.size;
    } catch {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    res.writeHead(200, { ...headers, 'Content-Type': type, 'Content-Length': size });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((ok) => {
    server.listen(port, '127.0.0.1', () => {
      ok({ url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--port');
  const port = i > 0 ? Number(process.argv[i + 1]) : 8080;
  const { url } = await serve({ port });
  console.log(`serving ${repoRoot} at ${url}/web-demo/ (COOP/COEP on); Ctrl-C stops`);
}

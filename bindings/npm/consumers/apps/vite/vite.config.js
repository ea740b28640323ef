// The headers that make a page cross-origin isolated, which the package's threads need
// (DMOERM_ISOLATED=0 leaves them out: the package then computes on one thread). Nothing else:
// the package needs no Vite configuration.
const headers =
  process.env.DMOERM_ISOLATED === '0'
    ? {}
    : { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

export default { server: { headers }, preview: { headers } };

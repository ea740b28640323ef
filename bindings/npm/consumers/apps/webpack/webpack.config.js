// A production build of apps/page.js, with webpack's defaults otherwise (the package needs no
// loader or plugin: its Workers and wasm files are reached by literals webpack 5 follows).
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

export default {
  mode: 'production',
  entry: here('../page.js'),
  output: { path: here('./dist'), clean: true },
};

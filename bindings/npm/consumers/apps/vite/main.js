// The app's code: the page every browser app of the tests runs (outside Vite's root, so imported)
import '../page.js';

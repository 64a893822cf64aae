import { defineConfig } from 'vite';

// The console is a static bundle the daemons serve (docs/console.md): no dev server is needed to
// use it, and `npm run build` puts it in dist/.
export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    chunkSizeWarningLimit: 200,
  },
});

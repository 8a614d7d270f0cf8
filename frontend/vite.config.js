// Builds the viewer into dist/, which Django serves as static/viewer/ (see STATICFILES_DIRS).
// Relative base: chunks, web workers and codec wasm are found next to viewer.js, so the
// page works under any path prefix (SCRIPT_NAME) and behind a CDN.
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 10000,
    reportCompressedSize: false,
    // Django's manifest storage serves the entry under a hashed name: a chunk importing
    // from the entry would load it a second time.
    modulePreload: false,
    rollupOptions: {
      input: 'src/main.js',
      output: {
        // What the entry shares with the app chunk (its DICOMweb module, Vite's dynamic
        // import helper) goes in a chunk of its own, for the same reason.
        manualChunks: (id) =>
          id.endsWith('/src/dicomweb.js') || id.includes('vite/preload-helper')
            ? 'shared'
            : undefined,
        entryFileNames: 'viewer.js',
        chunkFileNames: 'chunks/[name]-[hash].js',
        assetFileNames: (asset) =>
          (asset.names ?? [asset.name]).some((name) => name?.endsWith('.css'))
            ? 'viewer.css'
            : 'assets/[name]-[hash][extname]',
      },
    },
  },
  worker: { format: 'es' },
  optimizeDeps: { exclude: ['@cornerstonejs/dicom-image-loader'] },
});

// Entry point: read the page's config, start Cornerstone3D, then the viewer.
import { init as coreInit } from '@cornerstonejs/core';
import { init as dicomImageLoaderInit } from '@cornerstonejs/dicom-image-loader';
import { init as toolsInit } from '@cornerstonejs/tools';

import { Viewer } from './app.js';
import './viewer.css';

async function main() {
  const root = document.getElementById('viewer-app');
  const config = JSON.parse(document.getElementById('viewer-config').textContent);
  try {
    coreInit();
    dicomImageLoaderInit({
      maxWebWorkers: Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1)),
    });
    toolsInit();
    const viewer = new Viewer(root, config);
    // Tests and benchmarks read state and timings from here.
    window.radpacsViewer = viewer;
    await viewer.start();
  } catch (error) {
    console.error(error);
    root.dataset.state = 'error';
    const message = document.createElement('p');
    message.className = 'vw-fatal';
    message.textContent = `The viewer could not start: ${error.message ?? error}`;
    root.append(message);
  }
}

main();

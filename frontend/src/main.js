// Entry point, kept light: it starts the study's first DICOMweb reads (series, then the
// first series' metadata) at once, while the viewer's bundle (Cornerstone3D, ~4 MB) is
// still loading and compiling; the viewer then picks those responses up.
import './viewer.css';
import { Archive, firstSeries } from './dicomweb.js';

async function main() {
  const root = document.getElementById('viewer-app');
  const config = JSON.parse(document.getElementById('viewer-config').textContent);
  const archive = new Archive(config.dicomWebRoot);
  archive
    .series(config.studyInstanceUID)
    .then((list) => {
      const first = firstSeries(list);
      if (first) archive.metadata(first.studyUID, first.uid).catch(() => {});
    })
    .catch(() => {}); // the viewer reports it when it asks again
  try {
    const { startViewer } = await import('./app.js');
    await startViewer(root, config, archive);
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

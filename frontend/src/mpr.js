// Multiplanar reconstruction: axial, sagittal and coronal planes of a CT/MR volume, plus a
// 3D volume rendering, in the same four frames the stack viewports use.
import {
  Enums,
  RenderingEngine,
  cache,
  setUseCPURendering,
  setVolumesForViewports,
  volumeLoader,
  cornerstoneStreamingImageVolumeLoader,
  metaData,
} from '@cornerstonejs/core';

import { LAYOUTS } from './layout.js';

const { ViewportType, OrientationAxis } = Enums;
const ENGINE_ID = 'radpacs-mpr';
const PLANES = [
  { id: 'mpr-axial', orientation: OrientationAxis.AXIAL, label: 'Axial' },
  { id: 'mpr-sagittal', orientation: OrientationAxis.SAGITTAL, label: 'Sagittal' },
  { id: 'mpr-coronal', orientation: OrientationAxis.CORONAL, label: 'Coronal' },
];
const VOLUME_3D = { id: 'mpr-3d', label: '3D' };
const MIN_SLICES = 3;

let loaderRegistered = false;

function registerVolumeLoader() {
  if (loaderRegistered) return;
  volumeLoader.registerUnknownVolumeLoader(cornerstoneStreamingImageVolumeLoader);
  volumeLoader.registerVolumeLoader('cornerstoneStreamingImageVolume', cornerstoneStreamingImageVolumeLoader);
  loaderRegistered = true;
}

/** Why a stack cannot be reconstructed, or null when it can. */
export function volumeProblem(imageIds) {
  if (imageIds.length < MIN_SLICES) return `MPR needs at least ${MIN_SLICES} slices.`;
  const first = metaData.get('imagePlaneModule', imageIds[0]);
  if (!first?.imagePositionPatient || !first?.rowCosines) {
    return 'MPR needs images with a position and orientation (CT, MR, PET).';
  }
  const frames = new Set(imageIds.map((imageId) => imageId.split('/frames/')[0]));
  if (frames.size === 1 && imageIds.length > 1) {
    const module = metaData.get('generalSeriesModule', imageIds[0]);
    if (module?.modality === 'US') return 'MPR is not available for ultrasound cine loops.';
  }
  return null;
}

export class MprView {
  constructor(viewer) {
    this.viewer = viewer;
    this.active = false;
    this.activeId = PLANES[0].id;
  }

  async toggle() {
    if (this.active) await this.exit();
    else await this.enter();
  }

  activeViewport() {
    return this.engine?.getViewport(this.activeId);
  }

  resize() {
    if (this.active) this.engine.resize(true, true);
  }

  /** Volumes need WebGL even where stacks draw on a canvas: a WebGL engine of their own. */
  webglEngine() {
    if (!this.engine) {
      setUseCPURendering(false, false);
      try {
        this.engine = new RenderingEngine(ENGINE_ID);
      } finally {
        setUseCPURendering(this.viewer.stackOnCpu, false);
      }
    }
    return this.engine;
  }

  async enter() {
    const viewer = this.viewer;
    if (!viewer.webgl) {
      viewer.status('MPR needs WebGL, which this browser does not offer.', true);
      return;
    }
    const source = viewer.slots[viewer.activeIndex];
    const problem = source.imageIds.length ? volumeProblem(source.imageIds) : 'Show a series first.';
    if (problem) {
      viewer.status(problem, true);
      return;
    }
    registerVolumeLoader();
    const engine = this.webglEngine();
    this.previousLayout = viewer.layoutName;
    this.source = source;
    for (const slot of viewer.slots) viewer.disableSlot(slot);
    viewer.dom.grid.dataset.layout = '2x2';
    viewer.dom.grid.dataset.mode = 'mpr';
    const frames = viewer.slots;
    for (const slot of frames) slot.frame.hidden = false;
    this.ids = [];
    // Volume viewports refuse to be made while the stacks' canvas rendering is on.
    setUseCPURendering(false, false);
    try {
      PLANES.forEach((plane, index) => {
        engine.enableElement({
          viewportId: plane.id,
          type: ViewportType.ORTHOGRAPHIC,
          element: frames[index].element,
          defaultOptions: { orientation: plane.orientation, background: [0, 0, 0] },
        });
        viewer.groups.mpr.addViewport(plane.id, ENGINE_ID);
        frames[index].frame.dataset.plane = plane.label;
        this.ids.push(plane.id);
      });
      engine.enableElement({
        viewportId: VOLUME_3D.id,
        type: ViewportType.VOLUME_3D,
        element: frames[3].element,
        defaultOptions: { background: [0.1, 0.1, 0.12] },
      });
      viewer.groups.threeD.addViewport(VOLUME_3D.id, ENGINE_ID);
      frames[3].frame.dataset.plane = VOLUME_3D.label;
      this.ids.push(VOLUME_3D.id);
    } finally {
      setUseCPURendering(viewer.stackOnCpu, false);
    }
    this.active = true;
    viewer.root.dataset.mode = 'mpr';
    viewer.dom.toolbar.querySelector('[data-action=mpr]').setAttribute('aria-pressed', 'true');
    for (const [index, id] of this.ids.entries()) {
      frames[index].frame.onpointerdown = () => {
        this.activeId = id;
        viewer.setActive(index);
      };
    }

    const volumeId = `cornerstoneStreamingImageVolume:${source.series.uid}`;
    viewer.status('Building the volume…');
    try {
      const volume =
        cache.getVolume(volumeId) ??
        (await volumeLoader.createAndCacheVolume(volumeId, { imageIds: source.imageIds }));
      volume.load?.();
      await setVolumesForViewports(engine, [{ volumeId }], this.ids.slice(0, 3));
      await setVolumesForViewports(engine, [{ volumeId }], [VOLUME_3D.id]);
      const threeD = engine.getViewport(VOLUME_3D.id);
      const modality = metaData.get('generalSeriesModule', source.imageIds[0])?.modality;
      threeD.setProperties({ preset: modality === 'CT' ? 'CT-Bone' : 'MR-Default' });
      engine.render();
      viewer.root.dataset.mprState = 'ready';
      viewer.status('MPR: axial, sagittal, coronal and 3D. Press M to go back to the stack.');
    } catch (error) {
      console.error(error);
      await this.exit();
      viewer.status(`MPR failed: ${error.message ?? error}`, true);
    }
  }

  async exit() {
    if (!this.active) return;
    const viewer = this.viewer;
    for (const id of this.ids) {
      if (id === VOLUME_3D.id) viewer.groups.threeD.removeViewports(ENGINE_ID, id);
      else viewer.groups.mpr.removeViewports(ENGINE_ID, id);
      this.engine.disableElement(id);
    }
    for (const slot of viewer.slots) {
      delete slot.frame.dataset.plane;
      slot.frame.onpointerdown = null;
    }
    this.active = false;
    delete viewer.root.dataset.mode;
    delete viewer.root.dataset.mprState;
    delete viewer.dom.grid.dataset.mode;
    viewer.dom.toolbar.querySelector('[data-action=mpr]').setAttribute('aria-pressed', 'false');
    viewer.setLayout(this.previousLayout ?? '1x1');
    if (!LAYOUTS[viewer.layoutName]) viewer.setLayout('1x1');
    viewer.status('');
  }
}

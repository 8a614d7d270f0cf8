// The viewer: a grid of viewports showing series read from the archive's DICOMweb.
import {
  Enums,
  RenderingEngine,
  eventTarget,
  getRenderingCapabilities,
  imageLoadPoolManager,
  init as coreInit,
  setUseCPURendering,
  imageLoader,
  metaData,
  utilities as csUtils,
} from '@cornerstonejs/core';
import { init as dicomImageLoaderInit, wadors } from '@cornerstonejs/dicom-image-loader';
import {
  annotation as annotationApi,
  init as toolsInit,
  synchronizers,
  utilities as toolUtils,
} from '@cornerstonejs/tools';

import { AnnotationStore } from './annotations.js';
import { firstSeries, value } from './dicomweb.js';
import { LAYOUTS, buildLayout, el } from './layout.js';
import { MprView } from './mpr.js';
import { createOverlay, updateOverlay } from './overlay.js';
import { PRIMARY_TOOLS, WINDOW_PRESETS, createToolGroups, setPrimaryTool } from './tools.js';

const ENGINE_ID = 'radpacs';
const SYNC_ID = 'radpacs-slice-sync';
const { ViewportType, Events, RequestType } = Enums;

/** Starts Cornerstone3D and the viewer on the page's root element. */
export async function startViewer(root, config, archive) {
  coreInit();
  dicomImageLoaderInit({
    maxWebWorkers: Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1)),
  });
  toolsInit();
  archive.metaDataManager = wadors.metaDataManager;
  const viewer = new Viewer(root, config, archive);
  // Tests and benchmarks read state and timings from here.
  window.radpacsViewer = viewer;
  await viewer.start();
  return viewer;
}

/**
 * The WebGL renderer's name, or null without WebGL. A software one (SwiftShader, llvmpipe:
 * no GPU, or a headless browser) draws a 2D stack several times slower than a canvas.
 */
function webglRenderer() {
  try {
    const gl = document.createElement('canvas').getContext('webgl2');
    if (!gl) return null;
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    const renderer = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    gl.getExtension('WEBGL_lose_context')?.loseContext();
    return renderer;
  } catch {
    return null;
  }
}

export class Viewer {
  constructor(root, config, archive) {
    this.root = root;
    this.config = config;
    this.archive = archive;
    this.layoutName = '1x1';
    this.activeIndex = 0;
    this.seriesByStudy = new Map();
    this.timings = {};
    this.cine = new Set();
  }

  async start() {
    this.dom = buildLayout(this.root, this.config);
    const renderer = webglRenderer();
    this.webgl = Boolean(renderer) && getRenderingCapabilities().webgl !== false;
    // Stacks draw on a canvas when WebGL is missing or only emulated; MPR and 3D keep
    // WebGL (their own engine, see mpr.js).
    // ?render=webgl or ?render=canvas overrides the choice (support, and tests of both).
    const forced = new URLSearchParams(window.location.search).get('render');
    this.stackOnCpu =
      !this.webgl ||
      (forced ? forced === 'canvas' : /swiftshader|llvmpipe|softpipe|software/i.test(renderer));
    this.root.dataset.renderer = this.stackOnCpu ? 'cpu' : 'webgl';
    setUseCPURendering(this.stackOnCpu, false);
    this.engine = new RenderingEngine(ENGINE_ID);
    this.groups = createToolGroups();
    this.slots = this.dom.slots.map((slot) => ({
      ...slot,
      viewportId: `stack-${slot.index}`,
      corners: createOverlay(slot.frame),
      imageIds: [],
      loaded: 0,
      loadToken: 0,
    }));
    this.annotations = new AnnotationStore({
      config: this.config,
      archive: this.archive,
      onStatus: (text, error) => this.status(text, error),
    });
    this.mpr = new MprView(this);
    this.bindUi();
    this.setLayout('1x1');
    this.setTool(PRIMARY_TOOLS[0].name);
    if (!this.webgl) {
      this.showBanner('WebGL is not available in this browser: stack view only (no MPR or 3D).');
      this.dom.toolbar.querySelector('[data-action=mpr]').disabled = true;
    }

    const [series] = await Promise.all([
      this.studySeries(this.config.studyInstanceUID),
      this.annotations.load().catch((error) => this.status(`Annotations not loaded: ${error.message}`, true)),
    ]);
    this.annotations.listen();
    this.renderSeriesList(series);
    this.renderPriors();
    const first = firstSeries(series);
    if (!first) {
      this.root.dataset.state = 'empty';
      this.status('This study has no images yet.');
      return;
    }
    await this.showSeries(0, first);
  }

  // ---- series and stacks -------------------------------------------------------------

  async studySeries(studyUID) {
    if (!this.seriesByStudy.has(studyUID)) {
      this.seriesByStudy.set(studyUID, this.archive.series(studyUID));
    }
    return this.seriesByStudy.get(studyUID);
  }

  viewport(index) {
    return this.engine.getViewport(this.slots[index].viewportId);
  }

  /** Shows a series in a viewport: the first image as soon as it arrives, the rest behind. */
  async showSeries(index, series) {
    const slot = this.slots[index];
    if (this.mpr.active) await this.mpr.exit();
    this.stopCine(index);
    const token = ++slot.loadToken;
    slot.series = series;
    slot.frame.dataset.seriesUid = series.uid;
    slot.frame.dataset.studyUid = series.studyUID;
    slot.message.textContent = 'Loading…';
    this.markSeries();
    let imageIds;
    try {
      imageIds = await this.archive.imageIds(series.studyUID, series.uid);
    } catch (error) {
      slot.message.textContent = `Cannot load this series: ${error.message}`;
      this.status(`Series not loaded: ${error.message}`, true);
      this.root.dataset.state = 'error';
      return;
    }
    if (token !== slot.loadToken) return;
    if (!imageIds.length) {
      slot.message.textContent = 'No images in this series.';
      return;
    }
    slot.imageIds = imageIds;
    slot.loaded = 0;
    slot.failed = 0;
    slot.slider.max = String(imageIds.length - 1);
    slot.slider.value = '0';
    slot.frame.dataset.total = String(imageIds.length);
    slot.frame.dataset.loaded = '0';
    const viewport = this.viewport(index);
    try {
      await viewport.setStack(imageIds, 0);
    } catch (error) {
      slot.message.textContent = `Cannot display this image: ${error.message ?? error}`;
      this.root.dataset.state = 'error';
      return;
    }
    if (token !== slot.loadToken) return;
    slot.message.textContent = '';
    viewport.render();
    this.setCineRate(slot);
    if (series.studyUID === this.config.studyInstanceUID) {
      if (this.annotations.restoreSeries(series.studyUID, series.uid)) viewport.render();
    }
    this.prefetch(slot, token);
  }

  /** Loads every image of the slot's stack into the cache, nearest to the current first. */
  prefetch(slot, token) {
    const { imageIds } = slot;
    const total = imageIds.length;
    const done = () => {
      if (token !== slot.loadToken) return;
      slot.loaded += 1;
      this.showProgress(slot);
    };
    this.showProgress(slot);
    const current = this.viewport(slot.index).getCurrentImageIdIndex?.() ?? 0;
    const order = imageIds
      .map((imageId, index) => ({ imageId, distance: Math.abs(index - current) }))
      .sort((a, b) => a.distance - b.distance);
    for (const { imageId } of order) {
      imageLoadPoolManager.addRequest(
        () =>
          imageLoader
            .loadAndCacheImage(imageId, { priority: 0, requestType: RequestType.Prefetch })
            .then(done, () => {
              slot.failed += 1;
              done();
            }),
        RequestType.Prefetch,
        { imageId },
      );
    }
    if (total === 0) this.showProgress(slot);
  }

  showProgress(slot) {
    const total = slot.imageIds.length;
    const done = slot.loaded >= total;
    // Repainting the page for every slice costs the browser more than the slice itself:
    // the bar moves at most every 250 ms, and once at the end.
    const now = performance.now();
    if (!done && slot.loaded > 0 && now - (slot.progressShownAt ?? 0) < 250) return;
    slot.progressShownAt = now;
    const percent = total ? Math.round((100 * slot.loaded) / total) : 100;
    slot.frame.dataset.loaded = String(slot.loaded);
    slot.progress.setAttribute('aria-valuenow', String(percent));
    slot.progress.firstChild.style.width = `${percent}%`;
    slot.progress.hidden = done;
    if (done && total) {
      if (slot.index === 0 && this.timings.seriesLoaded === undefined) {
        this.timings.seriesLoaded = performance.now();
      }
      if (slot.failed) this.status(`${slot.failed} image(s) of this series could not be loaded.`, true);
    }
    this.refreshOverlay(slot.index);
  }

  // ---- viewport events ---------------------------------------------------------------

  enableSlot(slot) {
    this.engine.enableElement({
      viewportId: slot.viewportId,
      type: ViewportType.STACK,
      element: slot.element,
      defaultOptions: { background: [0, 0, 0] },
    });
    this.groups.stack.addViewport(slot.viewportId, ENGINE_ID);
    if (!slot.listening) {
      slot.listening = true;
      slot.element.addEventListener(Events.STACK_NEW_IMAGE, () => this.refreshOverlay(slot.index));
      slot.element.addEventListener(Events.IMAGE_RENDERED, () => {
        this.refreshOverlay(slot.index);
        if (this.timings.firstImage === undefined && slot.imageIds.length) {
          this.timings.firstImage = performance.now();
          this.root.dataset.state = 'ready';
        }
      });
      slot.element.addEventListener(Events.VOI_MODIFIED, () => this.refreshOverlay(slot.index));
      slot.frame.addEventListener('pointerdown', () => this.setActive(slot.index), true);
      // Once set, the slider gives the keyboard back to the viewer's own arrow keys.
      slot.slider.addEventListener('change', () => slot.slider.blur());
      slot.slider.addEventListener('input', () => {
        if (slot.imageIds.length) {
          csUtils.jumpToSlice(slot.element, { imageIndex: Number(slot.slider.value) });
        }
      });
      slot.frame.addEventListener('dragover', (event) => event.preventDefault());
      slot.frame.addEventListener('drop', (event) => {
        event.preventDefault();
        const key = event.dataTransfer.getData('text/x-radpacs-series');
        const series = this.findSeries(key);
        if (series) this.showSeries(slot.index, series);
      });
    }
  }

  disableSlot(slot) {
    if (!this.engine.getViewport(slot.viewportId)) return;
    this.stopCine(slot.index);
    this.sync?.remove({ renderingEngineId: ENGINE_ID, viewportId: slot.viewportId });
    this.groups.stack.removeViewports(ENGINE_ID, slot.viewportId);
    this.engine.disableElement(slot.viewportId);
  }

  refreshOverlay(index) {
    const slot = this.slots[index];
    if (slot.overlayQueued) return;
    slot.overlayQueued = true;
    requestAnimationFrame(() => {
      slot.overlayQueued = false;
      const viewport = this.engine.getViewport(slot.viewportId);
      if (!viewport || !slot.imageIds.length) return;
      const position = viewport.getCurrentImageIdIndex();
      const ref = this.archive.imageRefs.get(slot.imageIds[position]);
      const voiText = updateOverlay(slot.corners, {
        viewport,
        ref,
        index: position,
        total: slot.imageIds.length,
        loaded: slot.loaded,
      });
      slot.slider.value = String(position);
      slot.frame.dataset.imageIndex = String(position);
      slot.frame.dataset.voi = voiText ?? '';
    });
  }

  // ---- layout, active viewport, tools ------------------------------------------------

  setLayout(name) {
    const count = LAYOUTS[name];
    if (!count) return;
    this.layoutName = name;
    this.dom.grid.dataset.layout = name;
    for (const slot of this.slots) {
      const visible = slot.index < count;
      slot.frame.hidden = !visible;
      if (!visible) this.disableSlot(slot);
    }
    // Visible frames have their size now; enable them and give back their stacks.
    for (const slot of this.slots.slice(0, count)) {
      if (!this.engine.getViewport(slot.viewportId)) {
        this.enableSlot(slot);
        if (slot.imageIds.length) {
          this.viewport(slot.index).setStack(slot.imageIds, 0).then(() => this.viewport(slot.index).render());
        }
      }
    }
    // New frame sizes: fit each image to its frame again.
    this.engine.resize(true, false);
    if (this.activeIndex >= count) this.setActive(0);
    for (const button of this.dom.toolbar.querySelectorAll('[data-layout]')) {
      button.setAttribute('aria-pressed', String(button.dataset.layout === name));
    }
  }

  setActive(index) {
    this.activeIndex = index;
    for (const slot of this.slots) slot.frame.classList.toggle('active', slot.index === index);
    this.markSeries();
  }

  activeViewport() {
    if (this.mpr.active) return this.mpr.activeViewport();
    return this.engine.getViewport(this.slots[this.activeIndex].viewportId);
  }

  setTool(toolName) {
    setPrimaryTool(this.groups, toolName);
    for (const button of this.dom.toolbar.querySelectorAll('[data-tool]')) {
      button.setAttribute('aria-pressed', String(button.dataset.tool === toolName));
    }
    this.root.dataset.tool = toolName;
  }

  applyPreset(key) {
    const preset = WINDOW_PRESETS.find((item) => item.key === key);
    const viewport = this.activeViewport();
    if (!preset || !viewport) return;
    viewport.setProperties({
      voiRange: csUtils.windowLevel.toLowHighRange(preset.width, preset.center),
    });
    viewport.render();
  }

  invert() {
    const viewport = this.activeViewport();
    if (!viewport) return;
    viewport.setProperties({ invert: !viewport.getProperties().invert });
    viewport.render();
  }

  flip(horizontal) {
    const viewport = this.activeViewport();
    if (!viewport) return;
    const camera = viewport.getCamera();
    viewport.setCamera(
      horizontal ? { flipHorizontal: !camera.flipHorizontal } : { flipVertical: !camera.flipVertical },
    );
    viewport.render();
  }

  rotate() {
    const viewport = this.activeViewport();
    if (!viewport) return;
    const { rotation = 0 } = viewport.getViewPresentation();
    viewport.setViewPresentation({ rotation: (rotation + 90) % 360 });
    viewport.render();
  }

  reset() {
    const viewport = this.activeViewport();
    if (!viewport) return;
    // Undo flips and rotation first: a canvas viewport's resetCamera keeps them
    // (Cornerstone 5.14), a WebGL one clears them.
    const { flipHorizontal, flipVertical } = viewport.getCamera();
    if (flipHorizontal || flipVertical) {
      viewport.setCamera({ flipHorizontal: false, flipVertical: false });
    }
    if (viewport.getViewPresentation?.().rotation) viewport.setViewPresentation({ rotation: 0 });
    viewport.resetCamera();
    viewport.resetProperties?.();
    viewport.render();
  }

  scroll(delta) {
    const viewport = this.activeViewport();
    if (viewport) csUtils.scroll(viewport, { delta });
  }

  jumpTo(where) {
    const slot = this.slots[this.activeIndex];
    if (this.mpr.active || !slot.imageIds.length) return;
    const imageIndex = where === 'first' ? 0 : slot.imageIds.length - 1;
    csUtils.jumpToSlice(slot.element, { imageIndex });
  }

  deleteSelected() {
    for (const selected of annotationApi.selection.getAnnotationsSelected() ?? []) {
      annotationApi.state.removeAnnotation(selected.annotationUID);
    }
    this.engine.render();
  }

  // ---- cine --------------------------------------------------------------------------

  setCineRate(slot) {
    const ref = this.archive.imageRefs.get(slot.imageIds[0]);
    const frameTime = Number(value(ref?.instance, '00181063'));
    const rate = Number(value(ref?.instance, '00082144')) || Number(value(ref?.instance, '00180040'));
    const fps = rate || (frameTime > 0 ? 1000 / frameTime : 0);
    if (fps && slot.index === this.activeIndex) this.dom.fps.value = String(Math.round(fps));
  }

  toggleCine() {
    const slot = this.slots[this.activeIndex];
    if (this.cine.has(slot.index)) {
      this.stopCine(slot.index);
      return;
    }
    if (this.mpr.active || slot.imageIds.length < 2) return;
    const framesPerSecond = Math.min(60, Math.max(1, Number(this.dom.fps.value) || 20));
    toolUtils.cine.playClip(slot.element, { framesPerSecond, loop: true });
    this.cine.add(slot.index);
    slot.frame.dataset.cine = 'playing';
    this.dom.toolbar.querySelector('[data-action=cine]').setAttribute('aria-pressed', 'true');
  }

  stopCine(index) {
    if (!this.cine.has(index)) return;
    toolUtils.cine.stopClip(this.slots[index].element);
    this.cine.delete(index);
    delete this.slots[index].frame.dataset.cine;
    if (!this.cine.size) {
      this.dom.toolbar.querySelector('[data-action=cine]').setAttribute('aria-pressed', 'false');
    }
  }

  // ---- series browser and priors -----------------------------------------------------

  seriesKey(series) {
    return `${series.studyUID}/${series.uid}`;
  }

  findSeries(key) {
    return this.allSeries?.get(key);
  }

  renderSeriesList(seriesList) {
    this.allSeries ??= new Map();
    const items = seriesList.map((series) => {
      this.allSeries.set(this.seriesKey(series), series);
      const thumbnail = el('img', {
        src: this.archive.thumbnailUrl(series.studyUID, series.uid),
        alt: '',
        loading: 'lazy',
        width: '64',
        height: '64',
      });
      const item = el(
        'li',
        {
          class: 'series-item',
          draggable: 'true',
          tabindex: '0',
          'data-series-uid': series.uid,
          title: 'Click to show in the active viewport, or drag onto a viewport',
        },
        thumbnail,
        el(
          'div',
          { class: 'series-text' },
          el('strong', { text: `${series.modality} ${series.number ?? ''}`.trim() }),
          el('span', { text: series.description || 'No description' }),
          el('small', { text: `${series.count} image${series.count === 1 ? '' : 's'}` }),
        ),
      );
      item.addEventListener('click', () => this.showSeries(this.activeIndex, series));
      item.addEventListener('keydown', (event) => {
        if (event.key === 'Enter') this.showSeries(this.activeIndex, series);
      });
      item.addEventListener('dragstart', (event) => {
        event.dataTransfer.setData('text/x-radpacs-series', this.seriesKey(series));
      });
      return item;
    });
    this.dom.seriesList.replaceChildren(...items);
    this.markSeries();
  }

  markSeries() {
    const shown = this.slots[this.activeIndex]?.series?.uid;
    for (const item of this.dom.seriesList.children) {
      item.classList.toggle('current', item.dataset.seriesUid === shown);
    }
  }

  renderPriors() {
    const priors = this.config.priors ?? [];
    if (!priors.length) {
      this.dom.priorsList.replaceChildren(el('li', { class: 'muted', text: 'No prior studies.' }));
      return;
    }
    this.dom.priorsList.replaceChildren(
      ...priors.map((prior) => {
        const compare = el('button', {
          type: 'button',
          text: 'Compare',
          title: 'Open beside the current study, scrolling linked by slice position',
          'data-prior': prior.studyInstanceUID,
        });
        compare.addEventListener('click', () => this.comparePrior(prior));
        return el(
          'li',
          { class: 'prior-item' },
          el(
            'div',
            {},
            el('strong', { text: formatPriorDate(prior.studyDate) }),
            el('span', {
              text: ` ${[prior.modalities, prior.studyDescription].filter(Boolean).join(' · ')}`,
            }),
            el('small', { text: ` · ${prior.numberOfInstances} images` }),
          ),
          compare,
          el('a', { href: prior.url, text: 'Open', title: 'Open this study on its own' }),
        );
      }),
    );
  }

  /** Opens the prior's best-matching series beside the current one, scrolling linked. */
  async comparePrior(prior) {
    if (this.mpr.active) await this.mpr.exit();
    if (this.layoutName === '1x1') this.setLayout('1x2');
    const current = this.slots[0].series;
    let priorSeries;
    try {
      priorSeries = await this.studySeries(prior.studyInstanceUID);
    } catch (error) {
      this.status(`Prior not loaded: ${error.message}`, true);
      return;
    }
    const candidates = priorSeries.filter((series) => series.count > 0);
    const match =
      candidates.find(
        (series) =>
          current &&
          series.modality === current.modality &&
          series.description &&
          series.description === current.description,
      ) ??
      candidates.find((series) => current && series.modality === current.modality) ??
      candidates[0];
    if (!match) {
      this.status('The prior study has no images.', true);
      return;
    }
    for (const series of priorSeries) this.allSeries.set(this.seriesKey(series), series);
    await this.showSeries(1, match);
    this.slots[1].frame.dataset.prior = 'true';
    this.setSync(false);
    this.setSync(true);
    this.status(`Prior of ${formatPriorDate(prior.studyDate)} beside the current study.`);
  }

  /**
   * Linked scrolling keeps the slices that are shown together now together: another
   * study's frame of reference is registered by the offset between the two current
   * slices (Cornerstone's own registration of 5.14 looks positions up by slice index).
   */
  setSync(on) {
    if (on && !this.sync) {
      this.sync = synchronizers.createImageSliceSynchronizer(SYNC_ID);
      const linked = this.slots.slice(0, LAYOUTS[this.layoutName]).filter((slot) => slot.imageIds.length);
      for (const slot of linked) {
        if (slot !== linked[0]) this.registerSlices(linked[0], slot);
        this.sync.add({ renderingEngineId: ENGINE_ID, viewportId: slot.viewportId });
      }
    } else if (!on && this.sync) {
      this.sync.destroy();
      this.sync = null;
    }
    this.dom.toolbar.querySelector('[data-action=sync]').setAttribute('aria-pressed', String(Boolean(this.sync)));
  }

  registerSlices(source, target) {
    const sourceViewport = this.viewport(source.index);
    const targetViewport = this.viewport(target.index);
    if (sourceViewport.getFrameOfReferenceUID() === targetViewport.getFrameOfReferenceUID()) return;
    const from = metaData.get('imagePlaneModule', sourceViewport.getCurrentImageId());
    const to = metaData.get('imagePlaneModule', targetViewport.getCurrentImageId());
    if (!from?.imagePositionPatient || !to?.imagePositionPatient) return;
    const sameOrientation = from.imageOrientationPatient?.every(
      (value, index) => Math.abs(value - to.imageOrientationPatient[index]) < 0.01,
    );
    if (!sameOrientation) return;
    const offset = to.imagePositionPatient.map((value, index) => value - from.imagePositionPatient[index]);
    const matrix = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, offset[0], offset[1], offset[2], 1];
    csUtils.spatialRegistrationMetadataProvider.add([target.viewportId, source.viewportId], matrix);
  }

  // ---- page chrome -------------------------------------------------------------------

  status(text, error = false) {
    this.dom.status.textContent = text;
    this.dom.status.classList.toggle('error', Boolean(error));
  }

  showBanner(text) {
    this.dom.banner.textContent = text;
    this.dom.banner.hidden = false;
  }

  bindUi() {
    const toolbar = this.dom.toolbar;
    toolbar.addEventListener('click', (event) => {
      const target = event.target.closest('button');
      if (!target) return;
      if (target.dataset.tool) this.setTool(target.dataset.tool);
      if (target.dataset.layout) this.setLayout(target.dataset.layout);
      const actions = {
        invert: () => this.invert(),
        'flip-h': () => this.flip(true),
        'flip-v': () => this.flip(false),
        rotate: () => this.rotate(),
        reset: () => this.reset(),
        cine: () => this.toggleCine(),
        mpr: () => this.mpr.toggle(),
        sync: () => this.setSync(!this.sync),
        'series-panel': () => this.root.classList.toggle('side-hidden'),
        help: () => this.dom.help.showModal(),
      };
      actions[target.dataset.action]?.();
    });
    this.dom.presetSelect.addEventListener('change', () => {
      this.applyPreset(this.dom.presetSelect.value);
      this.dom.presetSelect.value = '';
    });
    document.addEventListener('keydown', (event) => this.onKey(event));
    window.addEventListener('resize', () => {
      this.engine.resize(true, true);
      this.mpr.resize();
    });
    eventTarget.addEventListener(Events.IMAGE_LOAD_FAILED, (event) => {
      this.status(`Image not loaded: ${event.detail?.error?.message ?? event.detail?.imageId ?? ''}`, true);
    });
    // Phones start with the series browser folded away.
    if (window.matchMedia('(max-width: 700px)').matches) this.root.classList.add('side-hidden');
  }

  onKey(event) {
    if (event.target.closest?.('input, select, textarea') || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (this.dom.help.open) return;
    const key = event.key;
    const tool = PRIMARY_TOOLS.find((item) => item.key === key.toLowerCase());
    const preset = WINDOW_PRESETS.find((item) => item.key === key);
    const actions = {
      ArrowUp: () => this.scroll(-1),
      PageUp: () => this.scroll(-1),
      ArrowDown: () => this.scroll(1),
      PageDown: () => this.scroll(1),
      Home: () => this.jumpTo('first'),
      End: () => this.jumpTo('last'),
      i: () => this.invert(),
      h: () => this.flip(true),
      v: () => this.flip(false),
      '.': () => this.rotate(),
      0: () => this.reset(),
      Escape: () => this.reset(),
      ' ': () => this.toggleCine(),
      m: () => this.webgl && this.mpr.toggle(),
      Delete: () => this.deleteSelected(),
      Backspace: () => this.deleteSelected(),
      '?': () => this.dom.help.showModal(),
    };
    const action = actions[key] ?? actions[key.toLowerCase()] ??
      (tool ? () => this.setTool(tool.name) : preset ? () => this.applyPreset(preset.key) : null);
    if (!action) return;
    event.preventDefault();
    action();
  }
}

function formatPriorDate(da) {
  return da && da.length === 8 ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : da || 'Undated';
}


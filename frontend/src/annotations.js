// Measurements and annotations saved per user on the server, so they come back on reopen.
// The server stores each annotation as an opaque payload keyed by its UID; image references
// are kept as UIDs and frame numbers, not URLs, so a saved annotation survives a host or
// path-prefix change.
import { eventTarget } from '@cornerstonejs/core';
import { annotation as annotationApi, Enums as ToolEnums } from '@cornerstonejs/tools';
import { ANNOTATION_TOOLS } from './tools.js';

const { Events } = ToolEnums;
const SAVE_DELAY_MS = 400;

export class AnnotationStore {
  constructor({ config, archive, onStatus }) {
    this.config = config;
    this.archive = archive;
    this.onStatus = onStatus ?? (() => {});
    this.saved = [];
    this.restoredSeries = new Set();
    this.timers = new Map();
    this.restoring = false;
    this.pending = new Set();
  }

  async load() {
    if (!this.config.annotationsUrl) return;
    const response = await fetch(this.config.annotationsUrl, { credentials: 'same-origin' });
    if (!response.ok) throw new Error(`annotations: ${response.status}`);
    this.saved = (await response.json()).annotations ?? [];
  }

  listen() {
    const schedule = (evt) => this.schedule(evt.detail.annotation);
    eventTarget.addEventListener(Events.ANNOTATION_COMPLETED, schedule);
    eventTarget.addEventListener(Events.ANNOTATION_MODIFIED, schedule);
    eventTarget.addEventListener(Events.ANNOTATION_REMOVED, (evt) =>
      this.remove(evt.detail.annotation),
    );
  }

  /** Puts this user's saved annotations of a series back on its images. */
  restoreSeries(studyUID, seriesUID) {
    const key = `${studyUID}/${seriesUID}`;
    if (this.restoredSeries.has(key)) return 0;
    this.restoredSeries.add(key);
    let count = 0;
    this.restoring = true;
    try {
      for (const saved of this.saved) {
        if (saved.seriesInstanceUID !== seriesUID) continue;
        const { metadata, data } = saved.data;
        const referencedImageId = this.archive.imageIdFor(
          studyUID,
          seriesUID,
          saved.sopInstanceUID,
          saved.frameNumber,
        );
        const restored = {
          annotationUID: saved.uid,
          highlighted: false,
          invalidated: true,
          isLocked: false,
          isVisible: true,
          metadata: { ...metadata, toolName: saved.toolName, referencedImageId },
          data: { ...data, cachedStats: {} },
        };
        annotationApi.state.addAnnotation(restored, metadata.FrameOfReferenceUID);
        count += 1;
      }
    } finally {
      this.restoring = false;
    }
    return count;
  }

  schedule(annotation) {
    if (this.restoring || !annotation) return;
    if (!ANNOTATION_TOOLS.has(annotation.metadata?.toolName)) return;
    const uid = annotation.annotationUID;
    clearTimeout(this.timers.get(uid));
    this.pending.add(uid);
    document.body.dataset.annotationsPending = String(this.pending.size);
    this.timers.set(
      uid,
      setTimeout(() => this.save(annotation), SAVE_DELAY_MS),
    );
  }

  async save(annotation) {
    const uid = annotation.annotationUID;
    this.timers.delete(uid);
    const ref = this.archive.imageRefs.get(annotation.metadata.referencedImageId);
    if (!ref) {
      this.pending.delete(uid);
      return; // Drawn on a reconstructed (MPR) plane: nothing to anchor it to.
    }
    const { referencedImageId, ...metadata } = annotation.metadata;
    const { cachedStats, ...data } = annotation.data;
    const known = this.saved.find((saved) => saved.uid === uid);
    if (known && drawing(known.data.data) === drawing(data)) {
      // Only recomputed statistics or label placement, e.g. on reopening: nothing to save.
      this.pending.delete(uid);
      document.body.dataset.annotationsPending = String(this.pending.size);
      return;
    }
    const body = {
      studyInstanceUID: ref.studyUID,
      seriesInstanceUID: ref.seriesUID,
      sopInstanceUID: ref.sopUID,
      frameNumber: ref.frames > 1 ? ref.frame : null,
      toolName: metadata.toolName,
      data: { metadata, data },
    };
    try {
      const response = await fetch(`${this.config.annotationsBase}${uid}/`, {
        method: 'PUT',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRFToken': this.config.csrfToken },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const reason = await response.text();
        this.onStatus(`Annotation not saved: ${response.status} ${reason.slice(0, 200)}`, true);
        return;
      }
      const record = await response.json();
      const index = this.saved.findIndex((saved) => saved.uid === uid);
      if (index >= 0) this.saved[index] = record;
      else this.saved.push(record);
      this.onStatus('Annotation saved');
    } catch (error) {
      this.onStatus(`Annotation not saved: ${error.message}`, true);
    } finally {
      this.pending.delete(uid);
      document.body.dataset.annotationsPending = String(this.pending.size);
    }
  }

  async remove(annotation) {
    if (!annotation || !ANNOTATION_TOOLS.has(annotation.metadata?.toolName)) return;
    const uid = annotation.annotationUID;
    clearTimeout(this.timers.get(uid));
    this.timers.delete(uid);
    this.pending.delete(uid);
    if (!this.saved.some((saved) => saved.uid === uid)) return;
    const response = await fetch(`${this.config.annotationsBase}${uid}/`, {
      method: 'DELETE',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': this.config.csrfToken },
    });
    if (response.ok || response.status === 404) {
      this.saved = this.saved.filter((saved) => saved.uid !== uid);
      this.onStatus('Annotation deleted');
    } else {
      this.onStatus(`Annotation not deleted: ${response.status}`, true);
    }
  }
}

/** What the user drew: handle points, label, and the label's place once they moved it. */
function drawing(data) {
  const { points, textBox } = data?.handles ?? {};
  return JSON.stringify([points, data?.label ?? '', textBox?.hasMoved ? textBox.worldPosition : null]);
}

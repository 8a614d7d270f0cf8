// Corner text on each viewport: who, what, where in the stack, window/level.
import { utilities } from '@cornerstonejs/core';

import { value, personName, formatDate } from './dicomweb.js';

export function createOverlay(element) {
  const corners = {};
  for (const corner of ['tl', 'tr', 'bl', 'br']) {
    const div = document.createElement('div');
    div.className = `overlay overlay-${corner}`;
    element.appendChild(div);
    corners[corner] = div;
  }
  return corners;
}

function lines(div, texts) {
  div.replaceChildren(
    ...texts.filter(Boolean).map((text) => {
      const line = document.createElement('div');
      line.textContent = text;
      return line;
    }),
  );
}

/** Refreshes the four corners from the viewport's current image and properties. */
export function updateOverlay(corners, { viewport, ref, index, total, loaded }) {
  const instance = ref?.instance;
  if (!instance) {
    for (const div of Object.values(corners)) div.replaceChildren();
    return;
  }
  const sex = value(instance, '00100040') || '';
  const birth = formatDate(value(instance, '00100030'));
  lines(corners.tl, [
    personName(value(instance, '00100010')),
    `ID ${value(instance, '00100020') || '—'}`,
    [birth, sex].filter(Boolean).join(' · '),
  ]);
  lines(corners.tr, [
    value(instance, '00081030') || '',
    `${formatDate(value(instance, '00080020'))} ${formatTime(value(instance, '00080030'))}`.trim(),
    value(instance, '00080050') ? `Acc ${value(instance, '00080050')}` : '',
    value(instance, '00080080') || '',
  ]);
  const sliceLocation = value(instance, '00201041');
  const thickness = value(instance, '00180050');
  const frameText = ref.frames > 1 ? ` · frame ${ref.frame}/${ref.frames}` : '';
  lines(corners.bl, [
    `Se ${value(instance, '00200011') ?? '—'}: ${value(instance, '0008103E') || ''}`,
    `Im ${index + 1}/${total}${frameText}`,
    sliceLocation !== undefined ? `Loc ${Number(sliceLocation).toFixed(1)} mm` : '',
    thickness !== undefined ? `Thick ${Number(thickness).toFixed(1)} mm` : '',
    loaded < total ? `Loading ${loaded}/${total}` : '',
  ]);
  const { voiRange, invert } = viewport.getProperties?.() ?? {};
  let voiText = '';
  if (voiRange) {
    const { windowWidth, windowCenter } = utilities.windowLevel.toWindowLevel(
      voiRange.lower,
      voiRange.upper,
    );
    voiText = `W ${Math.round(windowWidth)} L ${Math.round(windowCenter)}`;
  }
  const zoom = relativeZoom(viewport, instance);
  lines(corners.br, [
    voiText,
    zoom ? `Zoom ${zoom.toFixed(2)}x` : '',
    invert ? 'Inverted' : '',
    value(instance, '00080060') || '',
  ]);
  return voiText;
}

function formatTime(tm) {
  return tm && tm.length >= 4 ? `${tm.slice(0, 2)}:${tm.slice(2, 4)}` : '';
}

/**
 * Zoom relative to the image fitted in its frame (1.00x), on WebGL and canvas alike: a
 * canvas viewport reports its raw scale (canvas pixels per image pixel) instead.
 */
function relativeZoom(viewport, instance) {
  const zoom = viewport.getZoom?.();
  if (!zoom || !viewport.useCPURendering) return zoom;
  const rows = Number(value(instance, '00280010'));
  const columns = Number(value(instance, '00280011'));
  const { width, height } = viewport.canvas ?? {};
  if (!rows || !columns || !width || !height) return zoom;
  return zoom / Math.min(width / columns, height / rows);
}

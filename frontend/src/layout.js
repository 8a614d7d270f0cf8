// The page's DOM: toolbar, series browser, viewport grid, status line and help overlay.
import { PRIMARY_TOOLS, WINDOW_PRESETS } from './tools.js';
import { personName, formatDate } from './dicomweb.js';

export const LAYOUTS = { '1x1': 1, '1x2': 2, '2x2': 4 };
export const MAX_VIEWPORTS = 4;

export const SHORTCUTS = [
  ['↑ / ↓, PgUp / PgDn, wheel', 'Previous / next image'],
  ['Home / End', 'First / last image'],
  ...PRIMARY_TOOLS.map((tool) => [tool.key.toUpperCase(), tool.title]),
  ...WINDOW_PRESETS.map((preset) => [preset.key, `Window preset: ${preset.label}`]),
  ['I', 'Invert'],
  ['H / V', 'Flip horizontal / vertical'],
  ['.', 'Rotate 90°'],
  ['0 or Esc', 'Reset the view'],
  ['Space', 'Play / stop cine'],
  ['M', 'MPR on / off'],
  ['Delete', 'Delete the selected measurement'],
  ['?', 'This help'],
  ['Mouse', 'Left: tool · middle: pan · right: zoom · wheel: scroll'],
  ['Touch', 'One finger: tool · pinch: zoom and pan'],
];

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, val] of Object.entries(attributes)) {
    if (name === 'text') node.textContent = val;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), val);
    else if (val !== false && val !== undefined && val !== null) node.setAttribute(name, val === true ? '' : val);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

export { el };

export function buildLayout(root, config) {
  const patient = config.patient ?? {};
  const study = config.study ?? {};
  const button = (action, label, title, extra = {}) =>
    el('button', { type: 'button', 'data-action': action, title, text: label, ...extra });

  const toolButtons = PRIMARY_TOOLS.map((tool) =>
    el('button', {
      type: 'button',
      'data-tool': tool.name,
      title: `${tool.title} (${tool.key.toUpperCase()})`,
      text: tool.label,
      'aria-pressed': 'false',
    }),
  );
  const presetSelect = el(
    'select',
    { 'data-control': 'preset', title: 'Window presets', 'aria-label': 'Window preset' },
    el('option', { value: '', text: 'Window…' }),
    ...WINDOW_PRESETS.map((preset) =>
      el('option', { value: preset.key, text: `${preset.label} (${preset.width}/${preset.center})` }),
    ),
  );
  const layoutButtons = Object.keys(LAYOUTS).map((name) =>
    el('button', { type: 'button', 'data-layout': name, title: `Layout ${name}`, text: name, 'aria-pressed': 'false' }),
  );
  const fps = el('input', {
    type: 'number', min: '1', max: '60', value: '20', 'data-control': 'fps',
    title: 'Cine frame rate (frames/s)', 'aria-label': 'Frames per second',
  });

  const toolbar = el(
    'header',
    { class: 'vw-bar' },
    el('a', { class: 'vw-back', href: config.backUrl || '/', target: '_top', title: 'Back to the study list', text: '←' }),
    el(
      'div',
      { class: 'vw-title' },
      el('strong', { text: personName(patient.name) || 'Unknown patient' }),
      el('span', {
        text: ` ${patient.id ? `ID ${patient.id} · ` : ''}${formatDate(study.date)} ${study.description || ''}`,
      }),
    ),
    el('div', { class: 'vw-group', role: 'group', 'aria-label': 'Tools' }, ...toolButtons),
    el('div', { class: 'vw-group' }, presetSelect),
    el(
      'div',
      { class: 'vw-group', role: 'group', 'aria-label': 'View' },
      button('invert', 'Invert', 'Invert (I)'),
      button('flip-h', 'Flip H', 'Flip horizontally (H)'),
      button('flip-v', 'Flip V', 'Flip vertically (V)'),
      button('rotate', 'Rotate 90°', 'Rotate 90° clockwise (.)'),
      button('reset', 'Reset', 'Reset the view (0)'),
    ),
    el('div', { class: 'vw-group', role: 'group', 'aria-label': 'Layout' }, ...layoutButtons),
    el(
      'div',
      { class: 'vw-group', role: 'group', 'aria-label': 'Cine' },
      button('cine', '▶ Cine', 'Play / stop (Space)', { 'aria-pressed': 'false' }),
      fps,
      el('span', { class: 'vw-unit', text: 'fps' }),
    ),
    el(
      'div',
      { class: 'vw-group' },
      button('mpr', 'MPR', 'Axial, sagittal, coronal and 3D (M)', { 'aria-pressed': 'false' }),
      button('sync', 'Link', 'Scroll linked viewports together by slice position', { 'aria-pressed': 'false' }),
      button('series-panel', 'Series', 'Show or hide the series browser'),
      button('help', '?', 'Keyboard shortcuts (?)'),
    ),
  );

  const seriesList = el('ul', { class: 'series-list', 'aria-label': 'Series' });
  const priorsList = el('ul', { class: 'priors-list', 'aria-label': 'Prior studies' });
  const side = el(
    'aside',
    { class: 'vw-side' },
    el('h2', { text: 'Series' }),
    seriesList,
    el('h2', { text: 'Prior studies' }),
    priorsList,
  );

  const grid = el('section', { class: 'vw-grid', 'data-layout': '1x1', 'aria-label': 'Viewports' });
  const slots = [];
  for (let index = 0; index < MAX_VIEWPORTS; index += 1) {
    const canvas = el('div', { class: 'vp-element', 'data-testid': `viewport-${index}` });
    const progress = el('div', { class: 'vp-progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, el('span'));
    const slider = el('input', {
      type: 'range', class: 'vp-slider', min: '0', max: '0', value: '0',
      'aria-label': `Image in viewport ${index + 1}`,
    });
    const message = el('div', { class: 'vp-message' });
    const frame = el('div', { class: 'vp', 'data-index': String(index), hidden: index > 0 }, canvas, slider, progress, message);
    grid.append(frame);
    slots.push({ index, frame, element: canvas, slider, progress, message });
  }

  const status = el('div', { class: 'vw-status', role: 'status', 'aria-live': 'polite' });
  const banner = el('div', { class: 'vw-banner', hidden: true });
  const help = el(
    'dialog',
    { class: 'vw-help', 'aria-label': 'Keyboard shortcuts' },
    el('h2', { text: 'Keyboard and mouse' }),
    el(
      'table',
      {},
      el('tbody', {}, ...SHORTCUTS.map(([keys, what]) => el('tr', {}, el('th', { text: keys }), el('td', { text: what })))),
    ),
    el('form', { method: 'dialog' }, el('button', { type: 'submit', text: 'Close' })),
  );

  root.replaceChildren(toolbar, banner, el('div', { class: 'vw-main' }, side, grid), status, help);
  return { toolbar, side, seriesList, priorsList, grid, slots, status, banner, help, fps, presetSelect };
}

// Tool groups and mouse/touch bindings: one place that says what each button does.
import {
  addTool,
  AngleTool,
  EllipticalROITool,
  Enums as ToolEnums,
  LengthTool,
  PanTool,
  PlanarRotateTool,
  RectangleROITool,
  StackScrollTool,
  ToolGroupManager,
  TrackballRotateTool,
  WindowLevelTool,
  ZoomTool,
} from '@cornerstonejs/tools';

const { MouseBindings } = ToolEnums;

export const STACK_GROUP = 'radpacs-stack';
export const MPR_GROUP = 'radpacs-mpr';
export const VOLUME_3D_GROUP = 'radpacs-3d';

/** Tools the left button (or one finger) can hold; the key is the keyboard shortcut. */
export const PRIMARY_TOOLS = [
  { name: WindowLevelTool.toolName, label: 'W/L', key: 'w', title: 'Window/level: drag' },
  { name: PanTool.toolName, label: 'Pan', key: 'p', title: 'Pan' },
  { name: ZoomTool.toolName, label: 'Zoom', key: 'z', title: 'Zoom: drag up/down' },
  { name: PlanarRotateTool.toolName, label: 'Rotate', key: 't', title: 'Free rotate' },
  { name: LengthTool.toolName, label: 'Length', key: 'l', title: 'Measure a length' },
  { name: AngleTool.toolName, label: 'Angle', key: 'a', title: 'Measure an angle' },
  { name: RectangleROITool.toolName, label: 'Rect ROI', key: 'r', title: 'Rectangle ROI: mean, std' },
  { name: EllipticalROITool.toolName, label: 'Ellipse ROI', key: 'e', title: 'Ellipse ROI: mean, std' },
];

export const ANNOTATION_TOOLS = new Set([
  LengthTool.toolName,
  AngleTool.toolName,
  RectangleROITool.toolName,
  EllipticalROITool.toolName,
]);

let registered = false;

export function registerTools() {
  if (registered) return;
  for (const tool of [
    WindowLevelTool,
    PanTool,
    ZoomTool,
    PlanarRotateTool,
    StackScrollTool,
    LengthTool,
    AngleTool,
    RectangleROITool,
    EllipticalROITool,
    TrackballRotateTool,
  ]) {
    addTool(tool);
  }
  registered = true;
}

/**
 * Mouse: left = the chosen tool, middle = pan, right = zoom, wheel = scroll.
 * Touch: one finger = the chosen tool, pinch = zoom and pan together.
 */
function bindNavigation(group) {
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  group.setToolActive(ZoomTool.toolName, {
    bindings: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }],
  });
  group.setToolActive(StackScrollTool.toolName, {
    bindings: [{ mouseButton: MouseBindings.Wheel }],
  });
}

function addGroup(id) {
  const group = ToolGroupManager.createToolGroup(id);
  for (const { name } of PRIMARY_TOOLS) {
    group.addTool(name, name === ZoomTool.toolName ? { pinchToZoom: true, pan: true } : {});
  }
  group.addTool(StackScrollTool.toolName);
  bindNavigation(group);
  // A tool draws its saved measurements only when enabled: passive shows and lets them be
  // edited without holding a button.
  for (const name of ANNOTATION_TOOLS) group.setToolPassive(name);
  return group;
}

export function createToolGroups() {
  registerTools();
  const stack = addGroup(STACK_GROUP);
  const mpr = addGroup(MPR_GROUP);
  const threeD = ToolGroupManager.createToolGroup(VOLUME_3D_GROUP);
  threeD.addTool(TrackballRotateTool.toolName);
  threeD.addTool(ZoomTool.toolName, { pinchToZoom: true, pan: true });
  threeD.addTool(PanTool.toolName);
  threeD.setToolActive(TrackballRotateTool.toolName, {
    bindings: [{ mouseButton: MouseBindings.Primary }, { numTouchPoints: 1 }],
  });
  threeD.setToolActive(ZoomTool.toolName, {
    bindings: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }],
  });
  threeD.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  return { stack, mpr, threeD };
}

/**
 * Give the left button and one-finger touch to `toolName` in the 2D groups. The previous
 * holder loses only those bindings (pan keeps the middle button, zoom the right).
 */
export function setPrimaryTool(groups, toolName) {
  for (const group of [groups.stack, groups.mpr]) {
    const current = group.getActivePrimaryMouseButtonTool();
    if (current && current !== toolName) group.setToolPassive(current);
    group.setToolActive(toolName, {
      bindings: [{ mouseButton: MouseBindings.Primary }, { numTouchPoints: 1 }],
    });
  }
}

/** Window presets (width, center), in HU. */
export const WINDOW_PRESETS = [
  { key: '1', label: 'Soft tissue', width: 400, center: 40 },
  { key: '2', label: 'Lung', width: 1500, center: -600 },
  { key: '3', label: 'Bone', width: 2000, center: 300 },
  { key: '4', label: 'Brain', width: 80, center: 40 },
];

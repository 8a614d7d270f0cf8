// The reading page: tabs on small screens, pick-lists in the report editor, autosave,
// and the prior exams' images shown in the viewer frame. Without script the page still
// works: the sections are plain fields of a form that saves and signs.

const PICK = /\[\[([^\[\]|:]+?)(?::([^\[\]]*))?\]\]/g;

function csrfToken(form) {
  const input = form.querySelector('input[name="csrfmiddlewaretoken"]');
  return input ? input.value : '';
}

// ---- tabs (small screens) ---------------------------------------------------------------

function setUpTabs(reading) {
  const tabs = reading.querySelectorAll('[data-tab]');
  const show = (name) => {
    reading.dataset.active = name;
    for (const tab of tabs) tab.setAttribute('aria-selected', String(tab.dataset.tab === name));
  };
  for (const tab of tabs) tab.addEventListener('click', () => show(tab.dataset.tab));
  show('report');
  for (const link of reading.querySelectorAll('[data-show-images]')) {
    link.addEventListener('click', () => show('images'));
  }
}

// ---- pick-lists -----------------------------------------------------------------------------

function placeholders(text) {
  const found = [];
  for (const match of text.matchAll(PICK)) {
    const choices = (match[2] ?? '').split('|').map((c) => c.trim()).filter(Boolean);
    found.push({ raw: match[0], label: match[1].trim(), choices });
  }
  return found;
}

function renderPicks(textarea, panel, onChange) {
  const found = placeholders(textarea.value);
  panel.replaceChildren();
  panel.hidden = found.length === 0;
  for (const item of found) {
    const label = document.createElement('label');
    label.className = 'pick';
    label.append(item.label + ' ');
    let control;
    if (item.choices.length) {
      control = document.createElement('select');
      control.append(new Option('choose…', ''));
      for (const choice of item.choices) control.append(new Option(choice, choice));
    } else {
      control = document.createElement('input');
      control.type = 'text';
      control.placeholder = 'type, then Enter';
    }
    control.dataset.pick = item.raw;
    const apply = () => {
      const value = control.value.trim();
      if (!value) return;
      const at = textarea.value.indexOf(item.raw);
      if (at < 0) return;
      textarea.value = textarea.value.slice(0, at) + value + textarea.value.slice(at + item.raw.length);
      renderPicks(textarea, panel, onChange);
      onChange();
    };
    if (control.tagName === 'SELECT') control.addEventListener('change', apply);
    else control.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') { event.preventDefault(); apply(); }
    });
    label.append(control);
    panel.append(label);
  }
}

// ---- the editor: sections, autosave -------------------------------------------------------------

function setUpEditor(form) {
  const areas = [...form.querySelectorAll('textarea[data-section]')];
  const revision = form.querySelector('[data-revision]');
  const state = form.querySelector('[data-save-state]');
  const url = form.dataset.autosave;
  const readonly = 'readonly' in form.dataset;
  let timer = null;
  let saving = false;
  let dirty = false;

  const sections = () => areas.map((area) => ({
    title: area.closest('.report-field').querySelector('[data-title]').value,
    text: area.value,
  }));

  const save = async () => {
    if (saving || !dirty || readonly) return;
    saving = true;
    dirty = false;
    state.textContent = 'saving…';
    try {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRFToken': csrfToken(form) },
        body: JSON.stringify({ sections: sections(), revision: Number(revision.value) }),
        credentials: 'same-origin',
      });
      const body = await response.json();
      if (response.ok) {
        revision.value = body.revision;
        state.textContent = `saved ${new Date(body.savedAt).toLocaleTimeString()}`;
        state.classList.remove('error');
      } else {
        state.textContent = `not saved: ${body.error}`;
        state.classList.add('error');
      }
    } catch {
      dirty = true;
      state.textContent = 'not saved (offline?): trying again';
      state.classList.add('error');
    } finally {
      saving = false;
      if (dirty) schedule();
    }
  };

  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(save, 2000);
  };
  const changed = () => {
    dirty = true;
    state.textContent = 'editing…';
    schedule();
  };

  for (const area of areas) {
    const panel = document.createElement('div');
    panel.className = 'picks';
    area.after(panel);
    renderPicks(area, panel, changed);
    area.addEventListener('input', changed);
    area.addEventListener('blur', () => renderPicks(area, panel, changed));
  }
  // Macros go where the cursor was in the last section the radiologist was in.
  let lastArea = areas[0];
  for (const area of areas) area.addEventListener('focus', () => { lastArea = area; });
  const macros = form.querySelector('[data-macros]');
  if (macros && !readonly) {
    macros.hidden = false;
    macros.querySelector('[data-macro-insert]').addEventListener('click', () => {
      const id = macros.querySelector('[data-macro-select]').value;
      const source = macros.querySelector(`template[data-macro-text="${id}"]`);
      if (!source || !lastArea) return;
      const words = source.content.textContent;
      const { selectionStart: start, selectionEnd: end, value } = lastArea;
      lastArea.value = value.slice(0, start) + words + value.slice(end);
      lastArea.focus();
      lastArea.selectionStart = lastArea.selectionEnd = start + words.length;
      lastArea.dispatchEvent(new Event('input'));
      lastArea.dispatchEvent(new Event('blur'));
    });
  }

  let submitting = false;
  form.addEventListener('submit', () => {
    submitting = true; // the form carries the words: leaving is what it is for
    clearTimeout(timer);
    const hidden = document.createElement('input');
    hidden.type = 'hidden';
    hidden.name = 'sections';
    hidden.value = JSON.stringify(sections());
    form.append(hidden);
  });
  window.addEventListener('beforeunload', (event) => {
    if (!submitting && (dirty || saving)) event.preventDefault();
  });
}

// ---- the printable report ---------------------------------------------------------------------

for (const button of document.querySelectorAll('[data-print]')) {
  button.addEventListener('click', () => window.print());
}
for (const select of document.querySelectorAll('[data-autosubmit]')) {
  select.addEventListener('change', () => select.form.submit());
}

const reading = document.querySelector('[data-reading]');
if (reading) setUpTabs(reading);
const editor = document.querySelector('[data-editor]');
if (editor) setUpEditor(editor);

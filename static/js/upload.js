// Upload DICOM files one request each, so every file shows its own progress and result.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const list = document.getElementById("upload-list");
  const summary = document.getElementById("upload-summary");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const CONCURRENCY = 3;

  function row(file) {
    const item = document.createElement("li");
    item.className = "upload";
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.webkitRelativePath || file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    const result = document.createElement("span");
    result.className = "upload-result";
    item.append(name, bar, result);
    list.append(item);
    return { item, bar, result };
  }

  function send(file, facility, view) {
    return new Promise((resolve) => {
      const data = new FormData();
      data.append("facility", facility);
      data.append("file", file);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.url);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) view.bar.value = (100 * event.loaded) / event.total;
      };
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = {}; }
        const ok = xhr.status === 200 || xhr.status === 201;
        view.bar.value = 100;
        view.item.classList.add(ok ? "ok" : "failed");
        view.result.textContent = ok ? (body.outcome === "stored" ? "stored" : "already stored")
          : (body.error || "failed (" + xhr.status + ")");
        resolve(ok);
      };
      xhr.onerror = () => {
        view.item.classList.add("failed");
        view.result.textContent = "network error";
        resolve(false);
      };
      xhr.send(data);
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const files = [...document.getElementById("files").files, ...document.getElementById("folder").files];
    if (!files.length) { summary.textContent = "Choose files or a folder first."; return; }
    const facility = document.getElementById("facility").value;
    list.replaceChildren();
    const queue = files.map((file) => ({ file, view: row(file) }));
    let done = 0, failed = 0;
    summary.textContent = `Uploading ${files.length} files…`;
    async function worker() {
      while (queue.length) {
        const { file, view } = queue.shift();
        const ok = await send(file, facility, view);
        done += 1;
        if (!ok) failed += 1;
        summary.textContent = `${done} of ${files.length} files sent, ${failed} refused.`;
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    summary.textContent = `Done: ${files.length - failed} stored, ${failed} refused.`;
  });
})();

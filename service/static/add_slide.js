// "Add slide": upload a new slide, follow its job's stages, select it when done (see service/jobs_app.py).
// Self-contained: it adds its own section under the slide list and talks only to the REST API.
(function () {
  "use strict";
  const API = "/api/v1";
  const POLL_MS = 500;

  function element(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.assign(node, attrs || {});
    if (text) node.textContent = text;
    return node;
  }

  const section = element("section", { id: "add-slide" });
  const label = element("label", { htmlFor: "add-slide-file" }, "Add slide");
  const input = element("input", { id: "add-slide-file", type: "file",
    accept: ".svs,.tif,.tiff,.ndpi,.vms,.vmu,.scn,.svslide,.bif,.dcm,.czi" });
  const button = element("button", { id: "add-slide-button", type: "button", disabled: true }, "Upload");
  const bar = element("progress", { id: "add-slide-progress", max: 1, value: 0, hidden: true });
  const status = element("div", { id: "add-slide-status", className: "muted" });
  status.setAttribute("role", "status");
  section.append(label, input, button, bar, status);
  const anchor = document.getElementById("slide-select");
  (anchor ? anchor.closest("section") : document.body).after(section);

  function show(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "muted";
    status.style.color = isError ? "#b42318" : "";
    status.setAttribute("role", isError ? "alert" : "status");
    section.dataset.state = isError ? "failed" : section.dataset.state;
  }

  function upload(file) {
    // XMLHttpRequest rather than fetch: it reports upload progress.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${API}/slides`);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) { bar.value = e.loaded / e.total; show(`Uploading ${Math.round(100 * e.loaded / e.total)} %`); }
      };
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (err) { /* not JSON: use the status line */ }
        if (xhr.status === 200 || xhr.status === 202) resolve(body);
        else reject(new Error(body.detail || `upload failed: HTTP ${xhr.status}`));
      };
      xhr.onerror = () => reject(new Error("upload failed: the server cannot be reached"));
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    });
  }

  async function getJSON(path) {
    const response = await fetch(API + path);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status} for ${path}`);
    return body;
  }

  async function selectWhenListed(slideId) {
    const select = document.getElementById("slide-select");
    for (let i = 0; i < 40; i++) {  // the slide list is rescanned every few seconds
      const slides = await getJSON("/slides");
      if (slides.some((s) => s.slide_id === slideId)) {
        if (select && ![...select.options].some((o) => o.value === slideId)) {
          select.appendChild(element("option", { value: slideId }, slideId));
        }
        if (select) { select.value = slideId; select.dispatchEvent(new Event("change")); }
        return;
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    throw new Error(`${slideId} is done but not listed yet; reload the page`);
  }

  async function follow(jobId) {
    for (;;) {
      const job = await getJSON(`/jobs/${jobId}`);
      bar.value = job.progress;
      const eta = job.eta_s != null ? ` · about ${Math.ceil(job.eta_s)} s left` : "";
      show(`${job.slide_id}: ${job.stage}${eta}`);
      section.dataset.state = job.state;
      if (job.state === "done") {
        const p = job.prediction || {};
        show(`${job.slide_id}: done · ${p.predicted || ""}`);
        await selectWhenListed(job.slide_id);
        return;
      }
      if (job.state === "failed" || job.state === "cancelled") {
        throw new Error(`${job.slide_id}: ${job.state}: ${job.message || ""}`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  input.addEventListener("change", () => { button.disabled = !input.files.length; });
  button.addEventListener("click", async () => {
    const file = input.files[0];
    if (!file) return;
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    section.dataset.state = "uploading";
    try {
      const job = await upload(file);
      section.dataset.jobId = job.job_id;
      await follow(job.job_id);
    } catch (err) {
      show(err.message, true);
    } finally {
      button.disabled = !input.files.length;
    }
  });
})();

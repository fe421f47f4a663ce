// ACMIL viewer: slide (DeepZoom) + attention overlay (DeepZoom-aligned PNG tiles) in OpenSeadragon,
// the model's prediction, and a gallery of the most attended tiles. Talks only to /api/v1.
(function () {
  "use strict";
  const API = "/api/v1";
  const $ = (id) => document.getElementById(id);
  const state = { slide: null, meta: null, prediction: null, model: null, overlayItem: null, slideItem: null };
  window.acmil = { state: state };

  function setStatus(text, isError) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", !!isError);
  }

  async function getJSON(path) {
    const response = await fetch(API + path);
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status}: ${detail}`);
    }
    return response.json();
  }

  const viewer = OpenSeadragon({
    element: $("osd"),
    prefixUrl: "/vendor/openseadragon/images/",
    drawer: "canvas",  // predictable in headless browsers without a GPU
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    navigatorBackground: "#fff",
    crossOriginPolicy: false,
    maxZoomPixelRatio: 4,
    visibilityRatio: 0.5,
    gestureSettingsMouse: { clickToZoom: false },
  });
  window.acmil.viewer = viewer;

  attachScaleBar(viewer, { root: $("scalebar"), bar: $("scalebar-bar"), label: $("scalebar-label") },
    () => state.meta && state.meta.mpp, () => state.meta && state.meta.width);

  function overlayQuery() {
    const params = new URLSearchParams({
      branch: $("branch-select").value,
      colormap: $("colormap-select").value,
      normalisation: $("norm-select").value,
    });
    if ($("smooth-select").value !== "0") params.set("smoothing", $("smooth-select").value);
    return params.toString();
  }

  function overlaySource(meta) {
    // Same geometry as the slide's DZI (level 0 = 1x1, as DeepZoom), so both layers line up.
    const query = overlayQuery();
    const id = encodeURIComponent(meta.slide_id);
    return {
      width: meta.width,
      height: meta.height,
      tileSize: meta.deepzoom_tile_size,
      tileOverlap: meta.deepzoom_overlap,
      minLevel: 0,
      maxLevel: Math.ceil(Math.log2(Math.max(meta.width, meta.height))),
      getTileUrl: (level, x, y) => `${API}/slides/${id}/attention_files/${level}/${x}_${y}.png?${query}`,
    };
  }

  function opacity() { return Number($("opacity").value) / 100; }

  function renderPrediction(pred) {
    $("predicted-class").textContent = pred.predicted_class;
    const box = $("probabilities");
    box.innerHTML = "";
    for (const [name, p] of Object.entries(pred.probabilities)) {
      const row = document.createElement("div");
      row.className = "prob" + (name === pred.predicted_class ? " top" : "");
      row.innerHTML = '<span class="name"></span><div class="bar"><div></div></div><span class="value"></span>';
      row.querySelector(".name").textContent = name;
      row.querySelector(".bar > div").style.width = (100 * p).toFixed(1) + "%";
      row.querySelector(".value").textContent = (100 * p).toFixed(1) + "%";
      box.appendChild(row);
    }
    const extra = document.createElement("div");
    extra.className = "muted";
    extra.textContent = `${pred.n_tiles} tiles · top-${pred.top_tiles.length} hold ` +
      `${(100 * pred.attention.top_k_mass).toFixed(1)}% of attention · ${pred.cached ? "cached" : pred.elapsed_ms.toFixed(0) + " ms"}`;
    box.appendChild(extra);
  }

  function tileRect(tile) {
    const w = state.meta.width;  // world width 1 = the level-0 width
    return new OpenSeadragon.Rect(tile.x / w, tile.y / w, tile.size / w, tile.size / w);
  }

  let highlight = null;
  function goToTile(tile, button) {
    const rect = tileRect(tile);
    const margin = rect.width * 2;
    viewer.viewport.fitBounds(new OpenSeadragon.Rect(rect.x - margin, rect.y - margin,
      rect.width + 2 * margin, rect.height + 2 * margin));
    if (highlight) viewer.removeOverlay(highlight);
    highlight = document.createElement("div");
    highlight.className = "tile-highlight";
    viewer.addOverlay({ element: highlight, location: rect });
    document.querySelectorAll(".gallery button").forEach((b) => b.classList.remove("selected"));
    button.classList.add("selected");
    window.acmil.lastTile = tile;
  }

  function renderGallery(pred, meta) {
    const gallery = $("gallery");
    gallery.innerHTML = "";
    const id = encodeURIComponent(meta.slide_id);
    for (const tile of pred.top_tiles) {
      const button = document.createElement("button");
      button.type = "button";
      button.title = `#${tile.rank} at (${tile.x}, ${tile.y}), attention ${tile.score.toExponential(2)}`;
      button.dataset.rank = tile.rank;
      if (meta.has_image) {
        const img = document.createElement("img");
        img.loading = "lazy";
        img.alt = `tile ${tile.rank}`;
        img.src = `${API}/slides/${id}/crop.jpg?x=${tile.x}&y=${tile.y}&size=${tile.size}&out=160`;
        button.appendChild(img);
      } else {
        const blank = document.createElement("div");
        blank.className = "blank";
        blank.textContent = `(${tile.x}, ${tile.y})`;
        button.appendChild(blank);
      }
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = tile.rank;
      button.appendChild(rank);
      button.addEventListener("click", () => goToTile(tile, button));
      gallery.appendChild(button);
    }
  }

  function describeSlide(meta) {
    const mpp = meta.mpp ? `${meta.mpp.toFixed(3)} µm/px` : "µm/px unknown";
    $("slide-info").textContent = `${meta.width} × ${meta.height} px · ${mpp} · ${meta.n_tiles} tiles` +
      (meta.image_error ? ` · ${meta.image_error}` : "");
    $("no-image").hidden = meta.has_image;
  }

  function trackLoaded(item, key) {
    // Only an item still on show may raise the flag: the previous slide's layers go on loading after a switch.
    const current = () => item === state.overlayItem || item === state.slideItem;
    const done = () => { if (item.getFullyLoaded() && current()) document.body.dataset[key] = "1"; };
    item.addHandler("fully-loaded-change", done);
    done();
  }

  async function loadSlide(slideId) {
    document.body.dataset.state = "loading";
    state.overlayItem = null; state.slideItem = null;
    delete document.body.dataset.slideLoaded;
    delete document.body.dataset.overlayLoaded;
    setStatus(`Loading ${slideId}…`);
    const id = encodeURIComponent(slideId);
    try {
      const [meta, pred] = await Promise.all([getJSON(`/slides/${id}`), getJSON(`/slides/${id}/prediction`)]);
      state.slide = slideId; state.meta = meta; state.prediction = pred;
      describeSlide(meta);
      renderPrediction(pred);
      describeBranch();
      renderGallery(pred, meta);
      const sources = [];
      if (meta.has_image) sources.push({ tileSource: `${API}/slides/${id}/slide.dzi`, x: 0, y: 0, width: 1 });
      sources.push({ tileSource: overlaySource(meta), x: 0, y: 0, width: 1, opacity: opacity() });
      if (!meta.has_image) document.body.dataset.slideLoaded = "none";
      viewer.open(sources);
      location.hash = "slide=" + id;
      setStatus("");
      document.body.dataset.state = "ready";
    } catch (err) {
      document.body.dataset.state = "error";
      setStatus(err.message, true);
    }
  }

  viewer.addHandler("open", () => {
    const count = viewer.world.getItemCount();
    state.overlayItem = viewer.world.getItemAt(count - 1);
    state.slideItem = count > 1 ? viewer.world.getItemAt(0) : null;
    trackLoaded(state.overlayItem, "overlayLoaded");
    if (state.slideItem) trackLoaded(state.slideItem, "slideLoaded");
  });
  viewer.addHandler("open-failed", (e) => setStatus(`Could not open the slide: ${e.message}`, true));

  function reloadOverlay() {
    if (!state.meta) return;
    const old = state.overlayItem;
    delete document.body.dataset.overlayLoaded;
    viewer.addTiledImage({
      tileSource: overlaySource(state.meta), x: 0, y: 0, width: 1, opacity: opacity(),
      success: (event) => {
        if (old) viewer.world.removeItem(old);
        state.overlayItem = event.item;
        trackLoaded(event.item, "overlayLoaded");
      },
      error: (event) => setStatus(`Overlay failed: ${event.message}`, true),
    });
  }

  function setLegend() {
    $("legend-bar").src = `${API}/colormap.png?name=${encodeURIComponent($("colormap-select").value)}`;
  }

  $("opacity").addEventListener("input", () => {
    $("opacity-value").textContent = $("opacity").value + "%";
    if (state.overlayItem) state.overlayItem.setOpacity(opacity());
  });
  function describeBranch() {
    const pred = state.prediction, b = $("branch-select").value;
    if (!pred || b === "mean" || !pred.branch_probabilities) { $("branch-info").textContent = ""; return; }
    const probs = pred.branch_probabilities[Number(b)];
    const best = Object.entries(probs).sort((x, y) => y[1] - x[1])[0];
    $("branch-info").textContent = `branch ${b} alone says ${best[0]} (${(100 * best[1]).toFixed(1)}%)`;
  }

  for (const id of ["branch-select", "norm-select", "smooth-select"]) $(id).addEventListener("change", reloadOverlay);
  $("branch-select").addEventListener("change", describeBranch);
  $("colormap-select").addEventListener("change", () => { setLegend(); reloadOverlay(); });
  $("slide-select").addEventListener("change", (e) => loadSlide(e.target.value));

  async function start() {
    try {
      const [model, slides] = await Promise.all([getJSON("/model"), getJSON("/slides")]);
      state.model = model;
      $("model-info").textContent = `${model.arch} · ${model.class_names.join(" / ")} · ${model.checkpoint}`;
      for (let b = 0; b < model.n_branches && model.n_branches > 1; b++) {
        const option = document.createElement("option");
        option.value = String(b); option.textContent = `branch ${b}`;
        $("branch-select").appendChild(option);
      }
      const select = $("slide-select");
      for (const s of slides) {
        const option = document.createElement("option");
        option.value = s.slide_id;
        option.textContent = s.slide_id + (s.has_image ? "" : " (no image)") + (s.error ? " ⚠" : "");
        option.disabled = !!s.error;
        if (s.error) option.title = s.error;
        select.appendChild(option);
      }
      setLegend();
      const wanted = new URLSearchParams(location.hash.slice(1)).get("slide");
      const usable = slides.filter((s) => !s.error).map((s) => s.slide_id);
      const first = usable.includes(wanted) ? wanted : usable[0];
      if (!first) { setStatus("No usable slides: add feature files to the features folder.", true); return; }
      select.value = first;
      await loadSlide(first);
    } catch (err) {
      setStatus(err.message, true);
    }
  }
  start();
})();

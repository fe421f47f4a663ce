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

  // The overlay tiles come from the server in grey (the scaled score, 0..255) and are coloured here, with
  // scores under the cut-off faded out: the same formula as acmil.heatmap.fade, so the viewer and
  // `acmil heatmap` (the demo's report) draw a slide the same way. Colormap and cut-off need no new render.
  const FADE_WIDTH = 0.1;
  const SCALING_WORDS = {  // as acmil.heatmap.SCALING_WORDS
    log: "log attention, from the slide's median tile (0) to its most attended tile (1)",
    rank: "attention rank within the slide (0 = least, 1 = most attended tile)",
    minmax: "attention, linear from the slide's least (0) to its most (1) attended tile",
  };
  const luts = {};

  async function loadLut(name) {
    if (!luts[name]) {
      const img = new Image();
      img.src = `${API}/colormap.png?name=${encodeURIComponent(name)}`;
      await img.decode();
      const canvas = document.createElement("canvas");
      canvas.width = 256; canvas.height = 1;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0, 256, 1);
      luts[name] = ctx.getImageData(0, 0, 256, 1).data;  // (256 * 4) RGBA
    }
    return luts[name];
  }

  function fade(v, cutoff) { return cutoff <= 0 ? 1 : Math.min(1, Math.max(0, (v - cutoff) / FADE_WIDTH)); }

  function colourTile(ctx, lut, cutoff) {
    const { width, height } = ctx.canvas;
    const image = ctx.getImageData(0, 0, width, height);
    const px = image.data;
    for (let i = 0; i < px.length; i += 4) {
      const g = px[i];
      px[i] = lut[4 * g]; px[i + 1] = lut[4 * g + 1]; px[i + 2] = lut[4 * g + 2];
      px[i + 3] = Math.round(px[i + 3] * fade(g / 255, cutoff));
    }
    ctx.putImageData(image, 0, 0);
  }

  function view() {
    return { colormap: $("colormap-select").value, cutoff: Number($("cutoff-select").value) };
  }

  function chosenModel() { return $("model-select").value; }  // "mean" or an ensemble member's index

  function overlayQuery() {
    const params = new URLSearchParams({
      branch: $("branch-select").value,
      colormap: "gray",  // the scaled score itself; coloured in colourTile
      normalisation: $("norm-select").value,
    });
    if ($("smooth-select").value !== "0") params.set("smoothing", $("smooth-select").value);
    if (chosenModel() !== "mean") params.set("model", chosenModel());  // an ensemble member's attention
    return params.toString();
  }

  function overlaySource(meta, lut) {
    // Same geometry as the slide's DZI (level 0 = 1x1, as DeepZoom), so both layers line up.
    const query = overlayQuery();
    const id = encodeURIComponent(meta.slide_id);
    const { colormap, cutoff } = view();
    return {
      width: meta.width,
      height: meta.height,
      tileSize: meta.deepzoom_tile_size,
      tileOverlap: meta.deepzoom_overlap,
      minLevel: 0,
      maxLevel: Math.ceil(Math.log2(Math.max(meta.width, meta.height))),
      getTileUrl: (level, x, y) => `${API}/slides/${id}/attention_files/${level}/${x}_${y}.png?${query}`,
      // One cache entry per look: the same grey tile coloured another way is another picture.
      getTileHashKey: (level, x, y, url) => `${url}#${colormap}@${cutoff}`,
      getTileCacheDataAsContext2D: (cache) => {
        if (!cache._renderedContext) {
          const canvas = document.createElement("canvas");
          canvas.width = cache._data.width; canvas.height = cache._data.height;
          const ctx = canvas.getContext("2d", { willReadFrequently: true });
          ctx.drawImage(cache._data, 0, 0);
          colourTile(ctx, lut, cutoff);
          cache._renderedContext = ctx;
          cache._data = null;
        }
        return cache._renderedContext;
      },
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
      if (meta.has_image && tile.size != null) {
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
      if (tile.size != null) button.addEventListener("click", () => goToTile(tile, button));
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
      const [meta, pred] = await Promise.all([
        getJSON(`/slides/${id}`), getJSON(`/slides/${id}/prediction?model=${chosenModel()}`)]);
      state.slide = slideId; state.meta = meta; state.prediction = pred;
      describeSlide(meta);
      renderPrediction(pred);
      describeModel();
      describeBranch();
      renderGallery(pred, meta);
      const sources = [];
      if (meta.has_image) sources.push({ tileSource: `${API}/slides/${id}/slide.dzi`, x: 0, y: 0, width: 1 });
      // Without a known tile size the attention has no place on the slide: prediction only.
      const drawable = meta.patch_size_level0 != null;
      const lut = await loadLut(view().colormap);
      if (drawable) sources.push({ tileSource: overlaySource(meta, lut), x: 0, y: 0, width: 1, opacity: opacity() });
      if (!meta.has_image) document.body.dataset.slideLoaded = "none";
      if (sources.length) viewer.open(sources); else viewer.close();
      location.hash = "slide=" + id;
      setStatus(drawable ? "" : "Patch size unknown (one tile, no patch_size_level0): no heatmap for this slide.");
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

  async function reloadOverlay() {
    if (!state.meta || state.meta.patch_size_level0 == null) return;
    const old = state.overlayItem;
    delete document.body.dataset.overlayLoaded;
    let lut;
    try { lut = await loadLut(view().colormap); } catch (err) { setStatus(`Colormap failed: ${err}`, true); return; }
    viewer.addTiledImage({
      tileSource: overlaySource(state.meta, lut), x: 0, y: 0, width: 1, opacity: opacity(),
      success: (event) => {
        if (old) viewer.world.removeItem(old);
        state.overlayItem = event.item;
        trackLoaded(event.item, "overlayLoaded");
      },
      error: (event) => setStatus(`Overlay failed: ${event.message}`, true),
    });
  }

  async function setLegend() {
    // The colour scale as drawn: each colour faded as on the slide (over white).
    const { colormap, cutoff } = view();
    const lut = await loadLut(colormap);
    const ctx = $("legend-bar").getContext("2d");
    const strip = ctx.createImageData(256, 1);
    for (let i = 0; i < 256; i++) {
      strip.data.set([lut[4 * i], lut[4 * i + 1], lut[4 * i + 2], Math.round(255 * fade(i / 255, cutoff))], 4 * i);
    }
    ctx.clearRect(0, 0, 256, 1);
    ctx.putImageData(strip, 0, 0);
    const scaling = SCALING_WORDS[$("norm-select").value];
    const smooth = $("smooth-select").value;
    $("legend-text").textContent = `Colour = ${scaling}` + (cutoff > 0 ? `; below ${cutoff} not drawn` : "") +
      (smooth !== "0" ? `; smoothed over ${smooth} tile` : "") + ".";
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

  for (const id of ["branch-select", "norm-select", "smooth-select", "colormap-select", "cutoff-select"]) {
    $(id).addEventListener("change", () => { setLegend(); reloadOverlay(); });
  }
  $("branch-select").addEventListener("change", describeBranch);

  function describeModel() {
    // An ensemble's probabilities are its members' mean; say what the chosen member alone says.
    const pred = state.prediction, m = chosenModel();
    if (!pred || m === "mean" || !pred.model_probabilities) { $("model-choice-info").textContent = ""; return; }
    const best = Object.entries(pred.model_probabilities[Number(m)]).sort((x, y) => y[1] - x[1])[0];
    $("model-choice-info").textContent = `model ${m} alone says ${best[0]} (${(100 * best[1]).toFixed(1)}%)`;
  }

  // Choosing a member shows its attention (overlay and gallery) and its branches; the branches of
  // different models are not the same heads, so the ensemble's mean has none to choose.
  $("model-select").addEventListener("change", async () => {
    const mean = chosenModel() === "mean";
    $("branch-select").value = "mean";
    $("branch-select").disabled = mean && state.model.ensemble_size > 1;
    setLegend(); reloadOverlay();
    if (!state.slide) return;
    const id = encodeURIComponent(state.slide);
    try {
      const pred = await getJSON(`/slides/${id}/prediction?model=${chosenModel()}`);
      if (encodeURIComponent(state.slide) !== id) return;  // another slide was chosen meanwhile
      state.prediction = pred;
      renderGallery(pred, state.meta);
      describeModel(); describeBranch();
    } catch (err) { setStatus(err.message, true); }
  });
  $("slide-select").addEventListener("change", (e) => loadSlide(e.target.value));

  function describeCohort(cohort) {
    // What the model was trained on, so nobody mistakes a demo model (synthetic slides) for a clinical one.
    const box = $("cohort-info");
    if (!cohort) { box.textContent = "Training cohort: not recorded in this checkpoint."; return; }
    const classes = Object.entries(cohort.classes || {}).map(([c, n]) => `${c} ${n}`).join(", ");
    box.textContent = `Trained on ${cohort.n_slides} slides (${classes})` +
      (cohort.encoder ? `, ${cohort.encoder} features` : "") + (cohort.description ? `: ${cohort.description}` : "") + ".";
    box.classList.toggle("synthetic", /synthetic/i.test(cohort.description || ""));
  }

  async function start() {
    try {
      const [model, slides] = await Promise.all([getJSON("/model"), getJSON("/slides")]);
      state.model = model;
      const members = model.members || [];
      const named = members.length > 1 ? `ensemble of ${members.length}: ${members.map((m) => m.checkpoint).join(", ")}`
        : model.checkpoint;
      $("model-info").textContent = `${model.arch} · ${model.class_names.join(" / ")} · ${named}`;
      describeCohort(model.training_cohort);
      if (members.length > 1) {
        members.forEach((m, k) => {
          const option = document.createElement("option");
          option.value = String(k); option.textContent = `model ${k} (${m.checkpoint})`;
          $("model-select").appendChild(option);
        });
        $("model-row").hidden = false;
        $("branch-select").disabled = true;  // until a member is chosen
      }
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
      await setLegend();
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

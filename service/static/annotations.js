// ACMIL viewer, optional layer: the pathologists' annotations (QuPath GeoJSON from
// GET /api/v1/slides/{id}/annotations.geojson, served when `acmil serve --annotations DIR` is given),
// drawn as SVG over the slide in level-0 pixel coordinates. Self-contained: it only reads window.acmil
// (viewer, state) and adds its own switch to the sidebar. document.body.dataset.annotations holds the
// number of drawn objects once a slide's layer is ready ("0" when the slide has none).
(function () {
  "use strict";
  const acmil = window.acmil;
  if (!acmil || !acmil.viewer) return;
  const viewer = acmil.viewer;
  const SVG = "http://www.w3.org/2000/svg";
  const DEFAULT_COLOR = [255, 200, 0];

  const section = document.createElement("section");
  section.id = "annotations";
  section.hidden = true;  // until the service says it serves annotations
  section.innerHTML = '<h2>Annotations</h2><label for="annotations-toggle">' +
    '<input id="annotations-toggle" type="checkbox" checked disabled> show over the slide</label>' +
    '<div id="annotations-info" class="muted">…</div>';
  const gallery = document.getElementById("gallery");
  const sidebar = document.getElementById("sidebar");
  sidebar.insertBefore(section, gallery ? gallery.closest("section") : null);
  const toggle = section.querySelector("#annotations-toggle");
  const info = section.querySelector("#annotations-info");

  const svg = document.createElementNS(SVG, "svg");
  svg.id = "annotations-layer";
  svg.setAttribute("style", "position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none");
  const group = document.createElementNS(SVG, "g");
  svg.appendChild(group);
  viewer.canvas.appendChild(svg);
  let width = null;  // level-0 width of the slide drawn: world x = image x / width
  let loading = 0;
  // Which slides have annotations: asked once, so slides without a file cost no request (and no 404).
  const index = fetch("/api/v1/annotations").then((r) => (r.ok ? r.json() : { enabled: false, slide_ids: [] }))
    .catch(() => ({ enabled: false, slide_ids: [] }));
  index.then((found) => { section.hidden = !found.enabled; });

  function ringPath(ring) {
    return ring.map((p, i) => `${i ? "L" : "M"}${p[0]} ${p[1]}`).join(" ") + " Z";
  }

  function featurePath(geometry) {
    const polygons = geometry.type === "Polygon" ? [geometry.coordinates]
      : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
    return polygons.map((rings) => rings.map(ringPath).join(" ")).join(" ");
  }

  function place() {
    // Image (level-0 px) -> element px is a scale and a shift: one transform per frame, not per vertex.
    if (!width || !viewer.world.getItemCount()) return;
    const origin = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(0, 0), true);
    const unit = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(1, 0), true);
    const scale = (unit.x - origin.x) / width;
    group.setAttribute("transform", `translate(${origin.x} ${origin.y}) scale(${scale})`);
  }

  function draw(collection) {
    group.replaceChildren();
    for (const feature of collection.features || []) {
      const props = feature.properties || {};
      const cls = props.classification || null;
      const rgb = (cls && cls.color) || DEFAULT_COLOR;
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", featurePath(feature.geometry || {}));
      path.setAttribute("fill", `rgba(${rgb[0]},${rgb[1]},${rgb[2]},0.15)`);
      path.setAttribute("fill-rule", "evenodd");  // holes stay open
      path.setAttribute("stroke", `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`);
      path.setAttribute("stroke-width", "2");
      path.setAttribute("vector-effect", "non-scaling-stroke");
      path.dataset.classification = cls ? cls.name : "";
      const title = document.createElementNS(SVG, "title");
      title.textContent = (cls ? cls.name : "unclassified") + (props.name ? ` · ${props.name}` : "");
      path.appendChild(title);
      group.appendChild(path);
    }
    place();
  }

  async function load() {
    const state = acmil.state;
    if (!state.meta) return;
    const ticket = ++loading;  // a later slide's answer wins over an earlier one's
    delete document.body.dataset.annotations;
    group.replaceChildren();
    width = state.meta.width;
    toggle.disabled = true;
    const id = encodeURIComponent(state.meta.slide_id);
    let text, count = 0;
    try {
      const found = await index;
      if (ticket !== loading) return;
      if (!found.slide_ids.includes(state.meta.slide_id)) {
        info.textContent = found.enabled ? "none for this slide" : "";
        document.body.dataset.annotations = "0";
        return;
      }
      const response = await fetch(`/api/v1/slides/${id}/annotations.geojson`);
      if (ticket !== loading) return;
      if (response.ok) {
        const collection = await response.json();
        if (ticket !== loading) return;
        draw(collection);
        count = group.childElementCount;
        const warnings = JSON.parse(response.headers.get("X-Annotation-Warnings") || "[]");
        const classes = [...new Set([...group.children].map((p) => p.dataset.classification || "unclassified"))];
        text = `${count} object${count === 1 ? "" : "s"}` + (classes.length ? ` (${classes.join(", ")})` : "") +
          (warnings.length ? ` · ${warnings.length} repaired or clipped` : "");
        toggle.disabled = count === 0;
      } else {
        let detail = response.statusText;
        try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
        text = `not shown: ${detail}`;
      }
    } catch (err) {
      text = `not shown: ${err.message}`;
    }
    if (ticket !== loading) return;
    info.textContent = text;
    svg.style.display = toggle.checked ? "" : "none";
    document.body.dataset.annotations = String(count);
  }

  toggle.addEventListener("change", () => { svg.style.display = toggle.checked ? "" : "none"; });
  viewer.addHandler("open", load);
  for (const event of ["update-viewport", "resize", "animation"]) viewer.addHandler(event, place);
})();

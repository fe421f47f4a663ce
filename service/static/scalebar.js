// A tiny scale bar for OpenSeadragon: a bar of a "nice" length (1, 2 or 5 x 10^k µm) kept between
// ~80 and ~200 screen pixels, from the slide's µm per level-0 pixel. No npm plugin exists for OSD 5.
(function (global) {
  "use strict";

  function niceLength(micronsAtTarget) {
    const exp = Math.floor(Math.log10(micronsAtTarget));
    const base = Math.pow(10, exp);
    for (const m of [5, 2, 1]) {
      if (m * base <= micronsAtTarget) return m * base;
    }
    return base;
  }

  function label(um) {
    if (um >= 1000) return (um / 1000) + " mm";
    if (um >= 1) return um + " µm";
    return (um * 1000) + " nm";
  }

  /**
   * Attach a scale bar to `viewer`. `getMpp()` returns µm per level-0 pixel (or null to hide it);
   * `getImageWidth()` returns the level-0 width the viewport's world width (1) stands for.
   */
  function attachScaleBar(viewer, elements, getMpp, getImageWidth) {
    const targetPx = 150;
    function update() {
      const mpp = getMpp();
      const width = getImageWidth();
      if (!mpp || !width) { elements.root.hidden = true; return; }
      const zoom = viewer.viewport.getZoom(true);
      // screen pixels per viewport unit / level-0 pixels per viewport unit = screen px per level-0 px
      const screenPerImage = viewer.viewport.getContainerSize().x * zoom / width;
      const umPerScreen = mpp / screenPerImage;
      const um = niceLength(targetPx * umPerScreen);
      elements.bar.style.width = Math.round(um / umPerScreen) + "px";
      elements.label.textContent = label(um);
      elements.root.hidden = false;
      elements.root.dataset.microns = String(um);
    }
    viewer.addHandler("animation", update);
    viewer.addHandler("open", update);
    viewer.addHandler("resize", update);
    return { update: update };
  }

  global.attachScaleBar = attachScaleBar;
})(window);

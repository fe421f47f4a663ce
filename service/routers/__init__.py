"""API routers: predictions, slides (DeepZoom), viewer."""

"""The gallery's page: HTML, CSS and script in one string, nothing loaded from elsewhere.

``{{TITLE}}`` and ``{{INDEX}}`` (the index JSON, with ``</`` escaped) are filled in by
:func:`tensorpng._gallery.write_gallery`. The script renders one page of images at a time
(the rest of the index stays data, not DOM), with ``loading="lazy"`` images; state (folder,
step, page) lives in the URL's hash, so a view can be linked. On ``<body>`` it keeps
``data-status`` (``"loading"``, then ``"complete"`` once every image of the page loaded or
failed), ``data-shown``, ``data-loaded``, ``data-failed`` and ``data-errors`` (script errors),
for people and for tests. ``#eager=1`` loads every image of the page at once.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline';
 script-src 'unsafe-inline'">
<title>{{TITLE}} - tensorpng gallery</title>
<style>
:root { --tile: 160px; color-scheme: light dark; }
body { font: 14px/1.35 system-ui, sans-serif; margin: 0; }
header { position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 12px;
  align-items: center; padding: 8px 12px; background: Canvas; border-bottom: 1px solid #8884; }
header h1 { font-size: 16px; margin: 0 8px 0 0; }
main { padding: 8px 12px; }
h2 { font-size: 14px; margin: 16px 0 6px; font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: var(--tile); }
figure a { display: flex; align-items: center; justify-content: center;
  width: var(--tile); height: var(--tile); background: #8882; }
figure img { width: 100%; height: 100%; object-fit: contain; }
figure img.small { image-rendering: pixelated; }
figcaption { font-size: 12px; overflow-wrap: anywhere; opacity: 0.85; }
#pages button { min-width: 2.2em; }
.muted { opacity: 0.7; }
</style>
</head>
<body data-status="loading">
<header>
<h1>{{TITLE}}</h1>
<label>folder <select id="folder"></select></label>
<label>step <input id="step" type="range" min="0" max="0" value="0">
 <output id="step-label">all</output></label>
<label>size <input id="size" type="range" min="48" max="512" value="160"></label>
<span id="pages"><button id="prev" title="PageUp">&lsaquo;</button>
 <span id="page-label"></span>
 <button id="next" title="PageDown">&rsaquo;</button></span>
<span id="count" class="muted"></span>
<span class="muted">keys: &larr; &rarr; step, PageUp/PageDown page</span>
</header>
<main id="main"></main>
<script type="application/json" id="tensorpng-index">{{INDEX}}</script>
<script>
"use strict";
(function () {
  var PAGE_SIZE = 120;
  var body = document.body;
  var errors = [];
  window.addEventListener("error", function (event) {
    if (event.target && event.target.tagName === "IMG") return;  // counted as failed
    errors.push(String(event.message || event));
    body.dataset.errors = errors.join(" | ");
  }, true);
  var index = JSON.parse(document.getElementById("tensorpng-index").textContent);
  var images = index.images;
  var folders = [], steps = [], seenFolder = {}, seenStep = {};
  images.forEach(function (image) {
    if (!(image.folder in seenFolder)) { seenFolder[image.folder] = 0; folders.push(image.folder); }
    seenFolder[image.folder] += 1;
    if (image.step !== null && !(image.step in seenStep)) {
      seenStep[image.step] = 1; steps.push(image.step);
    }
  });
  steps.sort(function (a, b) { return a - b; });
  var state = { folder: null, step: null, page: 0, eager: false };
  var hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("folder")) state.folder = hash.get("folder");
  if (hash.has("step") && hash.get("step") !== "") state.step = Number(hash.get("step"));
  if (hash.has("page")) state.page = Math.max(0, Number(hash.get("page")) - 1 || 0);
  state.eager = hash.get("eager") === "1";

  var folderSelect = document.getElementById("folder");
  function option(value, text) {
    var element = document.createElement("option");
    element.value = value; element.textContent = text; return element;
  }
  folderSelect.appendChild(option("/", "all (" + images.length + ")"));
  folders.forEach(function (folder) {
    folderSelect.appendChild(option(folder, (folder || ".") + " (" + seenFolder[folder] + ")"));
  });
  var stepInput = document.getElementById("step");
  stepInput.max = String(steps.length);
  stepInput.disabled = steps.length === 0;
  var sizeInput = document.getElementById("size");
  sizeInput.addEventListener("input", function () {
    document.documentElement.style.setProperty("--tile", sizeInput.value + "px");
  });

  function selected() {
    return images.filter(function (image) {
      return (state.folder === null || image.folder === state.folder) &&
        (state.step === null || image.step === state.step);
    });
  }
  function caption(image) {
    var parts = [image.name];
    if (image.step !== null) parts.push("step " + image.step);
    if (image.shape) parts.push("shape " + image.shape.join("\\u00d7"));
    if (image.mapping) parts.push(image.mapping + (image.cmap ? " " + image.cmap : ""));
    parts.push(image.width + "\\u00d7" + image.height + ", " + image.bits + "-bit");
    if (image.frames > 1) {
      parts.push(image.frames + " frames" + (image.fps ? " @ " + image.fps + " fps" : ""));
    }
    return parts.join(" \\u00b7 ");
  }
  function heading(image) {
    return (image.folder || ".") + (image.step !== null ? " \\u00b7 step " + image.step : "");
  }
  function render() {
    var chosen = selected();
    var pages = Math.max(1, Math.ceil(chosen.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    var shown = chosen.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
    var main = document.getElementById("main");
    main.textContent = "";
    var grid = null, group = null, loaded = 0, failed = 0;
    body.dataset.status = "loading";
    body.dataset.shown = String(shown.length);
    body.dataset.loaded = body.dataset.failed = "0";
    function settle(ok) {
      if (ok) loaded += 1; else failed += 1;
      body.dataset.loaded = String(loaded); body.dataset.failed = String(failed);
      if (loaded + failed === shown.length) body.dataset.status = "complete";
    }
    // Names come from data: each segment is URL-encoded ("#", "?", "%", ":" are characters
    // of a file name, not of a URL), and "./" keeps "javascript:..." a relative path.
    function url(path) {
      return "./" + (index.base + path).split("/").map(encodeURIComponent).join("/");
    }
    shown.forEach(function (image) {
      if (heading(image) !== group) {
        group = heading(image);
        var title = document.createElement("h2");
        title.textContent = group;
        grid = document.createElement("div");
        grid.className = "grid";
        main.appendChild(title); main.appendChild(grid);
      }
      var figure = document.createElement("figure");
      var link = document.createElement("a");
      link.href = url(image.path);
      var img = document.createElement("img");
      img.loading = state.eager ? "eager" : "lazy";
      img.decoding = "async";
      img.alt = image.path;
      img.width = image.width; img.height = image.height;
      img.dataset.path = image.path;
      img.addEventListener("load", function () {
        if (img.naturalWidth < 128 && img.naturalHeight < 128) img.className = "small";  // crisp zoom
        settle(img.naturalWidth > 0);
      });
      img.addEventListener("error", function () { img.dataset.failed = "1"; settle(false); });
      img.src = url(image.path);
      link.appendChild(img);
      var text = document.createElement("figcaption");
      text.textContent = caption(image);
      figure.appendChild(link); figure.appendChild(text);
      grid.appendChild(figure);
    });
    if (shown.length === 0) { main.textContent = "no images here"; body.dataset.status = "complete"; }
    folderSelect.value = state.folder === null ? "/" : state.folder;
    var position = state.step === null ? 0 : steps.indexOf(state.step) + 1;
    stepInput.value = String(position);
    document.getElementById("step-label").textContent = state.step === null ? "all" : String(state.step);
    document.getElementById("page-label").textContent = "page " + (state.page + 1) + " / " + pages;
    document.getElementById("count").textContent = chosen.length + " of " + images.length + " images";
    var next = new URLSearchParams();
    if (state.folder !== null) next.set("folder", state.folder);
    if (state.step !== null) next.set("step", String(state.step));
    if (state.page) next.set("page", String(state.page + 1));
    if (state.eager) next.set("eager", "1");
    try { history.replaceState(null, "", "#" + next.toString()); } catch (error) { /* file:// */ }
  }
  function setStep(position) {
    position = Math.max(0, Math.min(steps.length, position));
    state.step = position === 0 ? null : steps[position - 1];
    state.page = 0; render();
  }
  function setPage(page) { state.page = Math.max(0, page); render(); window.scrollTo(0, 0); }
  folderSelect.addEventListener("change", function () {
    state.folder = folderSelect.value === "/" ? null : folderSelect.value;
    state.page = 0; render();
  });
  stepInput.addEventListener("input", function () { setStep(Number(stepInput.value)); });
  document.getElementById("prev").addEventListener("click", function () { setPage(state.page - 1); });
  document.getElementById("next").addEventListener("click", function () { setPage(state.page + 1); });
  document.addEventListener("keydown", function (event) {
    if (event.target && event.target.tagName === "SELECT") return;
    var position = state.step === null ? 0 : steps.indexOf(state.step) + 1;
    if (event.key === "ArrowRight" && steps.length) setStep(position + 1);
    else if (event.key === "ArrowLeft" && steps.length) setStep(position - 1);
    else if (event.key === "PageDown" || event.key === "]") setPage(state.page + 1);
    else if (event.key === "PageUp" || event.key === "[") setPage(state.page - 1);
    else return;
    event.preventDefault();
  });
  render();
})();
</script>
</body>
</html>
"""

// The filtercast gallery: pick a model, layer, preset and seed; pictures appear
// as the server finishes them (POST /v1/visualize, NDJSON). The page's URL holds
// the selection, so a link shows the same pictures (from the cache when warm).
// A dropped image is analysed (POST /v1/models/{model}:analyze): its top channels
// with heatmaps; a channel's Accentuate shows it grown from the image
// (POST /v1/visualize:accentuate). With a dataset chosen, each filter's picture
// gets the dataset's images that excite it most beside it
// (POST /v1/models/{model}/datasets/{dataset}:examples).
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = [
  "model", "layer", "preset", "dataset", "filters", "objective", "diversity", "seed", "size",
  "steps",
];
let models = [];
let running = null; // the AbortController of the stream in progress
let download = null; // the object URL of the picture the detail offers to save
let photo = null; // the dropped image: { bytes (base64), name }
const PHOTO_TYPES = ["image/png", "image/jpeg"];
const PHOTO_TOP_K = 8;
const EXAMPLES_TOP_K = 4;
const PREVIEW_EVERY = 10;
const FIRST_VIEW_PRESET = "PRESET_ROBUST";
let examples = new Map(); // channel -> its dataset examples, for the run in progress

function headers(extra) {
  const token = $("token").value.trim();
  return Object.assign(token ? { Authorization: "Bearer " + token } : {}, extra || {});
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function failure(response) {
  let message = response.status + " " + response.statusText;
  try {
    message = (await response.json()).message || message;
  } catch (ignored) { /* not JSON: keep the status line */ }
  if (response.status === 401) {
    $("controls").querySelector("details").open = true;
    message += " (enter a token under More, then Show)";
  } else if (response.status === 403) {
    message += " (this token may only list models: Show needs one with the visualize role)";
  }
  return message;
}

function fillSelect(select, options, chosen) {
  select.replaceChildren(
    ...options.map(([value, text]) => new Option(text, value, false, value === chosen)),
  );
}

function fillLayers(chosen, dataset) {
  const model = models.find((m) => m.name === $("model").value);
  if (!model) return;
  const layers = model.layers.map((l) => [l.name, `${l.name} (${l.channels} filters)`]);
  fillSelect($("layer"), layers, chosen || model.defaultLayer);
  const datasets = (model.datasets || []).map((d) => [d.name, d.name]);
  fillSelect($("dataset"), [["", "none"], ...datasets], dataset || "");
  $("dataset-label").hidden = datasets.length === 0;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) throw new Error(await failure(response));
  const listing = await response.json();
  models = listing.models || [];
  const url = new URLSearchParams(location.search);
  fillSelect($("model"), models.map((m) => [m.name, m.displayName || m.name]), url.get("model"));
  fillLayers(url.get("layer"), url.get("dataset"));
  const presets = (listing.presets || []).map((p) => [p.name, p.name]);
  const model = models.find((m) => m.name === $("model").value) || {};
  // A first visit (no selection in the URL) looks with the best preset for looking: robust.
  const chosen = url.has("model") ? model.defaultPreset : FIRST_VIEW_PRESET;
  const preferred = (chosen || "PRESET_CLASSIC").replace("PRESET_", "").toLowerCase();
  fillSelect($("preset"), presets, url.get("preset") || preferred);
  for (const name of ["filters", "objective", "diversity", "seed", "size", "steps"]) {
    if (url.has(name)) $(name).value = url.get(name);
  }
}

// "0:16", "1,5,9", "0:8,100:104" as a filtercast.v1.FilterSelection.
function selection(text) {
  const parts = text.split(",").map((p) => p.trim()).filter(Boolean);
  if (parts.length === 0) return undefined;
  if (parts.every((p) => !p.includes(":"))) return { list: { indices: parts.map(Number) } };
  const ranges = parts.map((p) => {
    const [start, stop] = p.split(":").map(Number);
    return { start, stop: stop === undefined ? start + 1 : stop };
  });
  return { ranges: { ranges } };
}

// The objective grammar's channel, neuron and layer forms, weighted and joined with + and -
// (the Python client reads the whole grammar: filtercast/contract.py), as a filtercast.v1.Objective.
const TERM = /^\s*(?:([0-9.]+)\s*\*\s*)?(?:layer\(\s*([^)\s]+)\s*\)|([^\s:@*+]+?)\s*:\s*(\d+)(?:\s*@\s*(?:(center)|\(\s*(\d+)\s*,\s*(\d+)\s*\)))?)\s*/i;

function objective(text) {
  const terms = [];
  let rest = text.trim();
  let sign = 1;
  if (rest.startsWith("-")) [sign, rest] = [-1, rest.slice(1)];
  for (;;) {
    const match = TERM.exec(rest);
    if (!match) throw new Error(`objective ${JSON.stringify(text)}: cannot read ${JSON.stringify(rest)}`);
    const [all, weight, wholeLayer, layer, index, center, y, x] = match;
    const term = wholeLayer ? { kind: "TERM_KIND_LAYER", layer: wholeLayer } : { layer, index: Number(index) };
    if (center || y !== undefined) term.kind = "TERM_KIND_NEURON";
    if (y !== undefined) term.position = { y: Number(y), x: Number(x) };
    if (weight !== undefined || sign < 0) term.weight = sign * Number(weight ?? 1);
    terms.push(term);
    rest = rest.slice(all.length);
    if (!rest) return { terms };
    if (rest[0] !== "+" && rest[0] !== "-") throw new Error(`objective ${JSON.stringify(text)}: expected + or - at ${JSON.stringify(rest)}`);
    [sign, rest] = [rest[0] === "-" ? -1 : 1, rest.slice(1)];
  }
}

function request() {
  const body = {
    model: $("model").value,
    layer: $("layer").value,
    preset: "PRESET_" + $("preset").value.toUpperCase(),
    grid: { disabled: true }, // the page lays the pictures out itself
  };
  const wanted = $("objective").value.split(";").map((t) => t.trim()).filter(Boolean);
  if (wanted.length) {
    body.objectives = wanted.map(objective);
    if (Number($("diversity").value) > 0) body.diversity = { k: Number($("diversity").value) };
  } else {
    body.filters = selection($("filters").value);
  }
  if ($("seed").value !== "") body.seed = $("seed").value;
  const overrides = {};
  for (const name of ["size", "steps"]) {
    if ($(name).value !== "") overrides[name] = Number($(name).value);
  }
  if (Object.keys(overrides).length) body.overrides = overrides;
  if (photo && $("photo-start").checked) body.accentuate = { image: photo.bytes };
  body.previewEvery = PREVIEW_EVERY; // tiles animate while they form
  return body;
}

function remember() {
  const url = new URLSearchParams();
  for (const name of FIELDS) if ($(name).value !== "") url.set(name, $(name).value);
  history.replaceState(null, "", "?" + url.toString());
}

const tally = { done: 0, total: 0, dead: 0, cached: 0, started: 0 };

// proto3 JSON leaves zeros out and writes NaN and Infinity as strings.
function number(value, digits) {
  const n = Number(value || 0);
  return Number.isFinite(n) ? n.toFixed(digits) : String(value);
}

function progress(final) {
  const seconds = ((performance.now() - tally.started) / 1000).toFixed(1);
  const parts = [`${tally.done} of ${tally.total} filters`];
  if (tally.dead) parts.push(`${tally.dead} dead`);
  if (tally.cached) parts.push(`${tally.cached} from the cache`);
  parts.push(`${seconds} s`);
  const text = (final ? "Done: " : "") + parts.join(" · ");
  $("progress").textContent = text;
  if (final) $("announce").textContent = text; // screen readers hear the end, not every filter
}

function tile(result, accepted) {
  const p = accepted.params;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tile" + (result.dead ? " dead" : "") + (result.cached ? " cached" : "");
  button.dataset.index = result.index || 0;
  button.dataset.cached = Boolean(result.cached);
  button.tabIndex = -1; // one tab stop for the whole grid (see handle); arrows move
  const what = (accepted.objectives || [])[result.index || 0];
  const name = what ? `${p.model} ${what}` : `${p.model} ${p.layer} filter ${result.index || 0}`;
  // A diversity group or an interpolation reads as one row: it starts a new line.
  button.dataset.row = result.target || 0;
  if (result.image) {
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + result.image.data;
    img.alt = name;
    button.append(img);
  } else {
    const empty = document.createElement("div");
    empty.className = "placeholder";
    empty.textContent = "dead";
    empty.setAttribute("role", "img");
    empty.setAttribute("aria-label", name + ": dead, no picture");
    button.append(empty);
  }
  const caption = document.createElement("span");
  caption.className = "caption";
  const label = what ? `${what}${result.member ? " #" + result.member : ""}` : `#${result.index || 0}`;
  caption.textContent = `${label} · ${result.dead ? "dead" : "loss " + number(result.loss, 2)}`;
  button.append(caption);
  button.addEventListener("click", () => detail(result, name));
  const item = document.createElement("li");
  item.dataset.index = result.index || 0;
  if (what && accepted.params && (accepted.filters || []).length > 1 && !result.member) {
    item.className = "row-start"; // the first picture of a group (or of an objective)
  }
  item.append(button);
  if (!what) attachExamples(item);
  return item;
}

// A filter's dataset examples under its picture, when both have arrived (either comes first).
function attachExamples(item) {
  const found = examples.get(Number(item.dataset.index));
  if (!found || item.querySelector(".examples")) return;
  const strip = document.createElement("div");
  strip.className = "examples";
  for (const example of found) {
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + example.crop.data;
    img.alt = `${example.image}, where it excites filter ${item.dataset.index} most`;
    img.title = `${example.image} · ${number(example.value, 2)}`;
    strip.append(img);
  }
  item.append(strip);
}

function exampleEvent(event) {
  if (event.error) throw new Error(event.error.message);
  const result = event.result;
  if (result.progress) {
    const p = result.progress;
    const state = (p.state || "").replace("INDEX_STATE_", "").toLowerCase();
    $("examples-status").textContent = state === "ready"
      ? "" : `${$("dataset").value}: index ${state}, ${p.imagesDone || 0} of ${p.imagesTotal || 0} images`;
  } else if (result.channel) {
    const index = result.channel.channel || 0;
    examples.set(index, result.channel.examples || []);
    const item = $("tiles").querySelector(`li[data-index="${index}"]`);
    if (item) attachExamples(item);
  } else if (result.summary) {
    const s = result.summary;
    $("examples-status").textContent =
      `${s.dataset}: the ${EXAMPLES_TOP_K} images of ${s.images || 0} that excite each filter most`;
  }
}

// Every NDJSON line of a streamed response to `onEvent` as it arrives.
async function readLines(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // Lines end in this chunk or later: search only what arrived.
    let from = buffer.length;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n", from)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      from = 0;
      if (line.trim()) onEvent(JSON.parse(line)); // blank lines: keepalives
    }
  }
}

// The chosen dataset's examples of the filters asked for, beside their pictures.
async function fetchExamples(body, signal) {
  const dataset = $("dataset").value;
  if (!dataset || !body.filters) return;
  $("examples-status").textContent = `${dataset}: looking the index up…`;
  const route = `/v1/models/${encodeURIComponent(body.model)}/datasets/` +
    `${encodeURIComponent(dataset)}:examples`;
  const response = await fetch(route, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "application/x-ndjson" }),
    body: JSON.stringify({ layer: body.layer, filters: body.filters, topK: EXAMPLES_TOP_K }),
    signal,
  });
  if (!response.ok) throw new Error(`${dataset}: ${await failure(response)}`);
  await readLines(response, exampleEvent);
}

function detail(result, name) {
  $("detail-title").textContent = name;
  const image = $("detail-image");
  image.hidden = !result.image;
  image.src = result.image ? "data:image/png;base64," + result.image.data : "";
  image.alt = result.image ? name : "";
  drawCurve(result.lossCurve);
  const numbers = [
    ["Loss", number(result.loss, 4)],
    ["Dead", result.dead ? "yes" : "no"],
    ["Steps", result.steps || 0],
    ["Seconds", number(result.seconds, 3)],
    ["Revived", result.revived || 0],
    ["Cached", result.cached ? "yes" : "no"],
  ];
  $("detail-numbers").replaceChildren(
    ...numbers.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
  // The picture from the bytes already here: no second request, no token needed.
  const link = $("detail-link");
  link.hidden = !result.image;
  if (download) URL.revokeObjectURL(download);
  download = null;
  if (result.image) {
    const bytes = Uint8Array.from(atob(result.image.data), (c) => c.charCodeAt(0));
    download = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    link.href = download;
    link.download = name.replaceAll(" ", "-") + ".png";
  }
  $("detail").showModal();
}

function handle(event, state) {
  if (event.error) throw new Error(event.error.message);
  const result = event.result;
  if (result.accepted) {
    state.accepted = result.accepted;
    tally.total = (result.accepted.filters || []).length;
  } else if (result.filter) {
    const filter = result.filter;
    tally.done += 1;
    tally.dead += filter.dead ? 1 : 0;
    tally.cached += filter.cached ? 1 : 0;
    const index = filter.index || 0;
    const forming = $("tiles").querySelector(`li.forming[data-index="${index}"]`);
    if (forming) forming.remove();
    place(tile(filter, state.accepted), index);
    if (!$("tiles").querySelector('.tile[tabindex="0"]')) {
      $("tiles").querySelector(".tile").tabIndex = 0;
    }
    progress(false);
  } else if (result.preview) {
    formingTile(result.preview);
  } else if (result.summary) {
    progress(true);
  }
}

// In index order, whatever order they finish in: a reload lays out the same.
function place(item, index) {
  const after = [...$("tiles").children].find((li) => Number(li.firstChild.dataset.index) > index);
  $("tiles").insertBefore(item, after || null);
}

// A picture in flight: its tile shows each preview until the final replaces it.
function formingTile(preview) {
  const index = preview.index || 0;
  let item = $("tiles").querySelector(`li.forming[data-index="${index}"]`);
  if (!item) {
    item = document.createElement("li");
    item.className = "forming";
    item.dataset.index = index;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "tile";
    button.dataset.index = index;
    button.tabIndex = -1;
    button.disabled = true; // nothing to open yet
    const caption = document.createElement("span");
    caption.className = "caption";
    button.append(document.createElement("img"), caption);
    item.append(button);
    place(item, index);
  }
  const img = item.querySelector("img");
  img.src = "data:image/png;base64," + preview.image.data;
  img.alt = `filter ${index}, forming: step ${preview.step || 0}`;
  item.querySelector(".caption").textContent = `#${index} · step ${preview.step || 0}`;
}

// FilterResult.lossCurve (float32 little-endian, base64) as the detail's line.
function drawCurve(encoded) {
  const svg = $("detail-curve");
  const bytes = Uint8Array.from(atob(encoded || ""), (c) => c.charCodeAt(0));
  const values = new Float32Array(bytes.buffer, 0, Math.floor(bytes.length / 4));
  svg.hidden = values.length < 2;
  if (svg.hidden) return;
  const low = Math.min(...values);
  const span = Math.max(...values) - low || 1;
  const points = [...values].map((v, i) =>
    `${(240 * i / (values.length - 1)).toFixed(1)},${(58 - 56 * (v - low) / span).toFixed(1)}`);
  svg.querySelector("polyline").setAttribute("points", points.join(" "));
}

async function run(submit) {
  if (submit) submit.preventDefault();
  if (!models.length) {
    // The listing failed (a token was missing): try again with what is entered now.
    // The form does not validate itself (novalidate) so that this runs with empty lists.
    try {
      await loadModels();
      showError("");
    } catch (error) {
      showError(error.message);
      return;
    }
  }
  if (!$("controls").reportValidity()) return;
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  remember();
  showError("");
  $("tiles").replaceChildren();
  examples = new Map();
  $("examples-status").textContent = "";
  Object.assign(tally, { done: 0, total: 0, dead: 0, cached: 0, started: performance.now() });
  $("progress").textContent = "Starting…";
  $("stop").disabled = false;
  let body;
  try {
    body = request();
  } catch (error) {
    showError(error.message);
    $("stop").disabled = true;
    running = null;
    return;
  }
  try {
    const route = body.accentuate ? "/v1/visualize:accentuate" : "/v1/visualize";
    const response = await fetch(route, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "application/x-ndjson" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await failure(response));
    // The examples come beside the pictures; a failure of theirs says so and stops nothing.
    fetchExamples(body, controller.signal).catch((error) => {
      if (error.name !== "AbortError") $("examples-status").textContent = error.message;
    });
    const state = { accepted: null };
    await readLines(response, (event) => handle(event, state));
  } catch (error) {
    if (running !== controller) return; // a newer run replaced this one
    controller.abort(); // stop the server's work too
    if (error.name !== "AbortError") showError(error.message);
    else $("progress").textContent += " · stopped";
  } finally {
    if (running === controller) {
      running = null;
      $("stop").disabled = true;
    }
  }
}

// Arrow keys move between pictures, row by row as the grid lays them out.
function navigate(event) {
  const tiles = [...document.querySelectorAll(".tile")];
  const at = tiles.indexOf(document.activeElement);
  if (at < 0) return;
  const columns = tiles.filter((t) => t.offsetTop === tiles[0].offsetTop).length || 1;
  const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns }[event.key];
  const home = { Home: 0, End: tiles.length - 1 }[event.key];
  const next = step !== undefined ? at + step : home;
  if (next === undefined) return;
  event.preventDefault();
  const target = tiles[Math.max(0, Math.min(tiles.length - 1, next))];
  for (const tile of tiles) tile.tabIndex = tile === target ? 0 : -1;
  target.focus();
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let at = 0; at < bytes.length; at += 0x8000) { // in slices: no argument-count limit
    text += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  }
  return btoa(text);
}

function channelCard(channel) {
  const item = document.createElement("li");
  const figure = document.createElement("figure");
  figure.className = "channel";
  const img = document.createElement("img");
  img.src = "data:image/png;base64," + channel.heatmap.data;
  img.alt = `heatmap of channel ${channel.channel || 0}`;
  const caption = document.createElement("figcaption");
  caption.className = "caption";
  caption.textContent = `#${channel.channel || 0} · ${(100 * (channel.share || 0)).toFixed(1)}%`;
  const accentuate = document.createElement("button");
  accentuate.type = "button";
  accentuate.className = "accentuate";
  accentuate.dataset.channel = channel.channel || 0;
  accentuate.textContent = "Accentuate";
  accentuate.addEventListener("click", () => {
    $("objective").value = "";
    $("filters").value = String(channel.channel || 0);
    $("photo-start").checked = true;
    run();
  });
  figure.append(img, caption, accentuate);
  item.append(figure);
  return item;
}

// The image to the analyze route as it is (its type says PNG or JPEG), then its top channels.
async function analyse(file) {
  showError("");
  if (!PHOTO_TYPES.includes(file.type)) {
    $("photo-status").textContent = `${file.name}: not a PNG or JPEG; choose one of those`;
    return;
  }
  $("photo-status").textContent = `Analysing ${file.name}…`;
  const bytes = await file.arrayBuffer();
  const query = new URLSearchParams({ layer: $("layer").value, top_k: PHOTO_TOP_K });
  const model = encodeURIComponent($("model").value);
  const response = await fetch(`/v1/models/${model}:analyze?${query}`, {
    method: "POST",
    headers: headers({ "Content-Type": file.type }),
    body: bytes,
  });
  if (!response.ok) {
    $("photo-status").textContent = `${file.name}: ${await failure(response)}`;
    return;
  }
  const found = await response.json();
  photo = { bytes: base64(bytes), name: file.name };
  $("photo-seen").src = "data:image/png;base64," + found.seen.data;
  $("photo-channels").replaceChildren(...(found.top || []).map(channelCard));
  $("photo-start").checked = false;
  $("photo-result").hidden = false;
  $("photo-status").textContent =
    `${file.name} on ${found.layer}: the ${(found.top || []).length} channels it excites most`;
}

function watchDrops() {
  const zone = $("photo-drop");
  const chosen = (file) => file && analyse(file).catch((error) => showError(error.message));
  $("photo-file").addEventListener("change", () => chosen($("photo-file").files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault(); // allows the drop
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault(); // the browser would open the file instead
    zone.classList.remove("over");
    chosen(event.dataTransfer.files[0]);
  });
}

async function start() {
  watchDrops();
  $("controls").addEventListener("submit", run);
  $("model").addEventListener("change", () => fillLayers());
  $("dataset").addEventListener("change", () => $("dataset").value && run());
  $("stop").addEventListener("click", () => running && running.abort());
  $("tiles").addEventListener("keydown", navigate);
  try {
    // A first visit runs at once too: what the cache holds shows at once, the rest forms.
    await loadModels();
    await run();
  } catch (error) {
    showError(error.message);
  }
}

start();

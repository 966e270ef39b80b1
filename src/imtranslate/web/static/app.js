// imtranslate page: upload, run the style swap once on the server, then blend in the browser.
//
// SPEC S3: R3 = a*R1 + (1-a)*R2, G3 = b*G1 + (1-b)*G2, B3 = c*B1 + (1-c)*B2, picture 1 being the
// content and picture 2 the initial stylised picture. Both arrive as lossless PNGs at the
// content's size; their pixels are kept in typed arrays and every slider move recomputes the
// canvas from them (no request, no network run). The canvas rounds half to even, as
// imtranslate.infer.stylize.blend does, so the page and the Python API give the same pixels.
"use strict";

const $ = (id) => document.getElementById(id);
const LUMA = [0.299, 0.587, 0.114]; // BT.601, as preserve_colors() in Python
const state = { content: null, stylized: null, width: 0, height: 0, renders: 0, pending: false };
window.imtranslateState = state; // for tests and the curious

function showError(message) { $("error").textContent = message || ""; }

async function postForm(url, form) {
  const resp = await fetch(url, { method: "POST", body: form });
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON: report the status below */ }
  if (!resp.ok) throw new Error((body && (body.error || body.detail && JSON.stringify(body.detail))) ||
                                `the server answered ${resp.status}`);
  return body;
}

function loadPixels(dataUrl) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(img, 0, 0);
      resolve(ctx.getImageData(0, 0, c.width, c.height).data);
    };
    img.onerror = () => reject(new Error("the browser could not decode the returned picture"));
    img.src = dataUrl;
  });
}

function weights() {
  return ["r", "g", "b"].map((k) => Number($(k).value) / 100);
}

// The blend itself: one pass over the pixels.
function render() {
  state.pending = false;
  if (!state.content) return;
  const [a, b, c] = weights();
  const w = [a, b, c];
  const src1 = state.content, src2 = state.stylized;
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const out = ctx.createImageData(state.width, state.height);
  const dst = out.data; // Uint8ClampedArray: stores round-half-even of the clamped value
  const preserve = $("preserve").checked;
  for (let i = 0; i < dst.length; i += 4) {
    let r2 = src2[i], g2 = src2[i + 1], b2 = src2[i + 2];
    if (preserve) { // stylised luminance, content colours: content + (Y2 - Y1) on each channel
      const dy = LUMA[0] * (r2 - src1[i]) + LUMA[1] * (g2 - src1[i + 1]) + LUMA[2] * (b2 - src1[i + 2]);
      r2 = Math.min(255, Math.max(0, src1[i] + dy));
      g2 = Math.min(255, Math.max(0, src1[i + 1] + dy));
      b2 = Math.min(255, Math.max(0, src1[i + 2] + dy));
    }
    dst[i] = w[0] * src1[i] + (1 - w[0]) * r2;
    dst[i + 1] = w[1] * src1[i + 1] + (1 - w[1]) * g2;
    dst[i + 2] = w[2] * src1[i + 2] + (1 - w[2]) * b2;
    dst[i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  state.renders += 1;
  canvas.dataset.weights = w.map((x) => x.toFixed(2)).join(",");
  canvas.dataset.renders = String(state.renders);
  for (const k of ["r", "g", "b"]) $(k + "-val").textContent = (Number($(k).value) / 100).toFixed(2);
}

function scheduleRender() { // at most one repaint per frame, however fast the slider moves
  if (!state.pending) { state.pending = true; requestAnimationFrame(render); }
}

function onSlider(ev) {
  if ($("lock").checked) for (const k of ["r", "g", "b"]) $(k).value = ev.target.value;
  scheduleRender();
}

async function stylize(ev) {
  ev.preventDefault();
  showError("");
  const form = new FormData();
  form.append("content", $("content").files[0]);
  form.append("style", $("style").files[0]);
  form.append("patch", $("patch").value);
  form.append("stride", $("stride").value);
  form.append("fast", $("fast").checked ? "true" : "false");
  if (!$("steps-label").hidden) form.append("steps", $("steps").value);
  $("run").disabled = true;
  $("status").textContent = "running the style swap…";
  $("canvas").dataset.ready = "0";
  try {
    const res = await postForm("/api/stylize", form);
    const [c1, c2] = await Promise.all([loadPixels(res.content), loadPixels(res.stylized)]);
    Object.assign(state, { content: c1, stylized: c2, width: res.width, height: res.height });
    $("content-img").src = res.content;
    $("stylized-img").src = res.stylized;
    const canvas = $("canvas");
    canvas.width = res.width; canvas.height = res.height;
    $("result").hidden = false;
    render();
    canvas.dataset.ready = "1";
    $("status").textContent = `done in ${res.seconds} s (${res.width}×${res.height})`;
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
  } finally {
    $("run").disabled = false;
  }
}

async function translate(ev) {
  ev.preventDefault();
  showError("");
  const form = new FormData();
  form.append("image", $("t-image").files[0]);
  $("t-run").disabled = true;
  $("t-status").textContent = "translating…";
  try {
    const res = await postForm("/api/translate", form);
    $("t-input").src = res.input;
    $("t-output").src = res.output;
    $("t-download").href = res.output;
    $("t-result").hidden = false;
    $("t-status").textContent = `done in ${res.seconds} s`;
  } catch (e) {
    showError(e.message);
    $("t-status").textContent = "";
  } finally {
    $("t-run").disabled = false;
  }
}

function showSplit() {
  const img = $("r-before");
  const w = img.clientWidth;
  $("r-after-wrap").style.width = `${(w * $("r-split").value) / 100}px`;
  $("r-after").style.width = `${w}px`;
  $("r-compare").dataset.split = $("r-split").value;
}

function drawBoxes(faces, width) {
  const img = $("r-before"), c = $("r-boxes");
  c.width = img.clientWidth; c.height = img.clientHeight;
  const s = img.clientWidth / width, ctx = c.getContext("2d");
  ctx.strokeStyle = "#00e676"; ctx.fillStyle = "#ff1744"; ctx.lineWidth = 2;
  for (const f of faces) {
    const [x1, y1, x2, y2] = f.box;
    ctx.strokeRect(x1 * s, y1 * s, (x2 - x1) * s, (y2 - y1) * s);
    for (const [x, y] of f.landmarks) ctx.fillRect(x * s - 2, y * s - 2, 4, 4);
  }
}

async function restore(ev) {
  ev.preventDefault();
  showError("");
  const form = new FormData();
  form.append("image", $("r-image").files[0]);
  $("r-run").disabled = true;
  $("r-status").textContent = "restoring…";
  $("r-result").dataset.ready = "0";
  try {
    const res = await postForm("/api/restore", form);
    await Promise.all([["r-before", res.before], ["r-after", res.after]].map(([id, src]) => new Promise((ok) => {
      $(id).onload = ok; $(id).src = src;
    })));
    $("r-download").href = res.after;
    $("r-result").hidden = false;
    showSplit();
    drawBoxes(res.faces, res.width);
    $("r-faces").textContent = `${res.found} face(s) found, ${res.faces.length} enhanced` +
      (res.note ? ` (${res.note})` : "");
    $("r-status").textContent = `done in ${res.seconds} s (${res.width}×${res.height})`;
    $("r-result").dataset.ready = "1";
  } catch (e) {
    showError(e.message);
    $("r-status").textContent = "";
  } finally {
    $("r-run").disabled = false;
  }
}

function download() {
  $("canvas").toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "stylized.png";
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }, "image/png");
}

function selectTab(name) {
  for (const t of ["style", "translate", "restore"]) {
    $("panel-" + t).hidden = t !== name;
    $("tab-" + t).classList.toggle("active", t === name);
  }
}

async function init() {
  $("tab-style").addEventListener("click", () => selectTab("style"));
  $("tab-translate").addEventListener("click", () => selectTab("translate"));
  $("style-form").addEventListener("submit", stylize);
  $("translate-form").addEventListener("submit", translate);
  $("tab-restore").addEventListener("click", () => selectTab("restore"));
  $("restore-form").addEventListener("submit", restore);
  $("r-split").addEventListener("input", showSplit);
  for (const k of ["r", "g", "b"]) $(k).addEventListener("input", onSlider);
  $("lock").addEventListener("change", () => { if ($("lock").checked) onSlider({ target: $("r") }); });
  $("preserve").addEventListener("change", scheduleRender);
  $("download").addEventListener("click", download);
  try {
    const info = await (await fetch("/api/info")).json();
    const lim = info.limits;
    $("limits").textContent = `Uploads: ${lim.types.join(", ")}; at most ${lim.max_mb} MB and ` +
      `${lim.max_pixels.toLocaleString()} pixels per picture.`;
    $("style-missing").hidden = info.stylize;
    $("style-form").hidden = !info.stylize;
    $("translate-missing").hidden = info.translate;
    $("translate-form").hidden = !info.translate;
    if (info.stylize) { $("patch").value = info.patch; $("stride").value = info.stride; }
    if (info.optimize_only) { $("steps-label").hidden = false; $("steps").value = info.steps; }
    $("restore-missing").hidden = info.restore;
    $("restore-form").hidden = !info.restore;
    if (!info.stylize && info.translate) selectTab("translate");
    if (!info.stylize && !info.translate && info.restore) selectTab("restore");
  } catch (e) {
    showError("cannot reach the server: " + e.message);
  }
  document.body.dataset.ready = "1";
}

init();

// litefer web demo: webcam or photo -> POST /v1/predict -> boxes, labels and probability bars.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const video = $("video"), photo = $("photo"), overlay = $("overlay"), stage = $("stage");
  const statusEl = $("status"), barsEl = $("bars"), facesEl = $("faces"), topEl = $("top-label");
  const keyBox = $("key-box"), keyInput = $("api-key");
  const COLORS = {
    neutral: "#b0bec5", happy: "#ffd54f", surprise: "#4fc3f7", sad: "#7986cb",
    angry: "#ef5350", disgust: "#66bb6a", fear: "#ab47bc", contempt: "#ff8a65",
  };
  const MAX_SIDE = 640;          // frames are downscaled to this before upload
  let labels = [];               // the model's label order, from /v1/models
  let stream = null, timer = null, inFlight = false, mode = "none", lastResult = null;
  const grab = document.createElement("canvas");

  keyInput.value = localStorage.getItem("litefer-api-key") || "";
  keyInput.addEventListener("change", () => {
    localStorage.setItem("litefer-api-key", keyInput.value);
    loadModelInfo();
  });

  function headers() {
    return keyInput.value ? { "X-API-Key": keyInput.value } : {};
  }
  function setStatus(text) { statusEl.textContent = text; }
  function color(label) { return COLORS[label] || "#4fc3f7"; }

  async function loadModelInfo() {
    try {
      const r = await fetch("/v1/models", { headers: headers() });
      const body = await r.json();
      if (r.status === 401) {
        keyBox.hidden = false;
        $("model-info").textContent = "this server needs an API key";
        return;
      }
      if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
      const m = body.models[0];
      labels = m.labels || [];
      $("model-info").textContent =
        `model ${m.id}` + (m.arch ? ` (${m.arch})` : "") + (labels.length ? ` · ${labels.length} expressions` : "");
      drawBars({});
    } catch (e) {
      $("model-info").textContent = "model info unavailable: " + e.message;
    }
  }

  function drawBars(probs) {
    const names = labels.length ? labels : Object.keys(probs);
    barsEl.replaceChildren();
    for (const name of names) {
      const p = probs[name] || 0;
      const n = document.createElement("span"); n.className = "bar-name"; n.textContent = name;
      const t = document.createElement("span"); t.className = "bar-track";
      const f = document.createElement("span"); f.className = "bar-fill";
      f.style.display = "block"; f.style.width = (100 * p).toFixed(1) + "%"; f.style.background = color(name);
      t.appendChild(f);
      const v = document.createElement("span"); v.className = "bar-val"; v.textContent = (100 * p).toFixed(0) + "%";
      v.dataset.label = name; v.dataset.prob = String(p);
      barsEl.append(n, t, v);
    }
  }

  function fitOverlay() {
    const el = mode === "camera" ? video : photo;
    const w = el.clientWidth, h = el.clientHeight, dpr = window.devicePixelRatio || 1;
    overlay.style.left = el.offsetLeft + "px"; overlay.style.top = el.offsetTop + "px";
    overlay.style.width = w + "px"; overlay.style.height = h + "px";
    overlay.width = Math.round(w * dpr); overlay.height = Math.round(h * dpr);
    return { w, h, dpr };
  }

  function render(result) {
    lastResult = result;
    window.liteferLast = result;          // for tests and the console
    const { w, h, dpr } = fitOverlay();
    const ctx = overlay.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const sx = w / result.width, sy = h / result.height;
    facesEl.replaceChildren();
    result.faces.forEach((face, i) => {
      const [x1, y1, x2, y2] = face.box;
      const c = color(face.label);
      ctx.lineWidth = 3; ctx.strokeStyle = c;
      ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      if (Array.isArray(face.landmarks)) {
        ctx.fillStyle = c;
        for (const [lx, ly] of face.landmarks) { ctx.beginPath(); ctx.arc(lx * sx, ly * sy, 2.5, 0, 2 * Math.PI); ctx.fill(); }
      }
      const text = `${face.label} ${(100 * face.score).toFixed(0)}%`;
      ctx.font = "600 16px system-ui, sans-serif";
      const tw = ctx.measureText(text).width + 10, ty = Math.max(0, y1 * sy - 22);
      ctx.fillStyle = c; ctx.fillRect(x1 * sx, ty, tw, 22);
      ctx.fillStyle = "#02131c"; ctx.fillText(text, x1 * sx + 5, ty + 16);
      const li = document.createElement("li");
      const lab = document.createElement("span"); lab.className = "face-label"; lab.textContent = face.label;
      li.append(lab, ` ${(100 * face.score).toFixed(0)}% at [${face.box.map((v) => Math.round(v)).join(", ")}]`);
      facesEl.appendChild(li);
    });
    // the chart shows the largest face
    let best = null, area = -1;
    for (const f of result.faces) {
      const a = (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]);
      if (a > area) { area = a; best = f; }
    }
    topEl.textContent = best ? best.label : "no face";
    topEl.style.color = best ? color(best.label) : "";
    drawBars(best ? best.probs : {});
    $("timing").textContent = `${result.width}×${result.height} · model ${result.time_ms} ms` +
      (result.truncated ? ` · more than ${result.max_faces} faces: the ${result.max_faces} most certain shown` : "");
  }

  async function send(blob, name) {
    const form = new FormData();
    form.append("file", blob, name);
    const t0 = performance.now();
    const r = await fetch("/v1/predict", { method: "POST", body: form, headers: headers() });
    const body = await r.json();
    if (!r.ok) {
      if (r.status === 401) keyBox.hidden = false;
      if (r.status === 429 || r.status === 503) {   // busy or rate limited: wait as long as the server asks
        pauseUntil = Date.now() + 1000 * (Number(r.headers.get("Retry-After")) || 1);
      }
      throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : r.statusText);
    }
    body.round_trip_ms = performance.now() - t0;
    return body;
  }

  // ---- camera
  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setStatus("this browser cannot open a camera here (needs https or localhost)"); return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (e) { setStatus("camera unavailable: " + e.message); return; }
    mode = "camera";
    photo.hidden = true; video.hidden = false; $("placeholder").hidden = true;
    video.srcObject = stream;
    await video.play();
    $("start-camera").disabled = true; $("stop-camera").disabled = false;
    setStatus("camera on");
    schedule();
  }

  function stopCamera() {
    if (timer) { clearInterval(timer); timer = null; }
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
    video.srcObject = null;
    $("start-camera").disabled = false; $("stop-camera").disabled = true;
    setStatus("camera off");
  }

  function schedule() {
    if (timer) clearInterval(timer);
    const fps = Number($("fps").value) || 4;
    timer = setInterval(tick, 1000 / fps);
  }

  let pauseUntil = 0;

  function tick() {
    if (mode !== "camera" || inFlight || !video.videoWidth) return;   // one request at a time
    if (Date.now() < pauseUntil) return;
    const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
    grab.width = Math.round(video.videoWidth * scale); grab.height = Math.round(video.videoHeight * scale);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    inFlight = true;
    grab.toBlob(async (blob) => {
      try {
        const res = await send(blob, "frame.jpg");
        if (mode === "camera") { render(res); setStatus(`camera on · ${res.faces.length} face(s) · ${res.round_trip_ms.toFixed(0)} ms round trip`); }
      } catch (e) { setStatus("error: " + e.message); }
      finally { inFlight = false; }
    }, "image/jpeg", 0.8);
  }

  // ---- photo
  async function onPhoto(ev) {
    const file = ev.target.files && ev.target.files[0];
    if (!file) return;
    if (stream) stopCamera();
    mode = "photo";
    video.hidden = true; photo.hidden = false; $("placeholder").hidden = true;
    photo.src = URL.createObjectURL(file);
    await photo.decode().catch(() => {});
    setStatus("analysing " + file.name + "…");
    try {
      const res = await send(file, file.name);
      render(res);
      setStatus(`${file.name}: ${res.faces.length} face(s)`);
    } catch (e) {
      const ctx = overlay.getContext("2d"); ctx.clearRect(0, 0, overlay.width, overlay.height);
      facesEl.replaceChildren(); topEl.textContent = "—"; drawBars({});
      setStatus("error: " + e.message);
    }
  }

  $("start-camera").addEventListener("click", startCamera);
  $("stop-camera").addEventListener("click", stopCamera);
  $("fps").addEventListener("change", () => { if (timer) schedule(); });
  $("photo-input").addEventListener("change", onPhoto);
  window.addEventListener("resize", () => { if (lastResult) render(lastResult); });
  loadModelInfo();
})();

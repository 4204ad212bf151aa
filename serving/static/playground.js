// ganforge playground: a page over the service's own HTTP API (GET /models, /docs.json, POST /generate,
// /generate_conditional, /style_mix, /interpolate). No framework, no network but this server.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  let apiKey = null; // in this closure only: never in the URL, a cookie or storage
  let catalog = null; // the GET /models answer
  let routes = {}; // operationId -> path, from the server's route table (GET /docs.json)
  let model = null; // the chosen model's entry
  let lastRun = null; // re-runs the request whose images are shown (when the truncation moves)
  let ticket = 0; // the newest request; older answers are dropped
  let rerunTimer = null;

  // -- JSON with exact seeds: seeds go up to 2**63 - 1, past JavaScript's safe integers ---------
  const MARK = "\u2063int:";
  class Int {
    constructor(text) { this.text = text; }
    toJSON() { return MARK + this.text; }
    toString() { return this.text; }
  }
  const encodeBody = (body) =>
    JSON.stringify(body).replace(new RegExp(`"${MARK}(\\d+)"`, "g"), "$1");
  const decodeBody = (text) =>
    JSON.parse(text, (key, value, ctx) =>
      typeof value === "number" && !Number.isSafeInteger(value) && ctx && /^\d+$/.test(ctx.source)
        ? ctx.source
        : value);

  class ApiError extends Error {
    constructor(status, message, field, retryAfter) {
      super(message);
      this.status = status;
      this.field = field;
      this.retryAfter = retryAfter;
    }
  }

  async function api(path, body, binary = false) {
    const headers = { Accept: binary ? "image/gif, image/webp" : "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
    let r;
    try {
      r = await fetch(path, {
        method: body === undefined ? "GET" : "POST",
        headers,
        body: body === undefined ? undefined : encodeBody(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (exc) {
      throw new ApiError(0, `the server did not answer (${exc.message})`, null, null);
    }
    if (binary && r.ok) return r.blob();
    const text = await r.text();
    let data = null;
    try { data = decodeBody(text); } catch { /* not JSON: shown as text below */ }
    if (!r.ok) {
      const message = (data && data.error) || text.slice(0, 300) || r.statusText;
      throw new ApiError(r.status, message, data ? data.field : null, r.headers.get("Retry-After"));
    }
    return data;
  }

  // -- errors beside the field they name -----------------------------------------------------
  function clearErrors() {
    for (const el of $$(".err")) el.textContent = "";
    for (const el of $$("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  function errorSlot(field, scope) {
    if (!field) return $("#general-error");
    const names = [field, field.replace(/\[\d+\]$/, ""), field.replace(/\[\d+\]/g, "")];
    for (const root of [...[scope].flat(), $("#shared"), $("#model-panel"), $("#connect")]) {
      if (!root) continue;
      for (const name of names) {
        const el = $(`.err[data-field="${CSS.escape(name)}"]`, root);
        if (el) return el;
      }
    }
    return $("#general-error");
  }

  function showError(exc, scope) {
    const slot = errorSlot(exc.field, scope);
    let text = exc.message;
    if (exc.status) text = `${exc.status}: ${text}`;
    if (exc.retryAfter) text += ` (retry after ${exc.retryAfter} s)`;
    if (slot.id === "general-error" && exc.field) text += ` [field ${exc.field}]`;
    slot.textContent = text;
    const input = slot.parentElement && $("input, select", slot.parentElement);
    if (input && slot.id !== "general-error") input.setAttribute("aria-invalid", "true");
    if (exc.status === 401) askForKey();
  }

  // -- reading the form: what the user typed is sent as typed, so the server judges it -------
  function intOrText(text) {
    const t = text.trim();
    if (/^\d+$/.test(t)) return new Int(t);
    if (/^-\d+$/.test(t)) return Number(t);
    return t;
  }

  function seedList(text, field) {
    const out = [];
    for (const token of text.split(/[\s,]+/).filter(Boolean)) {
      const m = /^(\d+)-(\d+)$/.exec(token);
      if (!m) { out.push(intOrText(token)); continue; }
      const a = BigInt(m[1]), b = BigInt(m[2]);
      if (b < a || b - a >= 1024n) {
        throw new ApiError(0, `range ${token}: use a-b with a <= b and at most 1024 seeds`, field);
      }
      for (let s = a; s <= b; s++) out.push(new Int(s.toString()));
    }
    return out;
  }

  const truncation = () => Number($("#truncation").value);
  const radio = (name) => $(`input[name="${name}"]:checked`).value;

  function generateRequest() {
    const body = { model: model.name, truncation: truncation() };
    const method = $("#filter-method").value;
    const count = $("#n").value.trim();
    if (radio("seed-mode") === "range") {
      if ($("#seed").value.trim()) body.seed = intOrText($("#seed").value);
      if (count) body.n = intOrText(count);
    } else {
      body.seeds = seedList($("#seeds").value, "seeds");
      if (method !== "none" && count) body.n = intOrText(count);
    }
    if (method !== "none") body.filter = { method, oversample: intOrText($("#oversample").value) };
    const classes = $$("#classes input:checked").map((el) => Number(el.value));
    if (model.conditional && classes.length) {
      body.class_label = classes.length === 1 ? classes[0] : classes;
      return [routes.generate_conditional, body];
    }
    return [routes.generate, body];
  }

  function styleMixRequest() {
    const choice = $("#col-styles").value;
    return [routes.style_mix, {
      model: model.name,
      truncation: truncation(),
      row_seeds: seedList($("#row-seeds").value, "row_seeds"),
      col_seeds: seedList($("#col-seeds").value, "col_seeds"),
      col_styles: choice === "custom" ? $("#col-layers").value : choice,
    }];
  }

  function interpolateRequest() {
    const body = {
      model: model.name,
      truncation: truncation(),
      seeds: [intOrText($("#from-seed").value), intOrText($("#to-seed").value)],
      steps: intOrText($("#steps").value),
      space: radio("space"),
    };
    const cls = $("#interp-class").value;
    if (model.conditional && cls !== "") body.class_label = Number(cls);
    return [routes.interpolate, body];
  }

  // the latent walk: one looping animation through the seeds (interpolate's "animation" output)
  function walkRequest() {
    const body = {
      model: model.name,
      truncation: truncation(),
      seeds: seedList($("#walk-seeds").value, "seeds"),
      output: "animation",
      format: $("#walk-format").value,
      frames: intOrText($("#frames").value),
      fps: intOrText($("#fps").value),
      loop: $("#walk-loop").checked,
      scale: intOrText($("#walk-scale").value),
      space: radio("space"),
    };
    const cls = $("#interp-class").value;
    if (model.conditional && cls !== "") body.class_label = Number(cls);
    return [routes.interpolate, body];
  }

  const REQUESTS = { generate: generateRequest, style_mix: styleMixRequest, interpolate: interpolateRequest };

  async function run(tab, build = REQUESTS[tab], show = render, form = $(`#tab-${tab}`)) {
    clearErrors();
    const mine = ++ticket;
    let path, body;
    try {
      [path, body] = build();
    } catch (exc) {
      if (exc instanceof ApiError) return showError(exc, form);
      throw exc;
    }
    document.body.classList.add("busy");
    try {
      const answer = await api(path, body, body.output === "animation");
      if (mine !== ticket) return;
      lastRun = () => run(tab, build, show, form);
      await show(tab, answer, body);
    } catch (exc) {
      if (mine !== ticket) return;
      if (!(exc instanceof ApiError)) throw exc;
      showError(exc, form);
    } finally {
      if (mine === ticket) document.body.classList.remove("busy");
    }
  }

  // -- results ---------------------------------------------------------------------------------
  const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const className = (c) => (c ? (c.name === String(c.index) ? `${c.index}` : `${c.index} · ${c.name}`) : null);

  function card(answer, image, title, filename) {
    const fig = document.createElement("figure");
    fig.className = "card";
    fig.dataset.seed = image.seed ?? "";
    fig.dataset.score = image.score;
    fig.dataset.class = image.class ? image.class.index : "";
    const img = document.createElement("img");
    img.src = `data:${answer.media_type};base64,${image.data}`;
    img.alt = title;
    img.title = title;
    const cap = document.createElement("figcaption");
    const lines = [title];
    if (image.class) lines.push(`class ${className(image.class)}`);
    lines.push(`D ${fmt(image.score)}`);
    for (const line of lines) {
      const span = document.createElement("span");
      span.textContent = line;
      cap.append(span);
    }
    const a = document.createElement("a");
    a.href = img.src;
    a.download = `${answer.model}-${filename}.${answer.format === "jpeg" ? "jpg" : answer.format}`;
    a.textContent = "download";
    a.className = "download";
    cap.append(a);
    fig.append(img, cap);
    return fig;
  }

  function render(tab, answer) {
    const box = $("#images");
    box.replaceChildren();
    box.className = tab;
    box.dataset.truncation = answer.truncation;
    box.dataset.count = answer.count;
    const cell = Math.max(96, Math.min(160, model.resolution * 3));
    box.style.setProperty("--cell", `${cell}px`);
    const report = [`${answer.count} image${answer.count === 1 ? "" : "s"} from ${answer.model}`,
      `ψ ${answer.truncation}`];
    if (answer.ungated) report.push("served ungated (GAN_ALLOW_UNGATED)");
    if (tab === "generate") {
      for (const im of answer.images) box.append(card(answer, im, `seed ${im.seed}`, `seed${im.seed}`));
      const f = answer.filter;
      if (f && f.method !== "none") {
        let line = `${f.method} filter: ${f.returned} of ${f.generated} kept, acceptance rate ` +
          `${(100 * f.acceptance_rate).toFixed(1)}%`;
        if (f.shortfall) line += ` (${f.shortfall} short: raise oversample)`;
        report.push(line);
      }
    } else if (tab === "style_mix") {
      box.style.setProperty("--cols", answer.cols + 1);
      const corner = document.createElement("div");
      corner.className = "corner";
      corner.textContent = `rows × columns, layers ${answer.col_styles.join(",")} from columns`;
      box.append(corner);
      for (const im of answer.images) {
        const s = im.style;
        const title = s.source === "mix" ? `row ${s.row_seed} × col ${s.col_seed}`
          : s.source === "row" ? `row seed ${s.row_seed}` : `col seed ${s.col_seed}`;
        const name = s.source === "mix" ? `mix${s.row_seed}x${s.col_seed}` : `${s.source}${im.seed}`;
        const fig = card(answer, im, title, name);
        fig.dataset.source = s.source;
        box.append(fig);
      }
      report.push(`${answer.rows} × ${answer.cols} style-mixing grid`);
    } else {
      box.style.setProperty("--cols", answer.images.length);
      answer.images.forEach((im, i) => {
        const s = im.style;
        box.append(card(answer, im, `${s.from_seed}→${s.to_seed} t=${fmt(s.t, 2)}`, `interp${s.from_seed}-${s.to_seed}-${i}`));
      });
      report.push(`interpolation in ${answer.space}`);
    }
    $("#report").textContent = report.join(" · ");
  }

  const dataUrl = (blob) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);  // the page's CSP allows data: images, not blob:
  });

  async function renderWalk(tab, blob, body) {
    const src = await dataUrl(blob);
    const box = $("#images");
    box.replaceChildren();
    box.className = "walk";
    const fig = document.createElement("figure");
    fig.className = "animation";
    const img = document.createElement("img");
    img.src = src;
    const path = body.seeds.map(String).join("→") + (body.loop ? `→${body.seeds[0]}` : "");
    img.alt = img.title = `walk ${path}`;
    const cap = document.createElement("figcaption");
    cap.textContent = `walk ${path} in ${body.space}, ${body.frames} frames per segment, ${body.fps} fps · `;
    const a = document.createElement("a");
    a.href = src;
    a.download = `${body.model}-walk-${body.seeds.map(String).join("-")}.${body.format}`;
    a.textContent = "download";
    a.className = "download";
    cap.append(a);
    fig.append(img, cap);
    box.append(fig);
    $("#report").textContent = `latent walk from ${body.model} · ψ ${body.truncation}`;
  }

  // -- the model panel ---------------------------------------------------------------------------
  const KINDS = { dcgan: "DCGAN", cgan: "conditional GAN", stylegan: "StyleGAN-lite" };

  function describeGate(g, ungated) {
    if (!g) return "–";
    let text = g.verdict || (g.passed ? "passed" : "not passed");
    if (g.distance !== null && g.distance !== undefined) {
      text += ` · ${g.metric || "distance"} ${fmt(g.distance)}`;
      if (g.threshold !== null && g.threshold !== undefined) text += ` (threshold ${fmt(g.threshold)})`;
      if (g.n) text += ` on ${g.n} images`;
    }
    if (ungated) text += " · served ungated";
    return text;
  }

  function showModel() {
    model = catalog.models.find((m) => m.name === $("#model").value);
    const info = $("#model-info");
    info.replaceChildren();
    const rows = [
      ["kind", KINDS[model.kind] || model.kind],
      ["resolution", `${model.resolution}×${model.resolution}, ${model.channels} channel${model.channels === 1 ? "" : "s"}`],
      ["gate", describeGate(model.gate, model.ungated)],
      ["provider", model.provider],
    ];
    if (model.conditional) rows.push(["classes", model.classes.map((n, i) => (n === String(i) ? n : `${i} ${n}`)).join(", ")]);
    if (model.gate && model.gate.reason && !model.gate.passed) rows.push(["gate says", model.gate.reason]);
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dd.dataset.key = k;
      if (k === "gate") dd.className = model.gate && model.gate.passed ? "pass" : "fail";
      info.append(dt, dd);
    }
    // truncation: DCGAN/cGAN 0.05 <= psi <= 1, StyleGAN-lite -2..2
    const slider = $("#truncation");
    const style = model.kind === "stylegan";
    slider.min = style ? "-2" : "0.05";
    slider.max = style ? "2" : "1";
    if (truncation() > Number(slider.max) || truncation() < Number(slider.min)) slider.value = "1";
    $("#truncation-hint").textContent = style ? "−2…2, 1 = none" : "0.05 ≤ ψ ≤ 1, 1 = none";
    showTruncation();
    // filters
    const method = $("#filter-method");
    const before = method.value;
    method.replaceChildren(...model.filters.map((f) => new Option(f, f)));
    if (model.filters.includes(before)) method.value = before;
    // classes
    $("#class-row").hidden = !model.conditional;
    $("#interp-class-row").hidden = !model.conditional;
    $("#classes").replaceChildren(...model.classes.map((name, i) => {
      const label = document.createElement("label");
      label.className = "choice";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = String(i);
      label.append(box, ` ${name === String(i) ? i : `${i} ${name}`}`);
      return label;
    }));
    $("#interp-class").replaceChildren(new Option("class of the first seed", ""),
      ...model.classes.map((name, i) => new Option(name === String(i) ? name : `${i} · ${name}`, String(i))));
    // StyleGAN-lite only: style mixing and w interpolation
    $("#style-mix-note").hidden = style;
    for (const el of $$("#tab-style_mix .row")) el.hidden = !style;
    $("#space-w").disabled = !style;
    if (!style) $('input[name="space"][value="z"]').checked = true;
    const ranges = model.style_ranges || {};
    $("#col-styles").replaceChildren(
      ...Object.entries(ranges).map(([name, [a, b]]) => new Option(`${name} (layers ${a}–${b - 1})`, name)),
      new Option("layer range…", "custom"));
    $("#col-layers").hidden = $("#col-styles").value !== "custom";
    $("#images").replaceChildren();
    $("#report").textContent = "";
    lastRun = null;
    clearErrors();
  }

  function showTruncation() {
    $("#truncation-value").textContent = truncation().toFixed(2);
  }

  // -- connecting ----------------------------------------------------------------------------
  function askForKey() {
    $("#connect").hidden = false;
    $("#status").textContent = "this server needs an API key";
    $("#api-key").focus();
  }

  function operationPaths(doc) {
    const out = {};
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const op of Object.values(ops)) out[op.operationId] = path;
    }
    return out;
  }

  async function connect() {
    clearErrors();
    try {
      catalog = await api("/models");
      routes = operationPaths(await api("/docs.json"));
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      $("#status").textContent = `GET /models failed (${exc.status || "no answer"})`;
      if (exc.status === 401) return showError(exc, $("#connect"));
      $("#app").hidden = false;
      return showError(exc, null);
    }
    $("#connect").hidden = true;
    $("#key-note").hidden = !apiKey;
    $("#app").hidden = false;
    const names = catalog.models.map((m) => m.name);
    $("#status").textContent = `${names.length} model${names.length === 1 ? "" : "s"} served`;
    const select = $("#model");
    const before = select.value;
    select.replaceChildren(...catalog.models.map((m) =>
      new Option(`${m.name} — ${KINDS[m.kind] || m.kind}, ${m.resolution}²`, m.name)));
    if (names.includes(before)) select.value = before;
    showModel();
  }

  function selectTab(tab) {
    for (const b of $$(".tabs [role=tab]")) b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    for (const f of $$("form.tab")) f.hidden = f.dataset.tab !== tab;
  }

  function init() {
    $("#use-key").addEventListener("click", () => {
      apiKey = $("#api-key").value.trim() || null;
      $("#api-key").value = "";
      connect();
    });
    $("#api-key").addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); $("#use-key").click(); }
    });
    $("#forget-key").addEventListener("click", () => {
      apiKey = null;
      $("#key-note").hidden = true;
      askForKey();
    });
    $("#model").addEventListener("change", showModel);
    for (const b of $$(".tabs [role=tab]")) b.addEventListener("click", () => selectTab(b.dataset.tab));
    for (const form of $$("form.tab")) {
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        if (e.submitter && e.submitter.dataset.walk) {
          run(form.dataset.tab, walkRequest, renderWalk, [$("#walk"), form]);
        } else run(form.dataset.tab);
      });
    }
    for (const r of $$('input[name="seed-mode"]')) {
      r.addEventListener("change", () => {
        for (const row of $$("#tab-generate [data-mode]")) row.hidden = row.dataset.mode !== radio("seed-mode");
      });
    }
    $("#col-styles").addEventListener("change", () => {
      $("#col-layers").hidden = $("#col-styles").value !== "custom";
    });
    const slider = $("#truncation");
    slider.addEventListener("input", showTruncation);
    slider.addEventListener("change", () => {
      showTruncation();
      if (!lastRun) return;
      clearTimeout(rerunTimer);
      rerunTimer = setTimeout(lastRun, 120);
    });
    connect();
  }

  init();
})();

// The makemore page: everything it shows comes from the JSON API (/api/...), the same one the
// README documents. Text from the server goes into the page through textContent only.
"use strict";

const state = { runs: [], limits: {}, run: null, metricsTimer: null, metricsRun: null };
const $ = (id) => document.getElementById(id);

function make(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  let data;
  try { data = await response.json(); } catch (e) { data = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function showError(node, err) {
  node.textContent = err.message || String(err);
  node.classList.add("error");
}

function pct(p) {
  if (p >= 0.1) return `${(100 * p).toFixed(0)}%`;
  if (p >= 0.01) return `${(100 * p).toFixed(1)}%`;
  if (p >= 0.0001) return `${(100 * p).toPrecision(1)}%`;
  return p.toExponential(0);
}

// ---------------------------------------------------------------------------------------
// runs

function describeRun(run) {
  const info = $("run-info");
  info.textContent = "";
  const dev = run.dev_loss === null ? "dev loss not known yet" : `dev loss ${run.dev_loss.toFixed(4)}`;
  info.appendChild(make("span", { class: "kind" }, run.kind));
  info.appendChild(make("span", { id: "run-params" }, `${run.params.toLocaleString("en")} parameters`));
  info.appendChild(make("span", { id: "run-dev" }, dev));
  if (run.labels) info.appendChild(make("span", { id: "run-labels" }, `${run.labels.length} labels`));
  if (run.training) info.appendChild(make("span", { class: "live" }, "training"));
  const details = make("details", { id: "run-config" });
  details.appendChild(make("summary", {}, "config"));
  const table = make("table");
  const flat = [];
  (function walk(prefix, obj) {
    for (const [k, v] of Object.entries(obj)) {
      if (v !== null && typeof v === "object" && !Array.isArray(v)) walk(`${prefix}${k}.`, v);
      else flat.push([prefix + k, Array.isArray(v) ? v.join(", ") : String(v)]);
    }
  })("", run.config);
  for (const [k, v] of flat) {
    const tr = make("tr");
    tr.appendChild(make("th", {}, k));
    tr.appendChild(make("td", {}, v));
    table.appendChild(tr);
  }
  details.appendChild(table);
  info.appendChild(details);
}

async function loadRuns() {
  const data = await api("/api/runs");
  state.runs = data.runs;
  state.limits = data.limits;
  const picker = $("run-picker");
  picker.textContent = "";
  for (const run of data.runs) picker.appendChild(make("option", { value: run.id }, `${run.id} (${run.kind})`));
  $("run-label").hidden = data.runs.length < 2;
  $("n").max = data.limits.n_max;
  $("temperature").max = data.limits.temperature_max;
  for (const id of ["prefix", "suffix", "contains"]) $(id).maxLength = data.limits.word_max;
  for (const id of ["min-len", "max-len"]) $(id).max = data.limits.word_max + data.limits.sample_max_len;
  $("explain-word").maxLength = data.limits.word_max;
  picker.addEventListener("change", () => selectRun(picker.value));
  await selectRun(data.runs[0].id);
}

async function selectRun(id) {
  state.run = state.runs.find((r) => r.id === id);
  $("run-picker").value = id;
  describeRun(state.run);
  $("top-k").max = state.run.vocab.length;
  showLabels(state.run);
  $("explain-table").hidden = true;
  $("explain-posterior").hidden = true;
  $("explain-summary").textContent = "";
  await Promise.all([drawSamples(), loadEmbeddings(), loadMetrics()]);
  const word = $("explain-word").value.trim();
  if (word) await explain(word);
}

// A labelled run (trained with --labels): a label picker for sampling ("any label": labels drawn
// by their training shares) and one for explaining ("most probable": the posterior's first).
function showLabels(run) {
  const labels = run.labels || [];
  const pickers = [["label-picker", "any label"], ["explain-label", "its most probable label"]];
  for (const [id, any] of pickers) {
    const picker = $(id);
    picker.textContent = "";
    picker.appendChild(make("option", { value: "" }, any));
    for (const l of labels) {
      const share = id === "label-picker" ? ` (${pct(l.share)})` : "";
      picker.appendChild(make("option", { value: l.label }, l.label + share));
    }
  }
  $("label-label").hidden = $("explain-label-label").hidden = labels.length === 0;
}

// ---------------------------------------------------------------------------------------
// samples

function numberField(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

async function drawSamples() {
  const status = $("sample-status");
  status.classList.remove("error");
  status.textContent = "drawing…";
  const body = { run: state.run.id, n: numberField("n") ?? 20, temperature: numberField("temperature") ?? 1,
                 prefix: $("prefix").value, suffix: $("suffix").value, contains: $("contains").value,
                 new_only: $("new-only").checked };
  const topK = numberField("top-k"), seed = numberField("seed");
  const minLen = numberField("min-len"), maxLen = numberField("max-len");
  if (topK !== undefined) body.top_k = topK;
  if (seed !== undefined) body.seed = seed;
  if (minLen !== undefined) body.min_len = minLen;
  if (maxLen !== undefined) body.max_len = maxLen;
  if (state.run.labels && $("label-picker").value) body.label = $("label-picker").value;
  const exclude = $("exclude").value.split(/\r\n|\r|\n/).map((w) => w.trim()).filter((w) => w);
  if (exclude.length) body.exclude = exclude;
  const list = $("samples");
  try {
    const data = await api("/api/sample", body);
    list.textContent = "";
    for (const s of data.samples) {
      const li = make("li", { class: "sample", "data-tag": s.tag, title: "explain this name" });
      if (s.label !== undefined) li.setAttribute("data-label", s.label);
      if (s.label !== undefined && !body.label) li.appendChild(make("span", { class: "label" }, s.label));
      li.appendChild(make("span", { class: "text" }, s.text || "(empty)"));
      li.appendChild(make("span", { class: "tag", "data-tag": s.tag }, s.tag));
      li.addEventListener("click", () => {
        $("explain-word").value = s.text;
        if (s.label !== undefined) $("explain-label").value = s.label; // as the item of the label it was drawn as
        explain(s.text);
      });
      list.appendChild(li);
    }
    const counts = {};
    for (const s of data.samples) counts[s.tag] = (counts[s.tag] || 0) + 1;
    const summary = Object.entries(counts).map(([t, c]) => `${c} ${t}`).join(", ");
    const short = data.samples.length < body.n ? ` (only ${data.samples.length} of ${body.n} met the conditions)` : "";
    const how = data.seed === null ? "random draw (give a seed to repeat one)" : `seed ${data.seed}`;
    const of = body.label ? ` labelled ${body.label}` : state.run.labels ? " (labels by their training shares)" : "";
    status.textContent = `${data.samples.length} samples${of} from ${data.run}, ${how}: ${summary}${short}`;
  } catch (err) {
    showError(status, err);
  }
}

// ---------------------------------------------------------------------------------------
// explain a name

async function explain(word) {
  const summary = $("explain-summary"), table = $("explain-table"), posterior = $("explain-posterior");
  summary.classList.remove("error");
  try {
    const request = { run: state.run.id, words: [word], top: 5 };
    if (state.run.labels && $("explain-label").value) request.label = $("explain-label").value;
    const data = await api("/api/score", request);
    const s = data.scores[0];
    const as = s.label === undefined ? "" : ` as ${s.label}${request.label ? "" : " (its most probable label)"}`;
    summary.textContent = `${s.word}${as}: NLL ${s.nll.toFixed(3)} nats over ${s.chars.length} predictions ` +
      `(the end counts), ${s.nll_per_char.toFixed(3)} per character, perplexity ${s.perplexity.toFixed(2)}`;
    const body = table.tBodies[0];
    body.textContent = "";
    s.chars.forEach((c, i) => {
      const tr = make("tr", { class: "char-row" });
      tr.appendChild(make("td", { class: "context" }, (word.slice(0, i) || "(start)")));
      tr.appendChild(make("td", { class: "next" }, c.char));
      const cell = make("td", { class: "prob" });
      const bar = make("span", { class: "bar" });
      bar.style.width = `${Math.max(1, Math.round(100 * c.prob))}%`;
      cell.appendChild(bar);
      cell.appendChild(make("span", { class: "value" }, pct(c.prob)));
      tr.appendChild(cell);
      const alts = make("td", { class: "top" });
      for (const t of c.top) {
        alts.appendChild(make("span", { class: t.char === c.char ? "alt chosen" : "alt" }, `${t.char} ${pct(t.prob)}`));
      }
      tr.appendChild(alts);
      body.appendChild(tr);
    });
    table.hidden = false;
    showPosterior(s.labels);
  } catch (err) {
    table.hidden = posterior.hidden = true;
    showError(summary, err);
  }
}

function showPosterior(labels) {
  const posterior = $("explain-posterior");
  posterior.hidden = !labels;
  if (!labels) return;
  const body = posterior.tBodies[0];
  body.textContent = "";
  const shown = labels.slice(0, 10); // most likely first
  for (const l of shown) {
    const tr = make("tr", { class: "label-row" });
    tr.appendChild(make("td", { class: "label-name" }, l.label));
    const cell = make("td", { class: "prob" });
    const bar = make("span", { class: "bar" });
    bar.style.width = `${Math.max(1, Math.round(100 * l.prob))}%`;
    cell.appendChild(bar);
    cell.appendChild(make("span", { class: "value" }, pct(l.prob)));
    tr.appendChild(cell);
    body.appendChild(tr);
  }
  if (labels.length > shown.length) {
    const rest = labels.slice(shown.length).reduce((sum, l) => sum + l.prob, 0);
    const tr = make("tr", { class: "label-rest" });
    tr.appendChild(make("td", { colspan: "2" }, `${labels.length - shown.length} more labels: ${pct(rest)} together`));
    body.appendChild(tr);
  }
}

// ---------------------------------------------------------------------------------------
// embeddings and curves

async function loadEmbeddings() {
  const note = $("embeddings-note");
  note.classList.remove("error");
  try {
    const data = await api(`/api/embeddings?run=${encodeURIComponent(state.run.id)}`);
    if (!data.points) {
      $("scatter").textContent = "";
      note.textContent = data.note;
      return;
    }
    const how = data.emb_dim > 2
      ? `${data.emb_dim}-D embeddings by PCA: the two axes keep ${(100 * data.variance_share).toFixed(0)}% of the variance`
      : `the ${data.emb_dim}-D embeddings as they are`;
    note.textContent = `${how}${data.of_member ? ` (member ${data.of_member})` : ""}; ` +
      `'${data.boundary}' is the start/end token. Close characters are interchangeable to the network.`;
    const labels = data.chars;
    Charts.scatter($("scatter"), {
      points: data.points, labels, neighbours: data.neighbours, axes: data.axes,
      onHover: (i) => {
        $("neighbours").textContent = i === null ? "Hover a character to see its nearest neighbours."
          : `${labels[i]}: nearest ${data.neighbours[i].map((n) => `${n.char} (${n.distance.toFixed(2)})`).join(", ")}` +
            ` (distance in the full ${data.emb_dim}-D space)`;
      },
    });
  } catch (err) {
    showError(note, err);
  }
}

async function loadMetrics() {
  clearTimeout(state.metricsTimer);
  const runId = state.run.id;
  const note = $("curves-note");
  note.classList.remove("error");
  try {
    const data = await api(`/api/metrics?run=${encodeURIComponent(runId)}`);
    if (state.run.id !== runId) return; // another run was picked meanwhile
    const series = [];
    data.curves.forEach((c, k) => {
      const who = data.curves.length > 1 ? `${c.label} ` : "";
      series.push({ label: `${who}train`, x: c.step, y: c.train_loss, cls: `train m${k % 6}` });
      series.push({ label: `${who}dev`, x: c.step, y: c.dev_loss, cls: `dev m${k % 6}`, dots: true });
    });
    Charts.lines($("curves"), { series, xLabel: "step", yLabel: "loss (nats)" });
    const last = data.curves[0] && data.curves[0].step.length ? data.curves[0].step[data.curves[0].step.length - 1] : 0;
    $("live").hidden = !data.training;
    note.textContent = data.training
      ? `still training: step ${last.toLocaleString("en")} so far; the curves follow it (the served model is the one loaded at start)`
      : `${last.toLocaleString("en")} steps; train loss per logging interval, dev loss at each evaluation`;
    if (data.training) state.metricsTimer = setTimeout(loadMetrics, 2000);
  } catch (err) {
    showError(note, err);
  }
}

// ---------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("sample-form").addEventListener("submit", (e) => { e.preventDefault(); drawSamples(); });
  $("explain-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const word = $("explain-word").value.trim();
    if (word) explain(word);
  });
  loadRuns().catch((err) => { $("page-error").hidden = false; showError($("page-error"), err); });
});

// The sampler of a page made by `makemore export --format html` (src/makemore/export.py): the
// model's forward pass (the MLP of Bengio et al. 2003, or the bigram table) on the weights
// embedded in the page, and makemore's sampling loop with a temperature and a name-maker's
// constraints. window.makemore.sample(options) is the same draw as the form's, for scripts.
"use strict";
(function () {
  const MODEL = JSON.parse(document.getElementById("makemore-model").textContent);
  const VOCAB = MODEL.vocab;             // id -> character; id 0 is the boundary token
  const V = VOCAB.length, BLOCK = MODEL.block_size, UNK = MODEL.unk;  // UNK: the unknown token's id, or null
  const MAX_TRIES = 10000;               // draws per request, at most: suffix and contains are met by drawing again
  const MAX_MS = 5000;                   // and at most this long
  const LONGEST = 64;                    // the longest name when no max length is given (makemore sample's)
  const CACHE_ROWS = 50000;              // next-character scores kept by context

  function floats(b64) {  // base64 of little-endian float32 -> Float32Array
    const bin = atob(b64), view = new DataView(new ArrayBuffer(bin.length));
    for (let i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
    const out = new Float32Array(bin.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  const W = {};
  for (const [name, t] of Object.entries(MODEL.tensors)) W[name] = { shape: t.shape, data: floats(t.data) };

  // y = x @ M (+ b), M (m, n) row-major as torch stores a makemore weight (fan_in, fan_out)
  function affine(x, M, b) {
    const [m, n] = M.shape, w = M.data, y = new Float64Array(n);
    if (b) for (let j = 0; j < n; j++) y[j] = b.data[j];
    for (let i = 0; i < m; i++) {
      const xi = x[i];
      if (xi === 0) continue;
      for (let j = 0, r = i * n; j < n; j++) y[j] += xi * w[r + j];
    }
    return y;
  }
  function logSoftmax(z) {
    let m = -Infinity, s = 0;
    for (const v of z) m = Math.max(m, v);
    for (const v of z) s += Math.exp(v - m);
    const l = m + Math.log(s);
    return z.map((v) => v - l);
  }

  // The MLP's first layer as a table, as its logits_fn computes it (models/mlp.py): x @ W1 is the
  // sum over positions t of C[c_t] @ W1_t, so with FIRST[t*V + c] = C[c] @ W1_t it is BLOCK row
  // lookups instead of a (BLOCK*emb_dim x hidden) product. Kept for up to 2^22 entries.
  let FIRST = null;
  if (MODEL.model === "mlp" && BLOCK * V * W.W1.shape[1] <= 1 << 22) {
    const E = W.C.shape[1], H = W.W1.shape[1];
    FIRST = new Float32Array(BLOCK * V * H);
    for (let t = 0; t < BLOCK; t++) {
      const Wt = { shape: [E, H], data: W.W1.data.subarray(t * E * H, (t + 1) * E * H) };
      for (let c = 0; c < V; c++) FIRST.set(affine(W.C.data.subarray(c * E, (c + 1) * E), Wt), (t * V + c) * H);
    }
  }

  // context ids (BLOCK) -> scores (V) whose softmax is the next character's distribution
  function mlpScores(ctx) {
    const E = W.C.shape[1], x = new Float64Array(BLOCK * E);
    ctx.forEach((c, t) => { for (let e = 0; e < E; e++) x[t * E + e] = W.C.data[c * E + e]; });
    let h = x, i = 1;
    if (FIRST) {
      const H = W.W1.shape[1];
      h = Float64Array.from(W.b1.data);
      ctx.forEach((c, t) => { for (let j = 0, r = (t * V + c) * H; j < H; j++) h[j] += FIRST[r + j]; });
      h = h.map(Math.tanh);
      i = 2;
    }
    for (; i <= MODEL.layers; i++) h = affine(h, W["W" + i], W["b" + i]).map(Math.tanh);
    const A = MODEL.adaptive;
    if (!A) {
      const z = affine(h, W.W_out, W.b_out);
      if (MODEL.direct) affine(x, W.W_direct).forEach((v, j) => { z[j] += v; });
      return z;
    }
    // the adaptive softmax (models/softmax.py): the head, then each tail cluster's share of its token
    const head = affine(h, W.W_head, W.b_head);
    if (MODEL.direct) affine(x, W.W_direct).forEach((v, j) => { head[j] += v; });
    const headLp = logSoftmax(head), byRank = new Float64Array(V);
    for (let r = 0; r < A.head; r++) byRank[r] = headLp[r];
    for (let j = 1; j < A.cutoffs.length; j++) {
      const lo = A.cutoffs[j - 1];
      const tail = logSoftmax(affine(affine(h, W["P" + j]), W["W_tail" + j], W["b_tail" + j]));
      tail.forEach((v, k) => { byRank[lo + k] = v + headLp[A.head + j - 1]; });
    }
    return Float64Array.from(A.output_order, (rank) => byRank[rank]);
  }
  function bigramScores(ctx) {
    const c = ctx[ctx.length - 1];
    return Float64Array.from(W.W.data.subarray(c * V, (c + 1) * V));
  }
  const forward = MODEL.model === "mlp" ? mlpScores : bigramScores;
  const cache = new Map();
  function scores(ctx) {
    const key = ctx.join(",");
    let z = cache.get(key);
    if (z === undefined) {
      if (cache.size >= CACHE_ROWS) cache.clear();
      z = forward(ctx);
      cache.set(key, z);
    }
    return z;
  }

  function rng(seed) {  // mulberry32: a seeded stream of uniform numbers in [0, 1)
    let a = (seed === undefined || seed === null || seed === "") ? (Math.random() * 2 ** 32) >>> 0 : Number(seed) >>> 0;
    return function () {
      a = (a + 0x6D2B79F5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  const STOI = new Map(VOCAB.map((c, i) => [c, i]));
  const quote = (s) => "\u201c" + s + "\u201d";

  // the options checked and read: {error} or what drawOne needs
  function prepare(o) {
    const n = o.n === undefined || o.n === "" ? 20 : Number(o.n);
    const temperature = o.temperature === undefined || o.temperature === "" ? 1 : Number(o.temperature);
    const prefix = Array.from(o.prefix || ""), suffix = o.suffix || "", contains = o.contains || "";
    // a name has a character at least: the end token is held back at the start too
    const minLength = o.minLength === undefined || o.minLength === "" || o.minLength === null ? 1 : Number(o.minLength);
    const given = !(o.maxLength === undefined || o.maxLength === "" || o.maxLength === null);
    const maxLength = given ? Number(o.maxLength) : Math.max(LONGEST, minLength, prefix.length);
    if (!(Number.isInteger(n) && n >= 1 && n <= 1000)) return { error: "how many: give a whole number from 1 to 1,000" };
    if (!(temperature > 0 && Number.isFinite(temperature))) return { error: "temperature must be a positive number" };
    if (!(Number.isInteger(minLength) && minLength >= 1)) return { error: "min length must be a whole number, 1 or more" };
    if (!(Number.isInteger(maxLength) && maxLength >= 1)) return { error: "max length must be a whole number, 1 or more" };
    if (minLength > maxLength) return { error: `min length (${minLength}) is more than max length (${maxLength})` };
    if (prefix.length > maxLength) return { error: `the prefix has ${prefix.length} characters, more than max length (${maxLength})` };
    const prefixIds = [];
    for (const c of prefix) {
      if (c === VOCAB[0]) return { error: `${quote(c)} is the model's end-of-name token: it cannot be in a name` };
      if (STOI.has(c)) prefixIds.push(STOI.get(c));
      else if (UNK !== null) prefixIds.push(UNK);  // read as the unknown-character token, as makemore does
      else return { error: `${quote(c)} is not in the model's vocabulary: no name can start with ${quote(prefix.join(""))}` };
    }
    for (const [what, text] of [["end with", suffix], ["contain", contains]]) {
      for (const c of Array.from(text)) {
        if (c === VOCAB[0]) return { error: `${quote(c)} is the model's end-of-name token: no name can ${what} it` };
        if ((!STOI.has(c) || STOI.get(c) === UNK) && !prefix.includes(c)) {
          return { error: `the model never writes ${quote(c)} (it is not in its vocabulary): no name can ${what} ${quote(text)}` };
        }
      }
    }
    return { n, temperature, prefix: prefix.join(""), prefixIds, suffix, contains, minLength, maxLength };
  }

  // one name: the prefix, then characters drawn until the end token (held back below the
  // minimum length, forced at the maximum); the unknown-character token is never drawn
  function drawOne(p, random) {
    const ctx = new Array(BLOCK).fill(0);
    for (const id of p.prefixIds) { ctx.shift(); ctx.push(id); }
    let text = p.prefix, length = p.prefixIds.length;
    const weights = new Float64Array(V);
    while (length < p.maxLength) {
      const z = scores(ctx);
      let top = -Infinity;
      for (let c = 0; c < V; c++) {
        const allowed = c !== UNK && !(c === 0 && length < p.minLength);
        weights[c] = allowed ? z[c] : -Infinity;
        if (weights[c] > top) top = weights[c];
      }
      let total = 0;
      for (let c = 0; c < V; c++) { weights[c] = Math.exp((weights[c] - top) / p.temperature); total += weights[c]; }
      let u = random() * total, c = 0;
      while (c < V - 1 && (u >= weights[c] || weights[c] === 0)) { u -= weights[c]; c++; }
      while (weights[c] === 0 && c > 0) c--;  // rounding at the very end: the last character drawable
      if (c === 0) break;
      text += VOCAB[c];
      length++;
      ctx.shift();
      ctx.push(c);
    }
    return text;
  }

  function describe(p) {
    const parts = [];
    if (p.prefix) parts.push(`starting with ${quote(p.prefix)}`);
    if (p.suffix) parts.push(`ending with ${quote(p.suffix)}`);
    if (p.contains) parts.push(`containing ${quote(p.contains)}`);
    return parts.join(", ");
  }

  // {names, tries, message, error}: p.n names meeting every constraint, or as many as a
  // bounded number of draws found, with a message saying so
  function sample(options) {
    const p = prepare(options || {});
    if (p.error) return { names: [], tries: 0, message: p.error, error: true };
    const random = rng(options && options.seed), names = [], start = performance.now();
    let tries = 0, timedOut = false;
    while (names.length < p.n && tries < MAX_TRIES) {
      if (tries % 50 === 49 && performance.now() - start > MAX_MS) { timedOut = true; break; }
      tries++;
      const name = drawOne(p, random);
      if (name.endsWith(p.suffix) && name.includes(p.contains)) names.push(name);
    }
    let message = "";
    if (names.length < p.n) {
      const limit = timedOut ? `${tries.toLocaleString("en")} tries (${MAX_MS / 1000} s)` : `${tries.toLocaleString("en")} tries`;
      const what = describe(p) || "that fit";
      message = names.length === 0
        ? `No name ${what} found in ${limit}: loosen the constraints or raise the temperature.`
        : `Only ${names.length} of ${p.n} names ${what} found in ${limit}.`;
    }
    return { names, tries, message, error: names.length === 0 };
  }

  const $ = (id) => document.getElementById(id);
  function draw() {
    const result = sample({
      n: $("n").value, temperature: $("temperature").value, prefix: $("prefix").value, suffix: $("suffix").value,
      contains: $("contains").value, minLength: $("min-length").value, maxLength: $("max-length").value,
    });
    $("samples").replaceChildren(...result.names.map((name) => {
      const li = document.createElement("li");
      li.className = "sample";
      li.textContent = name;
      return li;
    }));
    $("status").textContent = result.message;
    $("status").classList.toggle("error", result.error);
  }
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); draw(); });
  // logProbs(ids): the next character's log-probabilities after a context of BLOCK ids, as the model computes them
  const logProbs = (ids) => Array.from(logSoftmax(forward(ids)));
  window.makemore = { sample, logProbs, model: { kind: MODEL.model, vocab: VOCAB, block_size: BLOCK, run: MODEL.run } };
  draw();
})();

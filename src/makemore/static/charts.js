// Two small SVG charts for the makemore page, without a library: a labelled scatter (the
// character embeddings) and loss curves. Each draw replaces the chart's SVG; text goes in
// through textContent only, so no data from a run is ever parsed as markup.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // "Nice" tick values between lo and hi: steps of 1, 2 or 5 times a power of ten.
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4) return (v / 1000).toFixed(a >= 1e5 ? 0 : 1).replace(/\.0$/, "") + "k";
    return String(Number(v.toPrecision(3)));
  }

  function quantile(sorted, q) {
    if (!sorted.length) return NaN;
    const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
    return sorted[i];
  }

  function frame(container, height) {
    container.textContent = "";
    const width = Math.max(320, Math.round(container.clientWidth || 520));
    const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" }, container);
    return { svg, width, height };
  }

  function axes(svg, box, sx, sy, xs, ys, xLabel, yLabel) {
    const g = el("g", { class: "axes" }, svg);
    for (const v of xs) {
      const x = sx(v);
      el("line", { x1: x, x2: x, y1: box.top, y2: box.bottom, class: "grid" }, g);
      el("text", { x, y: box.bottom + 16, "text-anchor": "middle", class: "tick" }, g, fmt(v));
    }
    for (const v of ys) {
      const y = sy(v);
      el("line", { x1: box.left, x2: box.right, y1: y, y2: y, class: "grid" }, g);
      el("text", { x: box.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, g, fmt(v));
    }
    el("rect", { x: box.left, y: box.top, width: box.right - box.left, height: box.bottom - box.top, class: "frame" }, g);
    if (xLabel) el("text", { x: (box.left + box.right) / 2, y: box.bottom + 34, "text-anchor": "middle", class: "label" }, g, xLabel);
    if (yLabel) {
      el("text", { x: 14, y: (box.top + box.bottom) / 2, "text-anchor": "middle", class: "label",
        transform: `rotate(-90 14 ${(box.top + box.bottom) / 2})` }, g, yLabel);
    }
  }

  // The embeddings: one labelled dot per character, both axes on one scale (distances on the
  // page are distances in the plane). Hovering a dot marks its nearest neighbours (computed in
  // the full embedding space by the server) and calls onHover(index) / onHover(null).
  function scatter(container, opts) {
    const { svg, width, height } = frame(container, opts.height || 380);
    const box = { left: 52, right: width - 14, top: 14, bottom: height - 44 };
    const pts = opts.points;
    const xsv = pts.map((p) => p[0]), ysv = pts.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xsv), Math.max(...xsv), Math.min(...ysv), Math.max(...ysv)];
    const pad = 0.08 * Math.max(x1 - x0, y1 - y0, 1e-6);
    x0 -= pad; x1 += pad; y0 -= pad; y1 += pad;
    const scale = Math.min((box.right - box.left) / (x1 - x0), (box.bottom - box.top) / (y1 - y0));
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    const mx = (box.left + box.right) / 2, my = (box.top + box.bottom) / 2;
    const sx = (v) => mx + (v - cx) * scale, sy = (v) => my - (v - cy) * scale;
    const halfW = (box.right - box.left) / 2 / scale, halfH = (box.bottom - box.top) / 2 / scale;
    axes(svg, box, sx, sy, ticks(cx - halfW, cx + halfW, 6), ticks(cy - halfH, cy + halfH, 5), opts.axes[0], opts.axes[1]);

    const links = el("g", { class: "links" }, svg);
    const index = new Map(opts.labels.map((c, i) => [c, i]));
    const dot = (i, parent, cls) => {
      const g = el("g", { class: cls, "data-char": opts.labels[i], transform: `translate(${sx(pts[i][0])},${sy(pts[i][1])})` }, parent);
      el("circle", { r: 10 }, g);
      el("text", { y: 4, "text-anchor": "middle" }, g, opts.labels[i]);
      return g;
    };
    const dots = pts.map((p, i) => {
      const g = dot(i, svg, "point");
      g.setAttribute("tabindex", 0);
      return g;
    });
    // the hovered dot and its neighbours are drawn again on top, so that none hides under another
    const overlay = el("g", { class: "overlay" }, svg);
    function clear() {
      links.textContent = "";
      overlay.textContent = "";
      dots.forEach((d) => d.classList.remove("active", "neighbour"));
    }
    dots.forEach((g, i) => {
      const enter = () => {
        clear();
        g.classList.add("active");
        const near = [];
        for (const nb of opts.neighbours[i] || []) {
          const j = index.get(nb.char);
          if (j === undefined) continue;
          dots[j].classList.add("neighbour");
          near.push(j);
          el("line", { x1: sx(pts[i][0]), y1: sy(pts[i][1]), x2: sx(pts[j][0]), y2: sy(pts[j][1]) }, links);
        }
        for (const j of near.reverse()) dot(j, overlay, "point neighbour");
        dot(i, overlay, "point active");
        if (opts.onHover) opts.onHover(i);
      };
      g.addEventListener("mouseenter", enter);
      g.addEventListener("focus", enter);
      const leave = () => { clear(); if (opts.onHover) opts.onHover(null); };
      g.addEventListener("mouseleave", leave);
      g.addEventListener("blur", leave);
    });
  }

  // Loss curves against steps. series: [{label, x: [...], y: [...] (null = no value), cls,
  // dots}]. The y range ignores the top 2% of values (the first steps of a randomly initialised
  // net sit far above the rest, up to log(vocab) and beyond); lines above it are clipped.
  function lines(container, opts) {
    const { svg, width, height } = frame(container, opts.height || 320);
    const box = { left: 52, right: width - 14, top: 28, bottom: height - 44 };
    const all = [], xsAll = [];
    for (const s of opts.series) {
      s.y.forEach((v, i) => { if (v !== null && Number.isFinite(v)) { all.push(v); xsAll.push(s.x[i]); } });
    }
    if (!all.length) {
      el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "label" }, svg, "no losses logged yet");
      return;
    }
    all.sort((a, b) => a - b);
    let y0 = all[0], y1 = quantile(all, 0.98);
    if (!(y1 > y0)) { y0 -= 0.5; y1 += 0.5; }
    const ypad = 0.05 * (y1 - y0);
    y0 -= ypad; y1 += ypad;
    const x0 = Math.min(...xsAll), x1 = Math.max(...xsAll, x0 + 1);
    const sx = (v) => box.left + (v - x0) / (x1 - x0) * (box.right - box.left);
    const sy = (v) => box.bottom - (v - y0) / (y1 - y0) * (box.bottom - box.top);
    axes(svg, box, sx, sy, ticks(x0, x1, 6), ticks(y0, y1, 5), opts.xLabel, opts.yLabel);

    const clipId = "clip-" + Math.random().toString(36).slice(2);
    const clip = el("clipPath", { id: clipId }, el("defs", {}, svg));
    el("rect", { x: box.left, y: box.top, width: box.right - box.left, height: box.bottom - box.top }, clip);
    const plot = el("g", { "clip-path": `url(#${clipId})` }, svg);
    const legend = el("g", { class: "legend" }, svg);
    let lx = box.left;
    opts.series.forEach((s) => {
      let d = "", pen = false;
      s.y.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) { if (!s.dots) pen = false; return; }
        d += `${pen ? "L" : "M"}${sx(s.x[i]).toFixed(1)},${sy(v).toFixed(1)}`;
        pen = true;
      });
      el("path", { d, class: `curve ${s.cls || ""}`, "data-label": s.label }, plot);
      if (s.dots) {
        s.y.forEach((v, i) => {
          if (v !== null && Number.isFinite(v)) el("circle", { cx: sx(s.x[i]), cy: sy(v), r: 2.5, class: `dot ${s.cls || ""}` }, plot);
        });
      }
      el("line", { x1: lx, x2: lx + 18, y1: 14, y2: 14, class: `curve ${s.cls || ""}` }, legend);
      el("text", { x: lx + 22, y: 18, class: "tick" }, legend, s.label);
      lx += 30 + 7 * s.label.length;
    });
  }

  window.Charts = { scatter, lines, ticks };
})();

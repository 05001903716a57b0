// The live view of a lab run (/lab/runs/{id}): polls GET /api/v1/lab/runs/{id} about once
// a second and redraws the status, the progress bar and two SVG charts (training loss per
// step, validation metric per epoch) until the run has finished. No library, no CDN.
(function () {
  "use strict";
  const section = document.getElementById("run");
  if (!section) { return; }
  const runId = section.dataset.id;
  const SVG = "http://www.w3.org/2000/svg";
  const FINISHED = ["succeeded", "failed", "cancelled"];
  const W = 520, H = 240, PAD = {left: 56, right: 12, top: 12, bottom: 32};

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) { node.setAttribute(k, String(v)); }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) { return "-"; }
    const a = Math.abs(v);
    return a !== 0 && (a < 0.001 || a >= 10000) ? v.toExponential(2) : v.toFixed(4);
  }

  // Draw [[x, y], ...] as a line with axes, tick labels and (few points) dots.
  function draw(svg, points, xLabel) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.dataset.points = String(points.length);
    const x0 = PAD.left, x1 = W - PAD.right, y0 = H - PAD.bottom, y1 = PAD.top;
    svg.appendChild(el("line", {x1: x0, y1: y0, x2: x1, y2: y0, stroke: "#5b6b79"}));
    svg.appendChild(el("line", {x1: x0, y1: y0, x2: x0, y2: y1, stroke: "#5b6b79"}));
    svg.appendChild(el("text", {x: (x0 + x1) / 2, y: H - 6, "text-anchor": "middle",
      "font-size": 12, fill: "#5b6b79"}, xLabel));
    if (!points.length) {
      svg.appendChild(el("text", {x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle",
        "font-size": 13, fill: "#5b6b79"}, "no points yet"));
      return;
    }
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    let xmin = Math.min(...xs), xmax = Math.max(...xs);
    let ymin = Math.min(...ys), ymax = Math.max(...ys);
    if (xmax === xmin) { xmin -= 1; xmax += 1; }
    if (ymax === ymin) { const d = Math.abs(ymax) * 0.1 || 1; ymin -= d; ymax += d; }
    const sx = (x) => x0 + (x - xmin) / (xmax - xmin) * (x1 - x0);
    const sy = (y) => y0 - (y - ymin) / (ymax - ymin) * (y0 - y1);
    for (const [v, y] of [[ymax, y1], [ymin, y0]]) {
      svg.appendChild(el("text", {x: x0 - 4, y: y + 4, "text-anchor": "end", "font-size": 11,
        fill: "#5b6b79"}, fmt(v)));
    }
    for (const [v, x] of [[xmin, x0], [xmax, x1]]) {
      svg.appendChild(el("text", {x: x, y: y0 + 14, "text-anchor": "middle", "font-size": 11,
        fill: "#5b6b79"}, String(Math.round(v))));
    }
    const d = points.map((p, i) => (i ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1));
    svg.appendChild(el("path", {d: d.join(" "), fill: "none", stroke: "#1f6f9f",
      "stroke-width": 2, class: "curve"}));
    if (points.length <= 60) {
      for (const p of points) {
        svg.appendChild(el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: "#1f6f9f",
          class: "point"}));
      }
    }
  }

  function show(run) {
    const p = run.progress;
    section.dataset.status = run.status;
    document.getElementById("status").textContent =
      run.status + (run.cancel_requested && run.status === "running" ? " (cancelling)" : "");
    document.getElementById("epoch").textContent = p.epoch + "/" + p.epochs;
    document.getElementById("step").textContent = p.step + "/" + p.steps;
    document.getElementById("loss").textContent = fmt(p.loss);
    document.getElementById("metric").textContent =
      p.metric === null ? "-" : p.metric_name + " " + fmt(p.metric);
    document.getElementById("bar").value = p.fraction;
    const model = document.getElementById("model");
    if (run.model && !model.querySelector("a")) {
      const a = document.createElement("a");
      a.href = run.model_url;
      a.textContent = run.model;
      model.replaceChildren(a);
    }
    const error = document.getElementById("error");
    error.hidden = !run.error;
    error.textContent = run.error || "";
    document.getElementById("cancel-form").hidden = FINISHED.includes(run.status);
    if (p.metric_name) {
      document.getElementById("metric-caption").textContent =
        "Validation " + p.metric_name + " per epoch";
    }
    draw(document.getElementById("loss-chart"), run.points.loss, "step");
    draw(document.getElementById("metric-chart"), run.points.metric, "epoch");
  }

  function poll() {
    fetch("/api/v1/lab/runs/" + runId, {credentials: "same-origin"})
      .then((r) => { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then((run) => {
        show(run);
        if (!FINISHED.includes(run.status)) { setTimeout(poll, 1000); }
      })
      .catch(() => { setTimeout(poll, 3000); });
  }
  poll();
})();

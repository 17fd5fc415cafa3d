// gpupool dashboard behaviour. The pages hold no inline script (their Content-Security-Policy
// forbids it): data reaches this file only through data-* attributes and
// <script type="application/json"> blocks, read as text, never evaluated.
(function () {
  // uPlot time-series charts from the JSON block named by data-source
  function draw(el) {
    const spec = JSON.parse(document.getElementById(el.dataset.source).textContent);
    if (!spec || !spec.ts || spec.ts.length === 0) {
      const empty = document.createElement("div");
      empty.className = "empty";
      empty.textContent = "No history yet — samples are written once a minute.";
      el.replaceChildren(empty);
      return;
    }
    const series = [{}].concat(spec.series.map(s => ({ label: s.label, stroke: s.color, width: 2,
      fill: s.fill || undefined, points: { show: spec.ts.length < 3 } })));
    const data = [spec.ts].concat(spec.series.map(s => s.values));
    const opts = { width: el.clientWidth || 600, height: 220, series: series,
      axes: [{}, { label: spec.unit || "", size: 56 }], legend: { live: false },
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } } };
    el.replaceChildren();
    new uPlot(opts, data, el);
  }
  function drawAll() { document.querySelectorAll("[data-chart]").forEach(draw); }
  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSwap", drawAll);

  // <form data-confirm="question"> asks before it submits (the text is data, shown as text)
  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
})();

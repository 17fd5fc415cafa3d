// gpupool dashboard: draws uPlot time-series charts from <script type="application/json"> data.
(function () {
  function draw(el) {
    const spec = JSON.parse(document.getElementById(el.dataset.source).textContent);
    if (!spec || !spec.ts || spec.ts.length === 0) {
      el.innerHTML = '<div class="empty">No history yet — samples are written once a minute.</div>';
      return;
    }
    const series = [{}].concat(spec.series.map(s => ({ label: s.label, stroke: s.color, width: 2,
      fill: s.fill || undefined, points: { show: spec.ts.length < 3 } })));
    const data = [spec.ts].concat(spec.series.map(s => s.values));
    const opts = { width: el.clientWidth || 600, height: 220, series: series,
      axes: [{}, { label: spec.unit || "", size: 56 }], legend: { live: false },
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } } };
    el.innerHTML = "";
    new uPlot(opts, data, el);
  }
  function drawAll() { document.querySelectorAll("[data-chart]").forEach(draw); }
  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSwap", drawAll);
})();

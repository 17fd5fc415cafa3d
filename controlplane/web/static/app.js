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
      empty.textContent = (spec && spec.empty) || "No history yet — samples are written once a minute.";
      el.replaceChildren(empty);
      return;
    }
    const series = [{}].concat(spec.series.map(s => ({ label: s.label, stroke: s.color, width: 2,
      fill: s.fill || undefined, points: { show: spec.ts.length < 3 } })));
    const data = [spec.ts].concat(spec.series.map(s => s.values));
    const opts = { width: el.clientWidth || 600, height: 220, series: series,
      axes: [{}, { label: spec.unit || "", size: 56 }], legend: { live: false },
      scales: { x: { time: true, auto: false, range: timeRange(spec.ts) },
                y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      // the tick labels drawn (on canvas), kept as data for the browser tests
      hooks: { draw: [u => { el.dataset.xLabels = JSON.stringify(u.axes[0]._values || []); }] } };
    el.replaceChildren();
    new uPlot(opts, data, el);
  }

  // uPlot widens a time axis with one sample (or a few seconds of them) by years; show at least
  // MIN_SPAN_S ending at the newest sample instead, so a fresh pool reads as minutes of today
  const MIN_SPAN_S = 600;
  function timeRange(ts) {
    const min = Math.min.apply(null, ts), max = Math.max.apply(null, ts);
    return max - min < MIN_SPAN_S ? [max - MIN_SPAN_S, max + MIN_SPAN_S / 40] : [min, max];
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

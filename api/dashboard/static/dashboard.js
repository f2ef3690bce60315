// The dashboard's only script besides htmx and plotly.js (no inline scripts: the CSP allows none).
// Each chart is a plotly figure in a JSON block: <script type="application/json" class="chart-data"
// data-target="ELEMENT-ID">{"data": [...], "layout": {...}}</script>.
"use strict";

function drawCharts(root) {
  for (const block of root.querySelectorAll("script.chart-data")) {
    const target = document.getElementById(block.dataset.target);
    if (!target || target.dataset.drawn) continue;
    const figure = JSON.parse(block.textContent);
    const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    window.Plotly.newPlot(target, figure.data, figure.layout, config);
    target.dataset.drawn = "1";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (window.Plotly) drawCharts(document);
  // A page that answers a POST (a new key, shown once) takes the address of the page it shows, so
  // that reloading it is a GET and never submits the form again.
  const canonical = document.querySelector("[data-canonical-url]");
  if (canonical) history.replaceState(null, "", canonical.dataset.canonicalUrl);
});

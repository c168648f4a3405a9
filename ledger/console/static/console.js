/* The console's own script: draw each overview chart from the JSON the server rendered into the page,
   and wire the print button. No inline scripts, so the Content-Security-Policy allows only files. */
(function () {
  "use strict";
  var palette = ["#c0392b", "#e67e22", "#f1c40f", "#27ae60", "#2980b9", "#8e44ad", "#7f8c8d", "#16a085"];
  var tierColours = { hold: "#c0392b", return_required: "#e67e22", review: "#f1c40f", clear: "#27ae60" };

  function colour(dataset, i) {
    return tierColours[dataset.code] || palette[i % palette.length];
  }

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.source);
    var data = JSON.parse(source.textContent);
    var kind = canvas.dataset.chart;
    var stacked = canvas.dataset.stacked === "1";
    data.datasets.forEach(function (dataset, i) {
      if (kind === "doughnut") {
        dataset.backgroundColor = (dataset.codes || []).map(function (code, j) {
          return tierColours[code] || palette[j % palette.length];
        });
      } else {
        dataset.backgroundColor = colour(dataset, i);
        dataset.borderColor = colour(dataset, i);
        dataset.fill = false;
        dataset.pointRadius = 0;
      }
    });
    var options = { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { position: "bottom" } } };
    if (kind !== "doughnut") {
      options.scales = { x: { stacked: stacked }, y: { stacked: stacked, beginAtZero: true, ticks: { precision: 0 } } };
    }
    new window.Chart(canvas, { type: kind, data: data, options: options });
    canvas.dataset.rendered = "1";
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (window.Chart) {
      window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
      document.querySelectorAll("canvas[data-chart]").forEach(draw);
    }
    document.querySelectorAll("[data-print]").forEach(function (button) {
      button.addEventListener("click", function () { window.print(); });
    });
  });
})();

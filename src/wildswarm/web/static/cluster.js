// wildswarm cluster page: swap in the live part every 5 seconds; draw the throughput with Chart.js.
"use strict";

(function () {
  const EVERY_MS = 5000;
  const live = document.getElementById("cluster-live");
  const stamp = document.getElementById("cluster-stamp");
  const canvas = document.getElementById("throughput-chart");
  if (!live) return;
  let chart = null;

  const hhmm = (t) => new Date(t * 1000).toISOString().slice(11, 16);

  function series() {
    const data = document.getElementById("throughput-data");
    try { return data ? JSON.parse(data.textContent) : []; } catch (err) { return []; }
  }

  function draw() {
    if (!canvas || typeof window.Chart === "undefined") return;
    const s = series();
    const labels = s.map((b) => hhmm(b.t));
    const fps = s.map((b) => b.frames_per_s);
    const vph = s.map((b) => b.videos_per_hour);
    if (chart) {
      chart.data.labels = labels;
      chart.data.datasets[0].data = fps;
      chart.data.datasets[1].data = vph;
      chart.update("none");
      return;
    }
    chart = new window.Chart(canvas, {
      type: "line",
      data: {
        labels,
        datasets: [
          { label: "frames/s", data: fps, yAxisID: "fps", borderColor: "#2e7d4f", backgroundColor: "#2e7d4f33",
            fill: true, tension: 0.25, pointRadius: 0 },
          { label: "videos/h", data: vph, yAxisID: "vph", borderColor: "#4e79a7", backgroundColor: "#4e79a7",
            tension: 0.25, pointRadius: 0, borderDash: [4, 3] },
        ],
      },
      options: {
        animation: false, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
        scales: {
          x: { ticks: { maxTicksLimit: 8 }, title: { display: true, text: "UTC" } },
          fps: { position: "left", beginAtZero: true, title: { display: true, text: "frames/s" } },
          vph: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "videos/h" } },
        },
      },
    });
    canvas.dataset.drawn = "1";
  }

  async function refresh() {
    if (!document.hidden) {
      try {
        const r = await fetch(live.dataset.src, { headers: { Accept: "text/html" }, credentials: "same-origin", cache: "no-store" });
        // sent to the login page (or refused): the login has expired. Stop and say so, rather than go on
        // showing the last figures as current while asking in vain every 5 seconds.
        if (r.status === 401 || (r.redirected && new URL(r.url).pathname.endsWith("/login"))) {
          const p = document.createElement("p");
          p.className = "flash error";
          p.id = "live-stopped";
          p.setAttribute("role", "alert");
          p.textContent = "Your login has expired: this page is no longer updated. Reload the page and log in again.";
          document.querySelector("main").prepend(p);
          return;
        }
        if (r.ok && !r.redirected) {
          live.innerHTML = await r.text();
          stamp.textContent = "Updated " + new Date().toLocaleTimeString() + " · every 5 seconds.";
          draw();
        }
      } catch (err) { /* the server is restarting: try again next time */ }
    }
    setTimeout(refresh, EVERY_MS);
  }

  document.addEventListener("DOMContentLoaded", () => { draw(); setTimeout(refresh, EVERY_MS); });
})();

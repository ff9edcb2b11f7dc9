// The dashboard's only script: the overview's live counts and depth sparklines, and a job
// page's live progress bar. Job text is only ever set with textContent, never innerHTML.
"use strict";

const POLL_MS = 2000;
const SPARK_POINTS = 60; // two minutes of 2-second polls

function overview(table) {
  const history = new Map();
  async function poll() {
    try {
      const response = await fetch(table.dataset.url, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const body = await response.json();
      for (const q of body.queues) {
        const row = table.querySelector(`tr[data-queue="${CSS.escape(q.queue)}"]`);
        if (!row) continue;
        for (const cell of row.querySelectorAll("[data-count]")) cell.textContent = String(q[cell.dataset.count]);
        const depths = history.get(q.queue) || [];
        depths.push(q.ready + q.delayed + q.reserved);
        if (depths.length > SPARK_POINTS) depths.shift();
        history.set(q.queue, depths);
        draw(row.querySelector("svg.spark polyline"), depths);
      }
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  poll();
}

function draw(line, values) {
  const top = Math.max(1, ...values);
  const step = 120 / (SPARK_POINTS - 1);
  const start = 120 - (values.length - 1) * step; // the newest point on the right edge
  const points = values.map((v, i) => `${(start + i * step).toFixed(1)},${(23 - (v / top) * 22).toFixed(1)}`);
  line.setAttribute("points", points.join(" "));
}

function jobPage(bar) {
  if (bar.dataset.terminal === "yes") return;
  const status = document.getElementById("status");
  const shown = status.dataset.status;
  const percent = document.getElementById("completeness");
  const events = new EventSource(bar.dataset.events);
  events.onmessage = (message) => {
    const doc = JSON.parse(message.data);
    bar.value = doc.completeness || 0;
    percent.textContent = `${Math.round(100 * (doc.completeness || 0))}%`;
    status.textContent = doc.status;
    if (doc.status !== shown) {
      events.close();
      window.location.reload(); // the buttons, times and result follow the new status
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("queues");
  if (table) overview(table);
  const bar = document.getElementById("progress");
  if (bar) jobPage(bar);
});
